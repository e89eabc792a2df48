"""Online Predict against the same model called in-process on the same device (the CPU).

The model is a random-init resnet18 at 224 px with 1,000 classes, saved with
`engines.artifacts.save_artifact` into the data dir of a real Tandem server (the data
dir is a model root). Every request carries the same 224x224 PNG (smooth colour blobs
plus pixel noise, about as hard to decode as a photo), so every answer pays for a PNG
decode, the resize/crop/normalise transform and the forward pass, in-process and in
Tandem alike.

- In-process baseline: `Predictor(artifact, "cpu").predict_images([png], 5)` in a loop
  (decode + preprocess + forward at batch 1, top-5) with torch's default threads (every
  core): the machine's limit. Pinned: the same with `torch.set_num_threads` set to the
  threads the server gives its served model (`service.threads.snapshot()`), measured
  only when that count is not the default (else the default loop stands for both).
- Bare batched: `predict_images([png] * 8, 5)` in a loop with every core, answers/s:
  what 8 callers at once could get from this machine with no server at all. The
  in-process Predictor prepares the network as the served one does (batch norm folded,
  channels-last: `engines.prepared_model`), so these baselines do the same work as
  Tandem; a second bare batched loop runs the network as built
  (`Predictor(..., prepare=False)`, how a plain PyTorch program runs it), and
  `predict_prepared_vs_built` is what the preparation alone gains.
- Tandem: the server runs in this process on its own event loop thread (as the tests'
  `ServerThread` does), port 0, one prewarmed CPU worker, default Predict settings
  (max batch 32, no batching wait, `predict_max_streams` batches at once). Sync gRPC
  stubs call `Predict` with `model_path`, `device="cpu"`, `top_k=5`: one caller in
  sequence (concurrency 1: latency and throughput), then eight threads sharing one
  channel (concurrency 8: throughput). A warm-up loads the model first.
- One stream: a second server, the same but `predict_max_streams=1` (one batch at a
  time in the served model, all its threads on it), for replicas-or-threads
  (bench/README.md, "Replicas or threads"). Local executor only: a process joins one
  Ray cluster once, so through Ray a single server runs, and the batches in flight are
  the serving path's, the same on either executor.
- Floor: a `Predict` the servicer refuses at its first check (a GIF signature on the
  same 100 KB of image), each after the server sat idle as long as one forward pass:
  gRPC's round trip for this request with Tandem's own work cut to the minimum.

`measure(settings, executor)` serves through another executor of the server's (issue 9's
Ray executor: `bench/ray_executor.py`); its figures then carry the executor's name
(`predict_ray_c8_per_s`).

Each round: concurrency 1 as in-process and Tandem calls in turns, call by call (so a
slow moment of a shared machine falls on both sides alike, and the p50 difference is
not a drift between two blocks), then blocks of concurrency 8 (Tandem, one stream, bare
batched; the order reversed every round), then the floor. Latencies are pooled over the
rounds. Throughput at concurrency 1 is calls over the time spent in them; at
concurrency 8, calls over the wall time of the blocks. `time.perf_counter` times
everything; the served models' own counters give the images per forward pass.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.harness import (
    DEFAULT_THREADS,
    LOCAL,
    Tandem,
    TandemClient,
    concurrent_calls,
    figure,
    latency,
    make_png,
    percentile,
    save_model,
    torch_threads,
)
from bench.report import Goal
from engines.artifacts import load_artifact
from engines.predict import Predictor
from tandem.v1 import inference_service_pb2

__all__ = [
    "FULL",
    "GOALS",
    "ONE_STREAM_FIGURES",
    "SMOKE",
    "Settings",
    "make_png",
    "measure",
    "percentile",
    "predict_call",
    "run",
]

ARCHITECTURE = "resnet18"
NUM_CLASSES = 1000
TOP_K = 5
CONCURRENCY = 8

# Figures of the one-stream server, measured with the local executor only.
ONE_STREAM_FIGURES = frozenset(
    {
        "predict_c8_streams1_per_s",
        "predict_c8_streams1_images_per_batch",
        "predict_c8_vs_streams1",
    }
)

GOALS = (
    Goal("predict_p50_overhead_ms", maximum=2.0),
    Goal("predict_p50_over_floor_ms", maximum=0.5),
    Goal("predict_c8_vs_inprocess_pinned", minimum=1.0),
    Goal("predict_c8_vs_bare_batched", minimum=0.9),
)


@dataclass(frozen=True)
class Settings:
    """How much to measure. Counts are per round; `warmup` calls precede the rounds."""

    image_size: int
    rounds: int
    c1_calls: int
    c8_calls: int
    floor_calls: int
    warmup: int


# 300 latencies per side at c1 (the p99 is about the 4th slowest); 480 answers per side at
# c8 (Tandem, one stream, bare batched); about 2 min in all.
FULL = Settings(
    image_size=224,
    rounds=3,
    c1_calls=100,
    c8_calls=160,
    floor_calls=50,
    warmup=10,
)
# resnet18 at 224 px still, a handful of calls: most of the time is the server start.
SMOKE = Settings(image_size=224, rounds=1, c1_calls=3, c8_calls=8, floor_calls=3, warmup=1)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


def save_predict_model(data_dir: Path, image_size: int) -> Path:
    """The benchmark's model (random-init resnet18, 1,000 classes) in the data dir, which
    is a model root of the server, so Predict may name it by path."""
    path = data_dir / "models" / f"{ARCHITECTURE}-{image_size}.pt"
    return save_model(path, ARCHITECTURE, NUM_CLASSES, image_size)


def predict_call(tandem: TandemClient, model_path: Path, png: bytes) -> Callable[[], None]:
    """One Predict of `png` by `model_path` on the CPU, top-5, checked."""
    request = inference_service_pb2.PredictRequest(
        model_path=str(model_path), image=png, top_k=TOP_K, device="cpu"
    )
    stub = tandem.inference

    def call() -> None:
        answer = stub.Predict(request, timeout=120)
        assert len(answer.predictions) == TOP_K

    return call


def measure(settings: Settings, executor: str = LOCAL) -> dict[str, float]:
    """Every side measured in turns; see the module docstring. Served through `executor`
    (figures of an executor other than the local one carry its name)."""
    png = make_png(224)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-predict-") as tmp:
        data_dir = Path(tmp) / "data"
        model_path = save_predict_model(data_dir, settings.image_size)
        with ExitStack() as stack:
            tandem = stack.enter_context(Tandem(data_dir, executor=executor, prewarm_workers=1))
            one_stream = None
            if executor == LOCAL:
                one_stream = stack.enter_context(
                    Tandem(
                        Path(tmp) / "one-stream",
                        executor=executor,
                        prewarm_workers=1,
                        predict_max_streams=1,
                        model_roots=(data_dir,),
                    )
                )
            # Refused by the servicer's first check (not a PNG or JPEG signature): the
            # same request size through gRPC and into Tandem's handler, and nothing else.
            refused = inference_service_pb2.PredictRequest(
                model_path=str(model_path), image=b"GIF89a" + png, top_k=TOP_K, device="cpu"
            )
            stub = tandem.inference

            def floor() -> None:
                try:
                    stub.Predict(refused, timeout=120)
                except grpc.RpcError as exc:
                    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, exc
                else:
                    raise AssertionError("a GIF was accepted")

            predictor = Predictor(load_artifact(str(model_path), map_location="cpu"), "cpu")

            def local() -> None:
                (answer,) = predictor.predict_images([png], TOP_K)
                assert isinstance(answer, list) and len(answer) == TOP_K

            def batched() -> None:
                answers = predictor.predict_images([png] * CONCURRENCY, TOP_K)
                assert len(answers) == CONCURRENCY

            built = Predictor(
                load_artifact(str(model_path), map_location="cpu"), "cpu", prepare=False
            )

            def batched_built() -> None:
                answers = built.predict_images([png] * CONCURRENCY, TOP_K)
                assert len(answers) == CONCURRENCY

            sides = _Sides(
                local=local,
                batched=batched,
                batched_built=batched_built,
                remote=predict_call(tandem, model_path, png),
                floor=floor,
                answered=_answered(tandem),
                one_stream=(
                    None
                    if one_stream is None
                    else _C8(predict_call(one_stream, model_path, png), _answered(one_stream))
                ),
                served_threads=tandem.served_threads,
            )
            with torch_threads(DEFAULT_THREADS):
                figures = _rounds(settings, sides)
    return {figure(name, executor): value for name, value in figures.items()}


def _answered(tandem: Tandem) -> Callable[[], tuple[int, int]]:
    """The served models' counters: (forward passes, images) so far."""
    service = tandem.server.service
    assert service is not None
    model_server = service.model_server
    server = tandem.server
    return lambda: server.call(lambda: (model_server.batches, model_server.images))


