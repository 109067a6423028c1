"""orjson where it writes what ``json.dumps`` would: the records' JSON columns and the audit digests.

The store writes its JSON columns with orjson (``store._as_json``): the spelling may differ from
``json.dumps`` (no spaces, UTF-8, ``0.00001``) but every value reads back equal, and what orjson
refuses is written by ``json.dumps`` as before. An audit digest (``audit.digest``) must not change
at all: orjson's bytes are used only when they are exactly ``json.dumps``'s canonical form.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cds_server.records.store import Store, _as_json

ODD_VALUES: list[Any] = [
    0,
    -0.0,
    1.0,
    0.1,
    1e-4,
    1e-5,
    -1.5e-5,
    9.99e-5,
    1e-7,
    3.3e-9,
    1e-10,
    5e-324,
    1e15,
    1e16,
    1.2345678901234567e17,
    1.7976931348623157e308,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**40,
    "",
    "é ü 中文 🙂",
    "\x00\x01\x1f\x7f\u2028\u2029",
    'quote " backslash \\ slash /',
    "\ud800 lone surrogate",
    "0.00001",
    "e-5,",
    [],
    {},
    {"b": 1, "a": {"é": [1, 2.5]}, "A": None, "": True},
    None,
    True,
]


def test_the_store_reads_back_what_it_was_given(tmp_path: Any) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    try:
        for i, value in enumerate(ODD_VALUES):
            store.save_assertion(_row(f"ca-{i}", {"value": value}))
            kept = store.assertion(f"ca-{i}")
            assert kept is not None
            assert json.dumps(kept["decision"]) == json.dumps({"value": value})
    finally:
        store.close()


def test_what_orjson_refuses_is_written_by_json_dumps() -> None:
    for value in (2**64, -(2**63) - 1, "\ud800", {1: "a"}, _Text("subclass")):
        assert _as_json(value) == json.dumps(value)
    with pytest.raises(TypeError):  # what json.dumps cannot write still fails, as before
        _as_json({"when": datetime(2024, 1, 1, tzinfo=UTC)})


class _Text(str):
    pass


def _row(assertion_id: str, decision: Any) -> dict[str, Any]:
    return {
        "assertion_id": assertion_id,
        "order_ref": "ServiceRequest/1",
        "coverage_ref": "Coverage/c",
        "outcome": "criteria-met",
        "decision": decision,
        "created_at": datetime(2024, 3, 20, tzinfo=UTC),
    }
