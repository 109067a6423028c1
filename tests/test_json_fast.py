"""orjson where it writes what ``json.dumps`` would: the records' JSON columns and the audit digests.

The store writes its JSON columns with orjson (``store._as_json``): the spelling may differ from
``json.dumps`` (no spaces, UTF-8, ``0.00001``) but every value reads back equal, and what orjson
refuses is written by ``json.dumps`` as before. An audit digest (``audit.digest``) must not change
at all: orjson's bytes are used only when they are exactly ``json.dumps``'s canonical form.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cds_server.records import audit
from cds_server.records.json_text import stored_json as _as_json
from cds_server.records.store import Store
from cds_server.scenarios import EXEMPTIONS_NAME, SCENARIO_DIR, hook_request, load_scenario

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


def test_the_store_keeps_what_json_dumps_kept(database_url: str) -> None:
    """On SQLite and PostgreSQL (JSONB normalises numbers): the values read back are those kept before orjson."""
    import sqlalchemy as sa

    from cds_server.records.store import assertions

    store = Store(database_url)
    before = sa.create_engine(database_url, json_serializer=json.dumps)  # how the store wrote JSON before
    storable = [v for v in ODD_VALUES if not (isinstance(v, str) and ("\x00" in v or "\ud800" in v))]
    try:
        for i, value in enumerate(storable):
            store.save_assertion(_row(f"new-{i}", {"value": value, "in": [value, {"k": value}]}))
            with before.begin() as conn:
                conn.execute(assertions.insert(), [_row(f"old-{i}", {"value": value, "in": [value, {"k": value}]})])
            new, old = store.assertion(f"new-{i}"), store.assertion(f"old-{i}")
            assert new is not None and old is not None
            assert json.dumps(new["decision"]) == json.dumps(old["decision"])
    finally:
        before.dispose()
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


def json_dumps_canonical(value: Any) -> bytes:
    """What every audit digest was made of before orjson (``audit.digest``), unchanged."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return text.encode("utf-8", "surrogatepass")


def assert_written_as_json_dumps(value: Any) -> None:
    """The digest's canonical form is ``json.dumps``'s bytes."""
    assert audit.canonical_json(value) == json_dumps_canonical(value)


def test_a_digest_is_the_sha256_of_json_dumps_canonical_form() -> None:
    import hashlib

    value = {"b": [1, 2.5, "é"], "a": None}
    assert audit.digest(value) == hashlib.sha256(json_dumps_canonical(value)).hexdigest()


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_written_as_json_dumps_for_odd_values(value: Any) -> None:
    for wrapped in (value, [value], {"k": value, "a": [value, {"z": value}]}, {str(value)[:20]: value}):
        assert_written_as_json_dumps(wrapped)


def test_written_as_json_dumps_for_other_types() -> None:
    from dataclasses import dataclass
    from datetime import date
    from uuid import UUID

    @dataclass
    class Point:
        x: int

    for value in (date(2024, 1, 2), datetime(2024, 1, 2, 3, 4, tzinfo=UTC), Point(1), _Text("t"), (1, "a"), {1: "a"}):
        assert_written_as_json_dumps({"v": value})
    uuid = UUID("3f1d2c8e-0000-4000-8000-000000000000")
    assert_written_as_json_dumps([uuid])


def test_written_as_json_dumps_for_every_character() -> None:
    for start in range(0, 0x110000, 0x400):
        text = "".join(chr(c) for c in range(start, start + 0x400))
        value = {text: [text], text[::-1]: 1}
        assert_written_as_json_dumps(value)


def test_written_as_json_dumps_for_floats() -> None:
    """Random doubles of every magnitude, and every power of ten with a few mantissas, both signs."""
    rng = random.Random(12)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(20_000)]
    values += [float(f"{m}e{e}") for e in range(-325, 309) for m in ("1", "1.5", "9.999999", "3.14159")]
    values += [i / 7 for i in range(-3000, 3000)] + [i / 1000 for i in range(-3000, 3000)]
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    for chunk in range(0, len(finite), 50):
        value = {"n": finite[chunk : chunk + 50], "one": finite[chunk]}
        assert_written_as_json_dumps(value)
    for value in (float("nan"), float("inf"), -float("inf")):
        assert_written_as_json_dumps({"x": value})


def request_values() -> Iterator[Any]:
    """Every prefetch value, context member and draft-order bundle of every scenario's order-sign request."""
    for path in sorted(SCENARIO_DIR.glob("*/**/*.json")):
        if path.name == EXEMPTIONS_NAME:
            continue
        body = hook_request(load_scenario(path))
        yield body
        yield from body.get("prefetch", {}).values()
        yield from body["context"].values()


def test_written_as_json_dumps_for_every_scenario_request() -> None:
    checked = 0
    for value in request_values():
        assert_written_as_json_dumps(value)
        checked += 1
    assert checked > 1000


def test_every_scenario_answer_is_written_as_json_dumps(tmp_path: Any) -> None:
    """The canonical form of whole answers: cards with ✓ and …, coverage information, system actions."""
    from cds_server.web.app import create_app

    app = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'answers.sqlite'}"})
    client = app.test_client()
    checked = 0
    for path in sorted(SCENARIO_DIR.glob("*/**/*.json"))[::4]:
        if path.name == EXEMPTIONS_NAME:
            continue
        response = client.post("/cds-services/crd-order-sign", json=hook_request(load_scenario(path)))
        assert response.status_code == 200
        assert_written_as_json_dumps(response.get_json())
        checked += 1
    app.extensions["cds"].store.close()
    assert checked > 50


def _has_empty(value: Any) -> bool:
    if value is None or value == "" or value == [] or value == {}:
        return True
    if isinstance(value, dict):
        return any(_has_empty(k) or _has_empty(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_empty(v) for v in value)
    return False


def test_surely_without_empties_is_never_wrong() -> None:
    from cds_server.records.json_text import surely_without_empties

    rng = random.Random(5)
    atoms: list[Any] = [None, "", [], {}, "x", 'say "x"', "[]", "{}", "null", 0, 1.5, True, "é"]

    def draw(depth: int) -> Any:
        kind = rng.random()
        if depth == 0 or kind < 0.4:
            return rng.choice(atoms)
        if kind < 0.7:
            return [draw(depth - 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["a", "", "b", "null"]): draw(depth - 1) for _ in range(rng.randint(0, 3))}

    seen = {True: 0, False: 0}
    for _ in range(20_000):
        value = draw(4)
        verdict = surely_without_empties(value)
        seen[verdict] += 1
        assert not (verdict and _has_empty(value))
    for value in request_values():
        if isinstance(value, dict) and not _has_empty(value):
            assert surely_without_empties(value) or b"\\" in json.dumps(value).encode()
    assert seen[True] > 100
