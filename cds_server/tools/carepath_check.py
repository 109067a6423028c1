"""Validate CarePath files: ``python -m cds_server.tools.carepath_check FILE...``.

Prints ``ok`` with a summary per valid file; for an invalid one, a line per fault
with its JSON path (every schema fault at once; past the schema, the first fault).
Exits 1 when any file is invalid, so it can run in a content author's CI.
"""

from __future__ import annotations

import sys

from cds_server.carepath_store import load_carepath
from cds_server.engine import InvalidCarePathError


def main(argv: list[str]) -> int:
    """Validate each file named in ``argv``; return the process exit code."""
    if not argv:
        print("usage: python -m cds_server.tools.carepath_check FILE...", file=sys.stderr)
        return 2
    status = 0
    for name in argv:
        try:
            cp = load_carepath(name)
        except InvalidCarePathError as exc:
            for path, message in exc.problems:
                print(f"invalid {exc.source}: {path}: {message}")
            status = 1
            continue
        print(
            f"ok {name}: {cp.id} {cp.version}, {len(cp.services)} services, {len(cp.nodes)} criteria, "
            f"{len(cp.value_sets)} value sets, {len(cp.parameters)} parameters"
        )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
