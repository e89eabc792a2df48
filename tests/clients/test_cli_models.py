"""`tandem models ...` and `--model-name` end to end, against a live server: publish two
versions, list and show them, alias one, name it in predict, infer and export, and
delete what may be deleted."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from tests.clients.test_cli import run
from tests.harness.threaded import ServerThread

NAME = "cli-cats"


def publish(server: ServerThread) -> str:
    done = run(
        server,
        "train", "mobilenet_v3_small", "synthetic", "--image-size", "32", "--epochs", "1",
        "--batch-size", "16", "--device", "cpu", "--model-name", NAME, "--follow",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"published the model as {NAME}/" in done.stdout
    return done.stdout.split()[0]


def test_publish_alias_use_and_delete_through_the_cli(
    shared_server: ServerThread, tmp_path: Path
) -> None:
    first, second = publish(shared_server), publish(shared_server)

    listed = run(shared_server, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == [
        "NAME", "LATEST", "VERSIONS", "ARCHITECTURE", "ALIASES",
    ]  # fmt: skip
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(NAME))
    assert row[:4] == [NAME, "2", "2", "mobilenet_v3_small"]
    shown = json.loads(run(shared_server, "--json", "models", "show", NAME).stdout)
    assert [v["task_id"] for v in shown["versions"]] == [first, second]

    aliased = run(shared_server, "models", "alias", NAME, "production", "1")
    assert aliased.stdout.strip() == f"{NAME}@production -> 1 (new)", aliased.stderr
    assert "aliases production->1" in run(shared_server, "models", "show", NAME).stdout

    image = tmp_path / "red.png"
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, format="PNG")
    image.write_bytes(buffer.getvalue())
    predicted = run(
        shared_server,
        "predict",
        str(image),
        "--model-name",
        f"{NAME}@production",
        "--device",
        "cpu",
    )
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.splitlines()[-1] == f"(model {NAME}/1)"
    inferred = run(shared_server, "--json", "infer", "synthetic", "--model-name", NAME, "-f")
    assert inferred.returncode == 0, inferred.stderr
    exported = run(
        shared_server, "--json", "export", "--model-name", f"{NAME}/2", "--format", "torchscript"
    )
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["task_id"] == second

    refused = run(shared_server, "models", "delete", NAME, "1")
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
    assert "is aliased ('production')" in refused.stderr
    unaliased = run(shared_server, "models", "unalias", NAME, "production")
    assert unaliased.stdout.strip() == f"removed {NAME}@production (it pointed at 1)"
    deleted = run(shared_server, "models", "delete", NAME, "2")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.startswith(f"deleted {NAME}/2; the model file stays at ")
    assert run(shared_server, "models", "show", "nope").returncode == 1


def test_export_wants_a_model_or_a_model_name(shared_server: ServerThread) -> None:
    neither = run(shared_server, "export")
    assert neither.returncode == 2 and "give MODEL or --model-name" in neither.stderr
