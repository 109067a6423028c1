"""The content author's command: validate CarePath files from the shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_server.carepath_store import DEFAULT_CAREPATHS
from cds_server.tools.carepath_check import main


def test_valid_file_is_summarised(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DEFAULT_CAREPATHS[0])]) == 0
    assert "ok " in capsys.readouterr().out


def test_invalid_file_names_the_path_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(DEFAULT_CAREPATHS[0].read_text().replace('"formatVersion": 1', '"formatVersion": 7', 1))
    assert main([str(DEFAULT_CAREPATHS[0]), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "invalid bad.json: $.formatVersion: unsupported format version 7" in out


def test_usage_without_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_every_schema_fault_is_listed_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An author fixes a file in one round: two faults in different places are both named with their paths."""
    import json

    doc = json.loads(DEFAULT_CAREPATHS[0].read_text())
    del doc["services"][0]["title"]
    doc["services"][1]["codes"] = "not a list"
    bad = tmp_path / "two-faults.json"
    bad.write_text(json.dumps(doc))
    assert main([str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any("$.services[0]" in line and "title" in line for line in lines), lines
    assert any(line.startswith("invalid two-faults.json: $.services[1].codes") for line in lines), lines
