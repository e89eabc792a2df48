"""Predict at concurrency 8 against Ray Serve serving the same model on the same machine,
configured as its users would for this machine.

Both serve the Predict benchmark's model file (a random-init resnet18 at 224 px, 1,000
classes, seeded) on the CPU, and both answer each request by decoding its PNG,
resizing, cropping and normalising it, running the forward pass in eval mode and
taking the top 5: Ray Serve's replicas do it with the very same
`engines.predict.Predictor`, so the work per image is the same.

What may differ is the network's preparation. Tandem serves the model with batch norm
folded and channels-last (`engines.prepared_model`); a Ray Serve user deploys the
torchvision network as built, so the all-cores and per-core applications run it so
(`Predictor(..., prepare=False)`). The pinned application runs the same prepared
network with Tandem's threads (whole batches: Tandem also cuts a batch into one-thread
parts, `engines/served_batches.py`), so that it compares the serving around the same
network.

- Tandem: a real server (`bench.harness.Tandem`: port 0, one prewarmed CPU worker,
  default Predict settings: batches of up to 32, no batching wait), called over gRPC by
  8 threads sharing one channel, as in `bench/predict.py`.
- Ray Serve (`ray[serve]` from requirements-bench.txt): a local Ray instance of its own
  (`address="local"`, never a cluster found on the machine; no dashboard, usage stats
  off, its temp dir a short folder under /tmp removed afterwards) running one
  application per configuration, every replica batching like Tandem does
  (`@serve.batch`, up to 8, no wait, room for 32 requests in flight):
  - all cores: one replica with `num_cpus` = every core and torch's default threads;
  - per core: `os.cpu_count()` replicas of one CPU and one torch thread each;
  - pinned: one replica with the threads Tandem gives its served model
    (`service.threads.snapshot()`) and the network prepared as Tandem's is.
  Ray's logical CPUs are raised to the replicas' total so every application is up at
  once; they reserve nothing, they only let Ray place the replicas. 8 threads POST the
  PNG bytes to Serve's HTTP proxy, each on a keep-alive connection of its own.
- Turns: every service is up for the whole run; blocks of calls go round them, the
  order reversed every round, so each pays for the others' idle processes and all meet
  the machine's slow spells. Throughput is calls over the blocks' wall time.

`predict_c8_vs_ray_serve_best` is Tandem's throughput over the better of Ray Serve's
all-cores and per-core configurations (as their users would configure them);
`predict_c8_vs_ray_serve_pinned` over the pinned one (serving against serving).
"""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from bench.harness import Tandem, concurrent_calls, make_png
from bench.predict import TOP_K, predict_call, save_predict_model
from bench.report import Goal, Unavailable
from tests.harness.processes import kill_processes_using, twice_if_ray_times_out

__all__ = ["FULL", "GOALS", "SMOKE", "Settings", "measure", "run", "unavailable"]

CONCURRENCY = 8
# A path under /tmp as short as can be: Ray puts Unix sockets in its temp dir, and a
# socket path may not be longer than 107 bytes.
RAY_TEMP_PREFIX = "/tmp/tandem-bench-"
# Ray's minimum; the benchmark stores nothing in the object store.
OBJECT_STORE_BYTES = 80 * 1024**2

GOALS = (
    Goal("predict_c8_vs_ray_serve_best", minimum=1.5),
    Goal("predict_c8_vs_ray_serve_pinned", minimum=1.5),
)


@dataclass(frozen=True)
class Settings:
    """Calls per block and rounds; `warmup` calls per side first (loading the model)."""

    image_size: int
    rounds: int
    calls: int
    warmup: int


# 480 calls per side, ~25 s each at ~20/s on this VM; plus Ray's start and its replicas'
# imports of torch, about 2.5 min.
FULL = Settings(image_size=224, rounds=4, calls=120, warmup=24)
SMOKE = Settings(image_size=224, rounds=1, calls=8, warmup=8)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


