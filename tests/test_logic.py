"""Three-valued logic exactly as product-decisions.md §2 defines it."""

from __future__ import annotations

import itertools

import pytest

from cds_server.engine.logic import Tri, all_of, any_of, compare

M, N, U = Tri.MET, Tri.NOT_MET, Tri.UNKNOWN


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([M, M], M),
        ([M, N], N),
        ([M, U], U),
        ([U, N], N),
        ([U, U], U),
        ([], M),
    ],
)
def test_all(values: list[Tri], expected: Tri) -> None:
    assert all_of(values) is expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([N, N], N),
        ([N, M], M),
        ([N, U], U),
        ([U, M], M),
        ([U, U], U),
        ([], N),
    ],
)
def test_any(values: list[Tri], expected: Tri) -> None:
    assert any_of(values) is expected


def test_de_morgan_holds_for_every_combination() -> None:
    for a, b in itertools.product(Tri, repeat=2):
        assert all_of([a, b]).negate() is any_of([a.negate(), b.negate()])


def test_negation_keeps_unknown() -> None:
    assert M.negate() is N and N.negate() is M and U.negate() is U


def test_compare_rejects_unknown_operators() -> None:
    assert compare(42 / 7, ">", 6) is False, "exactly 6 weeks is not more than 6 weeks"
    with pytest.raises(ValueError, match="unknown comparator"):
        compare(1, "=>", 1)
