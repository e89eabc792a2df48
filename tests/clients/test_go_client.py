"""The Go stubs and example, compiled offline in GOPATH mode and run as `go test`
against a live server started here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ServerThread

ROOT = Path(__file__).resolve().parents[2]
IMPORT_PATH = "github.com/tandem-ml/tandem"


@pytest.mark.skipif(shutil.which("go") is None, reason="the Go toolchain is set up by make test")
def test_go_example_against_a_live_server(shared_server: ServerThread, tmp_path: Path) -> None:
    gopath = ROOT / ".gopath"
    link = gopath / "src" / IMPORT_PATH
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(ROOT)
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOPATH": f"{gopath}:/usr/share/gocode",
        "GOCACHE": str(gopath / "cache"),
        "TANDEM_ADDRESS": f"127.0.0.1:{shared_server.port}",
    }
    result = subprocess.run(
        ["go", "test", "-count=1", "-v", "./clients/go/..."],
        cwd=link,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--- PASS: TestTrainAndFollowToSuccess" in result.stdout
    assert "--- PASS: TestErrorsAreStatusCodes" in result.stdout
