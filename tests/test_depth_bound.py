"""The nesting guard's shortcut: ``wire.depth_bound`` never says a body is shallower than it is.

``read_json`` walks the parsed body (``wire.depth``) only when the bound read from the raw text's
brackets exceeds ``MAX_JSON_DEPTH``; so every body ``depth`` refuses must have a bound over the limit.
Strings full of brackets, quotes and backslashes are what could fool a bracket count.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cds_server.scenarios import EXEMPTIONS_NAME, SCENARIO_DIR, hook_request, load_scenario
from cds_server.web.wire import depth, depth_bound

TRICKY = st.text(alphabet=st.sampled_from(list('[]{}"\\/:,ab é\n\t\u2028🙂')), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TRICKY
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=60,
)


def spellings(value: Any) -> list[bytes]:
    return [
        json.dumps(value).encode(),
        json.dumps(value, ensure_ascii=False).encode(),
        json.dumps(value, separators=(",", ":")).encode(),
        json.dumps(value, indent=1, ensure_ascii=False).encode(),
        b"\xef\xbb\xbf " + json.dumps(value).encode() + b"\n",
        json.dumps(value).encode("utf-16"),
    ]


def nested(levels: int, inner: Any = 1) -> Any:
    value = inner
    for i in range(levels):
        value = [value] if i % 2 else {"[{": value, "k": ']]}}\\"'}
    return value


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_the_bound_is_never_below_the_depth(value: Any) -> None:
    for raw in spellings(value):
        assert json.loads(raw) == value or raw.startswith(b"\xff\xfe")
        true_depth = depth(value, 10_000)
        for limit in (1, 2, 3, 5, 64):
            bound = depth_bound(raw, limit)
            assert bound >= min(true_depth, limit + 1)
            if depth(value, limit) > limit:
                assert bound > limit


def test_deep_bodies_are_still_refused_and_shallow_ones_need_no_walk() -> None:
    for levels in (60, 62, 63, 64, 65, 80, 300):
        value = nested(levels)
        for raw in spellings(value):
            assert (depth_bound(raw, 64) > 64) == (depth(value, 64) > 64) or raw.startswith(b"\xff\xfe")


def test_every_scenario_request_is_recognised_as_shallow_without_a_walk() -> None:
    for path in sorted(SCENARIO_DIR.glob("*/**/*.json")):
        if path.name == EXEMPTIONS_NAME:
            continue
        raw = json.dumps(hook_request(load_scenario(path))).encode()
        assert depth_bound(raw, 64) == depth(json.loads(raw), 64) <= 64
