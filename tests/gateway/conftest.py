"""Fixtures for the REST gateway tests: a real Tandem gRPC server (tests/conftest.py's
ServerThread) with the gateway served by uvicorn over real HTTP on the server's own event
loop, as `tandem serve` runs them; and helpers to read server-sent events with `requests`.

Reuse: `GatewayThread(target, loop=server.loop).start()` serves `create_gateway(target)` with
`server.gateway.GatewayServer` on a socket already bound to 127.0.0.1:0 (so `.url` works at
once, no waiting for start-up); `.stop()` shuts it down. Without `loop` it runs on a private
loop in a daemon thread. `start_rest(tmp)` / the `rest` and `fresh_rest` fixtures pair it
with a real ServerThread.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from PIL import Image

from scheduler import DeviceInventory
from server.gateway import GatewayServer, Timeouts, create_gateway
from tests.conftest import ServerThread, make_config, no_gpus

T = TypeVar("T")
TIMEOUT = 120  # seconds any single HTTP read may take before a test fails


class LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


class GatewayThread:
    """`create_gateway(target)` served by `GatewayServer` (uvicorn) on 127.0.0.1:<free port>,
    on `loop` (a ServerThread's, as `tandem serve` shares one loop) or a private one."""

    def __init__(
        self,
        target: str,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        timeouts: Timeouts | None = None,
        **options: Any,
    ) -> None:
        app = create_gateway(target, timeouts=timeouts, **options)
        # Bound here: requests made before uvicorn runs wait in the socket's backlog.
        self.server = GatewayServer(app, "127.0.0.1", 0, grace_s=2)
        self.url = self.server.url
        self._own = LoopThread() if loop is None else None
        self.loop = loop if loop is not None else self._own.loop  # type: ignore[union-attr]

    def start(self) -> GatewayThread:
        async def start() -> None:
            self.server.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=30)
        if self._own is not None:
            self._own.close()


@dataclass
class Rest:
    """A running gateway, and the gRPC server behind it when it is a real Tandem one."""

    server: ServerThread | None
    gateway: GatewayThread

    @property
    def url(self) -> str:
        return self.gateway.url

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=TIMEOUT, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=TIMEOUT, **kwargs)


def start_rest(tmp: Path, inventory: DeviceInventory | None = None, **overrides: Any) -> Rest:
    """A server and its gateway; without an inventory the server sees no GPU (`no_gpus`)."""
    server = ServerThread(
        make_config(tmp, **overrides), inventory if inventory is not None else no_gpus()
    ).start()
    gateway = GatewayThread(f"127.0.0.1:{server.port}", loop=server.loop).start()
    return Rest(server, gateway)


def stop_rest(rest: Rest) -> None:
    rest.gateway.stop()
    if rest.server is not None:
        rest.server.stop()


@pytest.fixture(scope="session")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    """One gRPC server + gateway shared by the gateway tests (limits left as found); the
    server sees no GPU."""
    running = start_rest(tmp_path_factory.mktemp("rest"))
    yield running
    stop_rest(running)


@pytest.fixture
def fresh_rest(tmp_path: Path) -> Iterator[Callable[..., Rest]]:
    """A factory of servers + gateways private to one test: an inventory (made-up GPUs)
    and `ServerConfig` overrides apply."""
    started: list[Rest] = []

    def start(inventory: DeviceInventory | None = None, **overrides: Any) -> Rest:
        running = start_rest(tmp_path, inventory, **overrides)
        started.append(running)
        return running

    yield start
    for running in started:
        stop_rest(running)


# -- server-sent events ---------------------------------------------------------------


@dataclass
class Sse:
    """One SSE message as a client sees it."""

    id: str | None
    event: str | None
    data: dict[str, Any]


def sse_messages(response: requests.Response) -> Iterator[Sse]:
    """Parses a `text/event-stream` body as it arrives (comments are skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if "data" in fields:
                yield Sse(fields.get("id"), fields.get("event"), json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def follow_logs(rest: Rest, task_id: str, version: str = "v1", **params: Any) -> list[Sse]:
    """The whole SSE stream of a task's log (with `follow`, until the task ends)."""
    headers = params.pop("headers", {})
    path = f"/api/{version}/tasks/{task_id}/logs"
    with rest.get(path, params=params, headers=headers, stream=True) as response:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_messages(response))


# -- a trained model ------------------------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def png(colour: tuple[int, int, int], shade: int = 0) -> bytes:
    image = Image.new("RGB", (24, 24), tuple(max(0, c - shade) for c in colour))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_colours(root: Path, per_class: int = 4) -> Path:
    """A small ImageFolder: one plain-coloured square per image, one folder per colour."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i:02d}.png").write_bytes(png(colour, 6 * i))
    return root


@dataclass
class Model:
    """A SUCCEEDED training task and the dataset it learnt."""

    task_id: str
    model_path: str
    dataset: str


@pytest.fixture(scope="session")
def colour_model(rest: Rest) -> Model:
    """A tiny resnet18 trained through the REST API on `colours` (one epoch, 24 px)."""
    assert rest.server is not None
    write_colours(rest.server.config.dataset_roots[0] / "colours")
    body = {
        "model": "resnet18",
        "dataset": "colours",
        "image_size": 24,
        "epochs": 1,
        "batch_size": 6,
        "val_split": 0.0,
        "device": "cpu",
    }
    response = rest.post("/api/v2/train", json=body)
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    assert follow_logs(rest, task_id)[-1].data["state"] == "SUCCEEDED"
    task = rest.get(f"/api/v2/tasks/{task_id}").json()
    return Model(task_id, task["model_path"], "colours")
