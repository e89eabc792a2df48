"""Fixtures for the dashboard's browser tests: a real Tandem server and gateway (the same
in-process pair as the REST tests) with a training that has finished, one that runs
and one that waits; Debian's headless Chromium driven by Playwright; and a TCP relay
that can drop every connection through it, as a network would.

The browser is Debian's `chromium` (`make setup` installs it); Playwright's own browser
download is never used. Without that executable every test here is skipped, saying so.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tandem.contract import MAX_EPOCHS
from tests.gateway.conftest import Rest, sse_messages, start_rest, stop_rest, write_colours

CHROMIUM = shutil.which("chromium")
NO_CHROMIUM = "Debian's chromium is not installed (`make setup` installs it with apt-get)"

SCREENSHOTS = Path(__file__).parent / "screenshots"
# A laptop's screen.
VIEWPORT = {"width": 1366, "height": 768}
# Longest wait for anything on a page: the server may be training on a busy machine.
WAIT_MS = 120_000

# Small trainings on a tiny folder of coloured squares: each epoch is a few seconds.
TRAIN = {
    "model": "squeezenet1_1",
    "dataset": "colours",
    "image_size": 32,
    "batch_size": 4,
    "val_split": 0.25,
    "device": "cpu",
    "optimizer": "sgd",
}
FOREVER = MAX_EPOCHS  # a training that ends only when the module's server stops
MODEL_NAME = "colours"


def wait_for_event(rest: Rest, task_id: str, predicate: Callable[[dict[str, Any]], bool]) -> None:
    """Follows the task's log over SSE until an event satisfies `predicate`."""
    path = f"/api/v1/tasks/{task_id}/logs"
    with rest.get(path, stream=True) as response:
        for message in sse_messages(response):
            if predicate(message.data):
                return
    raise AssertionError(f"task {task_id} ended before the awaited event")


def ended(event: dict[str, Any]) -> bool:
    return event.get("state") in {"SUCCEEDED", "FAILED", "CANCELLED"}


@dataclass
class Scenario:
    """A server with a training that finished (published as MODEL_NAME), one running
    for good on the CPU and one waiting for the CPU's only training slot."""

    rest: Rest
    finished: str
    running: str
    queued: str

    def train(self, **fields: Any) -> str:
        response = self.rest.post("/api/v2/train", json={**TRAIN, **fields})
        assert response.status_code == 200, response.text
        task_id: str = response.json()["task_id"]
        return task_id


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    # A temporary directory, not pytest's kept ones: the running training leaves a
    # checkpoint per epoch, which nobody needs after the module.
    with tempfile.TemporaryDirectory(prefix="tandem-dashboard-") as tmp:
        rest = start_rest(Path(tmp))
        try:
            assert rest.server is not None
            write_colours(rest.server.config.dataset_roots[0] / "colours", per_class=12)
            scene = Scenario(rest, "", "", "")
            # Both start at once (2 CPU training slots by default).
            scene.finished = scene.train(epochs=2, model_name=MODEL_NAME)
            scene.running = scene.train(epochs=FOREVER)
            wait_for_event(rest, scene.finished, ended)
            assert rest.get(f"/api/v1/tasks/{scene.finished}").json()["state"] == "SUCCEEDED"
            limits = {"max_concurrent": {"cpu": {"training": 1}}}
            assert rest.post("/api/v2/resources/config", json=limits).status_code == 200
            scene.queued = scene.train(epochs=1, priority=2)
            assert rest.get(f"/api/v1/tasks/{scene.queued}").json()["state"] == "QUEUED"
            yield scene
        finally:
            stop_rest(rest)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    # For the module, not the session: while Playwright's sync API runs, the main thread
    # has a running event loop, and the tests after these that call asyncio.run would fail.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@dataclass
class Console:
    """What a page reported: console errors and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)

    def listen(self, page: Page) -> None:
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")


@dataclass
class Tab:
    """A page in a fresh browser context (its own session storage), and its console."""

    page: Page
    console: Console

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """A factory of tabs (`color_scheme` "light" or "dark"), closed at the test's end."""
    contexts = []

    def open_(color_scheme: str = "light") -> Tab:
        context = browser.new_context(viewport=VIEWPORT, color_scheme=color_scheme)  # type: ignore[arg-type]
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        console = Console()
        console.listen(page)
        return Tab(page, console)

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def tab(open_tab: Callable[..., Tab]) -> Tab:
    return open_tab()


class DroppingRelay:
    """A TCP relay on 127.0.0.1:<free port> to `target`: `drop()` resets every connection
    open through it, as a network that drops would; later connections pass as before."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # dropped

    def drop(self) -> None:
        with self._lock:
            dropped, self._open = self._open, set()
        for sock in dropped:
            # Linger 0: the close ends in a reset, as a broken network path would; the
            # shutdown first wakes the relay's thread blocked reading that socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        self.drop()


@pytest.fixture
def relay(scenario: Scenario) -> Iterator[DroppingRelay]:
    host, port = scenario.rest.url.removeprefix("http://").rsplit(":", 1)
    running = DroppingRelay((host, int(port)))
    yield running
    running.close()


def log_history(rest: Rest, task_id: str) -> list[dict[str, Any]]:
    """The task's stored events so far (no following)."""
    path = f"/api/v1/tasks/{task_id}/logs"
    with rest.get(path, params={"follow": "false"}, stream=True) as response:
        return [message.data for message in sse_messages(response)]