class _C8:
    """Seconds and the served model's (forward passes, images) of one side's c8 blocks."""

    def __init__(self, call: Callable[[], None], answered: Callable[[], tuple[int, int]]):
        self.call = call
        self.answered = answered
        self.seconds = 0.0
        self.batches = 0
        self.images = 0

    def block(self, calls: int) -> None:
        batches, images = self.answered()
        self.seconds += concurrent_calls(self.call, calls, CONCURRENCY)
        after = self.answered()
        self.batches += after[0] - batches
        self.images += after[1] - images


@dataclass(frozen=True)
class _Sides:
    """The calls a round makes."""

    local: Callable[[], None]
    batched: Callable[[], None]
    batched_built: Callable[[], None]  # the same with the network as built
    remote: Callable[[], None]
    floor: Callable[[], None]
    answered: Callable[[], tuple[int, int]]
    one_stream: _C8 | None  # a second server at predict_max_streams=1, when there is one
    served_threads: Callable[[], int]


def _rounds(settings: Settings, sides: _Sides) -> dict[str, float]:
    warmup_latencies = []
    for _ in range(settings.warmup):  # the first Predict loads the model in the worker
        warmup_latencies.append(latency(sides.local))
        sides.remote()
        if sides.one_stream is not None:
            sides.one_stream.call()
        sides.floor()
        sides.batched()
        sides.batched_built()
    concurrent_calls(sides.remote, CONCURRENCY * settings.warmup, CONCURRENCY)
    if sides.one_stream is not None:
        concurrent_calls(sides.one_stream.call, CONCURRENCY * settings.warmup, CONCURRENCY)
    # The served model's share of the cores, while it is the only job on the device.
    served_threads = sides.served_threads()
    pinned = served_threads != DEFAULT_THREADS

    def local_pinned() -> None:
        with torch_threads(served_threads):
            sides.local()

    # The floor's calls come after the server sat idle as long as a forward pass keeps
    # it waiting, since how long the threads on the path slept changes how fast they wake.
    gap_s = statistics.median(warmup_latencies)
    local_latencies: list[float] = []
    pinned_latencies: list[float] = []
    remote_latencies: list[float] = []
    floor_latencies: list[float] = []
    c8 = _C8(sides.remote, sides.answered)
    one_stream = sides.one_stream
    bare_batches = settings.c8_calls // CONCURRENCY
    bare_seconds = 0.0
    built_seconds = 0.0

    def bare_block() -> None:
        nonlocal bare_seconds
        bare_seconds += sum(latency(sides.batched) for _ in range(bare_batches))

    def built_block() -> None:
        nonlocal built_seconds
        built_seconds += sum(latency(sides.batched_built) for _ in range(bare_batches))

    blocks = [lambda: c8.block(settings.c8_calls), bare_block, built_block]
    if one_stream is not None:
        blocks.insert(1, lambda: one_stream.block(settings.c8_calls))
    for round_ in range(settings.rounds):
        # Call by call in turns, so the machine's slow moments fall on both sides alike.
        for _ in range(settings.c1_calls):
            local_latencies.append(latency(sides.local))
            remote_latencies.append(latency(sides.remote))
            if pinned:
                pinned_latencies.append(latency(local_pinned))
        # Blocks at concurrency 8, ABBA: the order reversed every round.
        for block in blocks if round_ % 2 == 0 else reversed(blocks):
            block()
        for _ in range(settings.floor_calls):
            time.sleep(gap_s)
            floor_latencies.append(latency(sides.floor))

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    inprocess_per_s = len(local_latencies) / sum(local_latencies)
    pinned_per_s = len(pinned_latencies) / sum(pinned_latencies) if pinned else inprocess_per_s
    calls = settings.rounds * settings.c8_calls
    c8_per_s = calls / c8.seconds
    bare_per_s = settings.rounds * bare_batches * CONCURRENCY / bare_seconds
    built_per_s = settings.rounds * bare_batches * CONCURRENCY / built_seconds
    overhead_ms = ms(remote_latencies, 50) - ms(local_latencies, 50)
    figures = {
        "predict_p50_ms": ms(remote_latencies, 50),
        "predict_p99_ms": ms(remote_latencies, 99),
        "inprocess_p50_ms": ms(local_latencies, 50),
        "inprocess_p99_ms": ms(local_latencies, 99),
        "predict_p50_overhead_ms": overhead_ms,
        "predict_floor_p50_ms": ms(floor_latencies, 50),
        "predict_p50_over_floor_ms": overhead_ms - ms(floor_latencies, 50),
        "predict_c1_per_s": len(remote_latencies) / sum(remote_latencies),
        "predict_c8_per_s": c8_per_s,
        "inprocess_c1_per_s": inprocess_per_s,
        "inprocess_pinned_c1_per_s": pinned_per_s,
        "predict_c8_vs_inprocess_pinned": c8_per_s / pinned_per_s,
        "predict_bare_batched_per_s": bare_per_s,
        "predict_c8_vs_bare_batched": c8_per_s / bare_per_s,
        "predict_bare_batched_built_per_s": built_per_s,
        "predict_prepared_vs_built": bare_per_s / built_per_s,
        "predict_c8_images_per_batch": c8.images / c8.batches,
        "predict_serve_threads": float(served_threads),
    }
    if one_stream is not None:
        figures["predict_c8_streams1_per_s"] = calls / one_stream.seconds
        figures["predict_c8_streams1_images_per_batch"] = one_stream.images / one_stream.batches
        figures["predict_c8_vs_streams1"] = one_stream.seconds / c8.seconds
    return figures
