"""`tandem export` end to end, against a live server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.clients.test_cli import run
from tests.harness.models import write_model
from tests.harness.threaded import ServerThread


def test_export_a_model_file_to_torchscript(shared_server: ServerThread) -> None:
    source = write_model(
        shared_server.config.data_dir / "cli" / "dogs.pt", "resnet18", ["dog", "wolf"], 16
    )
    done = run(shared_server, "--json", "export", str(source), "--format", "torchscript")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert Path(answer["path"]).is_file() and answer["path"].endswith(".torchscript.pt")
    assert answer["format"] == "EXPORT_FORMAT_TORCHSCRIPT" and answer["model_path"] == str(source)

    missing = run(shared_server, "export", "0123456789abcdef")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    assert "Traceback" not in missing.stderr