@dataclass(frozen=True)
class _Application:
    """One Ray Serve configuration: its route, replicas, each replica's CPUs and torch
    threads (None: torch's default), and whether it prepares the network as Tandem does."""

    name: str
    replicas: int
    cpus: int
    threads: int | None
    prepare: bool = False

    @property
    def route(self) -> str:
        return f"/{self.name}"


def measure(settings: Settings) -> dict[str, float]:
    """Every service up, blocks of 8 concurrent callers in turns; see the docstring."""
    ray, serve = _import_serve()  # before anything starts: Unavailable if it cannot run
    png = make_png(224)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="tandem-bench-ray-serve-") as tmp:
        data_dir = Path(tmp) / "data"
        model_path = save_predict_model(data_dir, settings.image_size)
        with Tandem(data_dir, prewarm_workers=1) as tandem:
            tandem_call = predict_call(tandem, model_path, png)
            concurrent_calls(tandem_call, settings.warmup, CONCURRENCY)
            served_threads = tandem.served_threads()
            applications = [
                _Application("all-cores", replicas=1, cpus=cores, threads=None),
                _Application("per-core", replicas=cores, cpus=1, threads=1),
                _Application(
                    "pinned", 1, cpus=served_threads, threads=served_threads, prepare=True
                ),
            ]
            with _ray_serve(ray, serve, model_path, applications) as (port, replica_threads):
                callers = {app.name: _HttpCaller(port, app.route, png) for app in applications}
                try:
                    seconds = _in_turns(settings, {"tandem": tandem_call, **callers})
                finally:
                    for caller in callers.values():
                        caller.close()
    per_s = {name: settings.rounds * settings.calls / s for name, s in seconds.items()}
    pinned = per_s["pinned"]
    best = max(per_s["all-cores"], per_s["per-core"])
    return {
        "ray_serve_tandem_c8_per_s": per_s["tandem"],
        "ray_serve_all_cores_c8_per_s": per_s["all-cores"],
        "ray_serve_per_core_c8_per_s": per_s["per-core"],
        "ray_serve_pinned_c8_per_s": pinned,
        "predict_c8_vs_ray_serve_best": per_s["tandem"] / best,
        "predict_c8_vs_ray_serve_pinned": per_s["tandem"] / pinned,
        "ray_serve_threads": float(served_threads),
        "ray_serve_all_cores_threads": float(replica_threads["all-cores"]),
        "ray_serve_per_core_replicas": float(cores),
    }


