"""What a scenario run reports: each verdict, progress while it runs, the summary per folder."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from cds_server.tools.common import CommandError

if TYPE_CHECKING:
    from cds_server.scenarios import Scenario


@dataclass
class ScenarioResult:
    """One scenario's verdict."""

    name: str
    description: str
    status: str  # passed, failed or skipped
    problems: list[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else "."


class Progress:
    """A one-line bar on a terminal; on a pipe or a CI log, a count every tenth instead of redraws."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = max(1, total // 10)

    def step(self, done: int, label: str) -> None:
        """Report that ``done`` scenarios are finished, ``label`` the last one."""
        if self.tty:
            filled = self.WIDTH * done // max(1, self.total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {done}/{self.total} {label[:40]:<40}")
        elif done % self.every == 0 or done == self.total:
            self.stream.write(f"scenarios: {done}/{self.total}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def verdict_of(scenario: Scenario, problems: list[str]) -> ScenarioResult:
    """Passed when nothing differed, else failed with what did."""
    return ScenarioResult(scenario.name, scenario.description, "failed" if problems else "passed", problems)


def run_all(
    scenarios: Sequence[Scenario], run: Callable[[Scenario], ScenarioResult], progress: Progress
) -> list[ScenarioResult]:
    """Run each scenario; one that crashes is a failure with its error, and the run goes on."""
    results: list[ScenarioResult] = []
    try:
        for done, scenario in enumerate(scenarios, 1):
            try:
                results.append(run(scenario))
            except CommandError:
                raise
            except Exception as exc:  # a broken scenario must not hide the verdict on the others
                results.append(verdict_of(scenario, [f"error: {exc.__class__.__name__}: {exc}"]))
            progress.step(done, scenario.name)
    finally:
        progress.close()
    return results


def summary(results: Sequence[ScenarioResult], where: str) -> dict[str, Any]:
    """Counts overall and per folder, and every failure with what differed."""
    folders: dict[str, dict[str, int]] = {}
    for r in results:
        counts = folders.setdefault(r.folder, {"passed": 0, "failed": 0, "skipped": 0})
        counts[r.status] += 1
    total = {k: sum(c[k] for c in folders.values()) for k in ("passed", "failed", "skipped")}
    return {
        "target": where,
        "total": len(results),
        **total,
        "folders": dict(sorted(folders.items())),
        "failures": [
            {"name": r.name, "description": r.description, "problems": r.problems}
            for r in results
            if r.status == "failed"
        ],
        "skips": [{"name": r.name, "reason": "; ".join(r.problems)} for r in results if r.status == "skipped"],
    }


def render_summary(report: Mapping[str, Any]) -> str:
    """The summary as a table per folder, then each failure: expected vs got, one line per difference."""
    width = max([len("folder"), *map(len, report["folders"])]) + 2
    lines = [f"Scenarios ({report['target']})", f"{'folder':<{width}}{'passed':>8}{'failed':>8}{'skipped':>9}"]
    for folder, c in report["folders"].items():
        lines.append(f"{folder:<{width}}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}")
    lines.append(f"{'total':<{width}}{report['passed']:>8}{report['failed']:>8}{report['skipped']:>9}")
    for failure in report["failures"]:
        lines += ["", f"FAIL {failure['name']}: {failure['description']}"]
        lines += [f"  {problem}" for problem in failure["problems"]]
    verdict = f"{report['failed']} of {report['total']} failed" if report["failed"] else "no failures"
    lines += ["", f"{report['passed']} passed, {report['failed']} failed, {report['skipped']} skipped: {verdict}"]
    return "\n".join(lines) + "\n"
