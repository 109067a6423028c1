"""The load benchmark's requests: one order-sign call per scenario of the library, as fixed bytes.

``bench/bench_load.py`` sends each once to the service (only those answered 200 are measured) and
then, for wrk, writes them to files its Lua script rotates through.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_server.scenarios import EXEMPTIONS_NAME, SCENARIO_DIR, hook_request, load_scenario  # noqa: E402


@dataclass(frozen=True)
class Payload:
    """One request body and the scenario it came from."""

    name: str
    body: bytes


def scenario_paths(limit: int) -> list[Path]:
    """Return the scenario files; with a limit, taken in turn from each folder so every service stays in the mix."""
    paths = [p for p in sorted(SCENARIO_DIR.glob("*/**/*.json")) if p.name != EXEMPTIONS_NAME]
    if limit <= 0 or limit >= len(paths):
        return paths
    by_folder: dict[str, list[Path]] = {}
    for path in paths:
        by_folder.setdefault(path.relative_to(SCENARIO_DIR).parts[0], []).append(path)
    picked: list[Path] = []
    queues = list(by_folder.values())
    while len(picked) < limit:
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return sorted(picked)


def build_payloads(limit: int) -> list[Payload]:
    """Build one order-sign request per scenario, serialised once so the generators send fixed bytes."""
    payloads = []
    for path in scenario_paths(limit):
        scenario = load_scenario(path)
        body = json.dumps(hook_request(scenario), separators=(",", ":")).encode()
        payloads.append(Payload(scenario.name, body))
    return payloads


def write_bodies(payloads: Sequence[Payload], directory: Path) -> None:
    """Write the bodies as 0000.json, 0001.json ... for the wrk script to read."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, payload in enumerate(payloads):
        (directory / f"{number:04d}.json").write_bytes(payload.body)
