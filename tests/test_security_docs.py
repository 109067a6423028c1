"""The signed-call example of docs/security.md works as written: its key, its settings, its token.

The service of step 2 is built in process from the settings the page gives (``make serve`` would
start the same app under gunicorn); steps 1 and 3 run exactly as the page has them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cds_server.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "security.md"


def example() -> str:
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index("### A signed call you can run") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the section has a shell block"
    return block[1]


def test_the_signed_call_of_the_security_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = example()
    make_key, make_token = re.findall(r"\.venv/bin/python -c '\n(.*?)\n'", block, re.S)
    subprocess.run([sys.executable, "-c", make_key], cwd=tmp_path, check=True, timeout=60)
    serve = block[block.index("# 2.") : block.index("# 3.")]
    settings = dict(re.findall(r"(CDS_[A-Z_]+)=('[^']*'|\S+)", serve))
    assert {"CDS_AUTH_REQUIRED", "CDS_PUBLIC_BASE_URL", "CDS_TRUSTED_CLIENTS"} <= set(settings)
    for name, value in settings.items():
        monkeypatch.setenv(name, value.strip("'"))
    monkeypatch.chdir(tmp_path)  # jwks_file is relative to where make serve runs
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'security-doc.sqlite'}"})
    url = re.search(r"^URL=(\S+)$", block, re.M)
    assert url
    base, path = re.match(r"(https?://[^/]+)(/.*)", url[1]).groups()  # type: ignore[union-attr]
    body = json.loads((ROOT / "examples" / "order-sign-mri.json").read_text())
    client = app.test_client()

    def call() -> int:
        token = subprocess.run(
            [sys.executable, "-c", make_token, url[1]], cwd=tmp_path, check=True, capture_output=True, text=True
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        first = client.post(path, json=body, headers=headers, base_url=base).status_code
        again = client.post(path, json=body, headers=headers, base_url=base).status_code
        assert again == 401, "the same token twice: its jti was used"
        return first

    assert call() == 200
    assert client.post(path, json=body, base_url=base).status_code == 401, "no token"
