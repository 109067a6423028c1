"""Settings: documented, loaded from the environment, and overridable by the factory's mapping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cds_server.config import settings_names
from cds_server.web.app import create_app

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", DOC.read_text(), flags=re.M))
    assert documented == set(settings_names())


def test_every_setting_the_docs_name_exists() -> None:
    """A README or docs page that names ``CDS_SOMETHING`` names a real setting (no stale advice)."""
    root = DOC.parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    named = {(page.name, m) for page in pages for m in re.findall(r"\bCDS_([A-Z][A-Z_]*[A-Z])\b", page.read_text())}
    test_only = {m for f in (root / "tests").glob("*.py") for m in re.findall(r"CDS_(TEST_[A-Z_]+)", f.read_text())}
    unknown = sorted((page, name) for page, name in named if name not in set(settings_names()) | test_only)
    assert unknown == []


def test_environment_then_mapping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CDS_PAYER_NAME", "Acme Health")
    monkeypatch.setenv("CDS_AUTO_APPROVAL", "false")
    monkeypatch.setenv("CDS_FHIR_TIMEOUT_SECONDS", "1.5")
    app = create_app(
        {"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'c.sqlite'}", "FHIR_TIMEOUT_SECONDS": 0.5}
    )
    assert app.config["PAYER_NAME"] == "Acme Health"
    assert app.config["AUTO_APPROVAL"] is False
    assert app.config["FHIR_TIMEOUT_SECONDS"] == 0.5


def test_a_broken_carepath_stops_the_service(tmp_path: Path) -> None:
    from cds_server.engine import InvalidCarePathError

    bad = tmp_path / "bad.json"
    bad.write_text('{"formatVersion": 1}')
    with pytest.raises(InvalidCarePathError, match="bad.json"):
        create_app(
            {"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'c.sqlite'}", "CAREPATHS": [str(bad)]}
        )


def test_carepaths_from_a_comma_separated_environment_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cds_server.carepath_store import DEFAULT_CAREPATHS

    knee = Path(__file__).parent / "fixtures" / "knee-injection-mini.json"
    monkeypatch.setenv("CDS_CAREPATHS", f"{DEFAULT_CAREPATHS[0]},{knee}")
    app = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'c.sqlite'}"})
    assert [cp.id for cp in app.extensions["cds"].carepaths] == ["neck-pain", "knee-oa-mini"]