def _in_turns(settings: Settings, calls: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Seconds of each side's blocks: a warm-up block each, then rounds in turns, the
    order reversed every round (ABBA)."""
    for call in calls.values():
        concurrent_calls(call, settings.warmup, CONCURRENCY)
    seconds = dict.fromkeys(calls, 0.0)
    order = list(calls)
    for round_ in range(settings.rounds):
        for name in order if round_ % 2 == 0 else reversed(order):
            seconds[name] += concurrent_calls(calls[name], settings.calls, CONCURRENCY)
    return seconds


def unavailable() -> str | None:
    """Why Ray Serve cannot run here (with what to install), or None if it can.

    `import ray.serve` is not proof: with `ray` alone (Tandem's Ray executor needs no
    more) it may import and then fail to start for want of the `serve` extra's packages,
    so every distribution that `ray[serve]` requires is looked for too.
    """
    install = "pip install -r requirements-bench.txt"
    try:
        ray_requires = importlib.metadata.requires("ray") or []
    except importlib.metadata.PackageNotFoundError:
        return f"ray is not installed: {install}"
    missing = []
    for line in ray_requires:
        requirement = Requirement(line)
        # Only what the `serve` extra asks for on this platform and Python.
        if requirement.marker is None or not requirement.marker.evaluate({"extra": "serve"}):
            continue
        if requirement.marker.evaluate({"extra": ""}):
            continue  # ray itself needs it: installed with ray
        try:
            importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement.name)
    if missing:
        return f"ray[serve] is not installed (missing {', '.join(sorted(set(missing)))}): {install}"
    return None


def _import_serve() -> tuple[Any, Any]:
    reason = unavailable()
    if reason is not None:
        raise Unavailable(reason)
    # Ray reads this when it starts: no usage report from a benchmark.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray import serve

    return ray, serve


def _start_ray(ray: Any, temp_dir: str, cpus: int) -> None:
    """A local Ray instance with its files under `temp_dir`; once more, in a folder of
    its own, if Ray's fixed 30 s for its raylet passed (seen on a cold 2-core machine:
    "The current node timed out during startup"), after the first try's processes are
    killed."""

    def start(attempt: int) -> None:
        folder = os.path.join(temp_dir, f"start-{attempt}")
        os.makedirs(folder)
        ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
            logging_level="error",
            _temp_dir=folder,
        )

    def clean_up() -> None:
        ray.shutdown()
        kill_processes_using(os.path.join(temp_dir, "start-1"))

    twice_if_ray_times_out(start, clean_up)


@contextmanager
def _ray_serve(
    ray: Any, serve: Any, model_path: Path, applications: list[_Application]
) -> Iterator[tuple[int, dict[str, int]]]:
    """A local Ray instance serving the model over HTTP, one application (route) per
    configuration; yields the HTTP port and each application's torch threads (as one
    of its replicas reports them)."""
    # Serve logs every start and deployment at INFO; the table is what matters here.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    temp_dir = tempfile.mkdtemp(prefix=RAY_TEMP_PREFIX)
    port = _free_port()
    try:
        _start_ray(ray, temp_dir, sum(app.replicas * app.cpus for app in applications))
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            threads = {}
            for app in applications:
                deployment = serve.deployment(
                    name="classifier",
                    num_replicas=app.replicas,
                    max_ongoing_requests=32,
                    # Ray sets OMP_NUM_THREADS to these CPUs in the replica, as a user's
                    # num_cpus would: torch's default threads then follow it.
                    ray_actor_options={"num_cpus": app.cpus},
                )(_classifier_class(serve))
                handle = serve.run(
                    deployment.bind(str(model_path), app.threads, TOP_K, app.prepare),
                    name=app.name,
                    route_prefix=app.route,
                )
                threads[app.name] = handle.threads.remote().result()
            yield port, threads
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        # Whatever Ray left running (a start that failed twice, a shutdown cut short)
        # would take cores from the benchmarks after this one.
        kill_processes_using(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _classifier_class(serve: Any) -> type:
    """The deployment's class. Made here, not at module level, so that Ray pickles it by
    value (the replica need not import `bench`) and `bench` loads without Ray."""

    class Classifier:
        def __init__(self, model_path: str, threads: int | None, top_k: int, prepare: bool) -> None:
            import torch

            from engines.predict import from_path

            if threads is not None:
                torch.set_num_threads(threads)
            self.predictor = from_path(model_path, "cpu", prepare=prepare)
            self.top_k = top_k

        def threads(self) -> int:
            import torch

            count: int = torch.get_num_threads()
            return count

        @serve.batch(max_batch_size=CONCURRENCY, batch_wait_timeout_s=0.0)  # type: ignore[untyped-decorator]
        async def classify(self, images: list[bytes]) -> list[list[dict[str, Any]]]:
            answers = self.predictor.predict_images(images, self.top_k)
            return [
                [{"label": p.label, "score": p.score} for p in answer]
                if isinstance(answer, list)
                else [{"error": str(answer)}]
                for answer in answers
            ]

        async def __call__(self, request: Any) -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = await self.classify(await request.body())
            return result

    return Classifier


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _HttpCaller:
    """POSTs `png` to the deployment and checks the answer: a keep-alive connection per
    calling thread, all closed by `close`."""

    def __init__(self, port: int, route: str, png: bytes) -> None:
        self.port = port
        self.route = route
        self.png = png
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    def __call__(self) -> None:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        connection.request(
            "POST", self.route, body=self.png, headers={"Content-Type": "application/octet-stream"}
        )
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"Ray Serve answered {response.status}: {body[:200]!r}")
        answer = json.loads(body)
        assert len(answer) == TOP_K, answer

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
