"""The server process never loads torch: a real `tandem serve`, seen from outside while
its workers are warm from a training and a Predict."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from tandem import Client
from tandem.v1 import task_pb2
from tests.harness.served import ServedProcess, children

SMALL = {"device": "cpu", "image_size": 16, "batch_size": 32}


def mapped_torch(pid: int) -> list[str]:
    """The torch and torchvision files mapped into process `pid` (shared libraries)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []  # exited meanwhile
    paths = {line.split()[-1] for line in maps.splitlines() if len(line.split()) >= 6}
    return sorted(p for p in paths if "libtorch" in p or "torchvision" in p)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (220, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_server_process_loads_no_torch(tmp_path: Path) -> None:
    with ServedProcess(tmp_path / "data") as served:
        with Client(served.grpc_address) as client:
            model = client.train("mobilenet_v3_small", "synthetic", epochs=1, **SMALL)
            assert list(client.logs(model.task_id))[-1].state == task_pb2.TASK_STATE_SUCCEEDED
            answer = client.predict(png(), task_id=model.task_id, device="cpu")
            assert answer.predictions

        # The check sees torch where it is: in the warm workers.
        assert any(mapped_torch(child) for child in children(served.pid))
        assert mapped_torch(served.pid) == []
