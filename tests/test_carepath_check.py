"""The content author's command: validate CarePath files from the shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_server.carepath_check import main
from cds_server.carepath_store import DEFAULT_CAREPATHS


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
