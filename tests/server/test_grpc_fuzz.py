"""Hypothesis-generated requests for every RPC of `tandem.v1`, against one real server.

The RPCs and their request messages are read from the protobuf descriptors, and the
requests are built by walking the message fields, so a new RPC or a new field is fuzzed
without editing this file. String fields draw from values that mean something to the
server (device names, model names, `synthetic`, paths in and out of the roots, ids of
tasks created during the run) mixed with arbitrary text; numbers from the boundaries of
their type; bytes from real, truncated and forged images.

Every answer must be OK or a documented client error with a sentence in its details:
never INTERNAL, UNKNOWN or UNIMPLEMENTED, and never a hang. Tasks a request manages to
create are cancelled at once, so the run stays cheap. After each RPC's examples the
server must still be SERVING and answer GetResources.
"""

from __future__ import annotations

import base64
import importlib
import io
import logging
import math
import os
import pkgutil
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.text_format import MessageToString
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import tandem.inference as tandem_inference
import tandem.v1 as tandem_v1
from tandem.v1 import (
    inference_service_pb2,
    resource_service_pb2,
    resources_pb2,
    task_pb2,
    task_service_pb2,
    training_service_pb2,
)
from tests.conftest import Stubs, make_config, no_gpus
from tests.harness.threaded import ServerThread

# The contract's RPCs (DESIGN.md, "Contracts"); the descriptors must hold at least these.
EXPECTED_RPCS = {
    "/tandem.v1.TrainingService/Train",
    "/tandem.v1.InferenceService/Infer",
    "/tandem.v1.InferenceService/Predict",
    "/tandem.v1.TaskService/GetTask",
    "/tandem.v1.TaskService/ListTasks",
    "/tandem.v1.TaskService/CancelTask",
    "/tandem.v1.TaskService/Logs",
    "/tandem.v1.ResourceService/GetResources",
    "/tandem.v1.ResourceService/UpdateLimits",
    "/tandem.v1.ModelService/ExportModel",
    "/tandem.v1.ModelService/ListModels",
    "/tandem.v1.ModelService/GetModel",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelMetadata",
}

# Enough to reach every check of every RPC in a few seconds each; raise it for a longer
# hunt (TANDEM_FUZZ_EXAMPLES=2000).
EXAMPLES_PER_RPC = int(os.environ.get("TANDEM_FUZZ_EXAMPLES", "100"))
# A unary RPC must answer well within this; hitting it is a hang, and a failure.
UNARY_TIMEOUT_S = 30.0
# Predict may wait for a slot and Logs may follow a live task: their deadline is ours,
# and DEADLINE_EXCEEDED from them is an allowed answer.
WAITING_TIMEOUT_S = 5.0
# A streamed answer is read this far, then cancelled.
MAX_STREAMED = 200
MAX_DEPTH = 3

Code = grpc.StatusCode
CLIENT_ERRORS = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.FAILED_PRECONDITION,
    Code.PERMISSION_DENIED,
    Code.RESOURCE_EXHAUSTED,
}
WAITING_RPCS = {"/tandem.v1.InferenceService/Predict", "/tandem.v1.TaskService/Logs"}
# RPCs that create tasks; whatever task they return is cancelled at once.
CREATING_RPCS = {"/tandem.v1.TrainingService/Train", "/tandem.v1.InferenceService/Infer"}


@dataclass(frozen=True)
class Rpc:
    """One method of a service, as its descriptor describes it."""

    path: str
    request: type[Message]
    response: type[Message]
    server_streaming: bool

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


def _pb2_modules() -> list[ModuleType]:
    """The generated message modules of `tandem.v1` and of the Open Inference Protocol
    (`tandem.inference`), whatever files the packages grow."""
    modules = []
    for package in (tandem_v1, tandem_inference):
        names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
        modules += [
            importlib.import_module(f"{package.__name__}.{name}")
            for name in names
            if name.endswith("_pb2")
        ]
    return modules


def all_rpcs() -> list[Rpc]:
    """Every RPC of every service in the package."""
    rpcs = []
    for module in _pb2_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpcs.append(
                    Rpc(
                        path=f"/{service.full_name}/{method.name}",
                        request=message_factory.GetMessageClass(method.input_type),
                        response=message_factory.GetMessageClass(method.output_type),
                        server_streaming=method.server_streaming,
                    )
                )
    return rpcs


RPCS = all_rpcs()


# -- interesting values ---------------------------------------------------------------


def _png(mode: str, size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _forged_png(width: int, height: int) -> bytes:
    """A PNG header claiming `width` x `height` RGB pixels, with no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")


TINY_PNG = _png("RGB", (24, 24))
IMAGES: tuple[bytes, ...] = (
    b"",
    b"\x89PNG\r\n\x1a\n",
    TINY_PNG,
    TINY_PNG[:24],
    TINY_PNG[: len(TINY_PNG) // 2],
    _png("RGBA", (5, 7)),
    _png("L", (1, 1)),
    _png("I;16", (9, 9)),
    _png("P", (3, 300)),
    _png("RGB", (1, 4000)),
    _png("RGB", (16, 16), "JPEG"),
    _png("CMYK", (16, 16), "JPEG"),
    _png("RGB", (16, 16), "JPEG")[:40],
    b"\xff\xd8\xff",
    _png("RGB", (8, 8), "GIF"),
    _forged_png(0, 0),
    _forged_png(100_000, 100_000),  # a decompression bomb's header
    _forged_png(2**31 - 1, 1),
    b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4096,  # 1 MiB of junk behind the magic
    b"not an image at all",
)

INT_BOUNDARIES = (0, 1, -1, 2, 3, 5, 10, 11, 15, 16, 32, 256, 257, 1000, 1001, 1024, 1025)
INT32_LIMITS = (2**31 - 1, -(2**31), 65_536, 65_537, 10_000, 10_001)
INT64_LIMITS = (2**63 - 1, -(2**63), 2**31, 2**32, -(2**31) - 1)
DOUBLES = (
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    0.0,
    5e-324,
    1e-300,
    1e-3,
    0.2,
    0.9,
    0.9000000000000001,
    1.0,
    10.0,
    10.000000000000002,
    -1.0,
    1e308,
)


def _page_token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


# Strings that mean something to the server, by theme; a string field draws a theme
# first, so each gets its share whatever the size of the others.
NAMES = (
    "synthetic",
    " synthetic ",
    "SYNTHETIC",
    "synthetic\x00",
    "resnet18",
    "mobilenet_v3_small",
    " Resnet18",
    "vit_b_16",
    "efficientnet_b0",
    "inception_v3",
    "adam",
    "SGD",
    "rmsprop ",
)
DEVICES = (
    "cpu",
    "CPU ",
    "cuda",
    "cuda:0",
    "cuda:1",
    "cuda:99",
    "cuda:-1",
    "cuda:",
    "cuda:00",
    "cuda:+0",
    "cuda:1e9",
    "cuda:99999999999999999999999",
    "auto",
    "gpu",
    "mps",
)
PATHS = (
    "../../etc/passwd",
    "/etc",
    "/etc/passwd",
    "/dev/zero",
    "/proc/self/fd/0",
    "/",
    ".",
    "..",
    "~",
    "~/",
    "~nosuchuser/x",
    "colours",
    "flat",
    "broken",
    "escape/passwd",
    "loop",
    "file.txt",
)
PAGE_TOKENS = (
    _page_token("id:1"),
    _page_token("id:0"),
    _page_token("id:-1"),
    _page_token(f"id:{2**63 - 1}"),
    _page_token(f"id:{2**63}"),
    _page_token(f"id:-{2**63 + 1}"),
    _page_token("id:" + "9" * 30),
    _page_token("id:" + "9" * 5000),
    _page_token("id:1_000"),
    _page_token("id: 7 "),
    _page_token("nope:1"),
    "id:1",
    "====",
    "a",
)
ODD = (
    "",
    " ",
    "\x00",
    "\n\t",
    "\xff",
    "x" * 10_000,
    "\U0001f9ea" * 2_500,
    "ünïcödé 数据集 🧪",
    "\u202e\u0301",
    "%s%n{0}",
    "'; DROP TABLE tasks; --",
    "NaN",
)
FIXED_THEMES = (NAMES, DEVICES, PATHS, PAGE_TOKENS, ODD)


@dataclass
class Pools:
    """Values the strategies draw from: fixed ones by theme, and the server's own (paths
    in its data dir, and the ids of tasks that exist), which grow while the run goes on."""

    themes: tuple[tuple[str, ...], ...] = FIXED_THEMES
    task_ids: list[str] = field(default_factory=list)


# -- strategies from descriptors ------------------------------------------------------

F = FieldDescriptor
_INT32 = {F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32}
_INT64 = {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64}
_UINT32 = {F.TYPE_UINT32, F.TYPE_FIXED32}
_UINT64 = {F.TYPE_UINT64, F.TYPE_FIXED64}


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [
        v for v in (*INT_BOUNDARIES, *INT32_LIMITS, *INT64_LIMITS, low, high) if low <= v <= high
    ]
    return st.one_of(st.sampled_from(sorted(set(edges))), st.integers(low, high))


def _strings(pools: Pools) -> st.SearchStrategy[str]:
    known_id = st.integers(0, 1023).map(
        lambda i: pools.task_ids[i % len(pools.task_ids)] if pools.task_ids else ""
    )
    return st.one_of(
        *(st.sampled_from(theme) for theme in pools.themes),
        known_id,
        known_id.map(lambda task_id: f" {task_id}\n"),
        known_id.map(str.upper),
        st.text(st.characters(codec="utf-8"), max_size=40),
    )


def _timestamps() -> st.SearchStrategy[dict[str, int]]:
    # Valid range is 0001-01-01 .. 9999-12-31; step over both ends as well.
    seconds = st.one_of(
        st.sampled_from([0, -1, -62135596800, -62135596801, 253402300799, 253402300800]),
        st.integers(-(2**63), 2**63 - 1),
    )
    nanos = st.one_of(st.sampled_from([0, -1, 999_999_999, 10**9]), _ints(-(2**31), 2**31 - 1))
    return st.fixed_dictionaries({}, optional={"seconds": seconds, "nanos": nanos})


def scalar(fd: FieldDescriptor, pools: Pools) -> st.SearchStrategy[Any]:
    kind = fd.type
    if kind in _INT32:
        return _ints(-(2**31), 2**31 - 1)
    if kind in _INT64:
        return _ints(-(2**63), 2**63 - 1)
    if kind in _UINT32:
        return _ints(0, 2**32 - 1)
    if kind in _UINT64:
        return _ints(0, 2**64 - 1)
    if kind == F.TYPE_DOUBLE:
        return st.one_of(st.sampled_from(DOUBLES), st.floats())
    if kind == F.TYPE_FLOAT:
        return st.one_of(st.sampled_from(DOUBLES[:5]), st.floats(width=32))
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_STRING:
        return _strings(pools)
    if kind == F.TYPE_BYTES:
        images = st.sampled_from(IMAGES)
        return st.one_of(images, images, st.binary(max_size=256))
    if kind == F.TYPE_ENUM and fd.enum_type is not None:
        known = sorted(v.number for v in fd.enum_type.values)
        if fd.enum_type.is_closed:
            return st.sampled_from(known)
        unknown = [known[-1] + 1, 99, -1, 2**31 - 1, -(2**31)]
        return st.one_of(st.sampled_from(known + unknown), _ints(-(2**31), 2**31 - 1))
    raise AssertionError(f"no strategy for field {fd.full_name} of type {kind}")


def _map_entry(fd: FieldDescriptor) -> tuple[FieldDescriptor, FieldDescriptor] | None:
    """The key and value fields of a map field; None for any other field."""
    entry = fd.message_type
    if entry is None or not entry.GetOptions().map_entry:
        return None
    return entry.fields_by_name["key"], entry.fields_by_name["value"]


def _is_map(fd: FieldDescriptor) -> bool:
    return _map_entry(fd) is not None


def _descriptor(cls: type[Message]) -> Descriptor:
    return cast(Descriptor, cls.DESCRIPTOR)


def _value(fd: FieldDescriptor, pools: Pools, depth: int) -> st.SearchStrategy[Any]:
    """A strategy for one field's value, as `_assign` takes it."""
    entry = _map_entry(fd)
    if entry is not None:
        key, value = entry
        return st.dictionaries(scalar(key, pools), _single(value, pools, depth + 1), max_size=4)
    if fd.is_repeated:
        return st.lists(_single(fd, pools, depth + 1), max_size=6)
    return _single(fd, pools, depth)


def _single(fd: FieldDescriptor, pools: Pools, depth: int) -> st.SearchStrategy[Any]:
    if fd.message_type is not None:
        return messages(fd.message_type, pools, depth + 1)
    return scalar(fd, pools)


def _fields(descriptor: Descriptor, pools: Pools, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the message's fields (each one set or left out), with their values."""
    if depth > MAX_DEPTH:
        return st.just({})
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _timestamps()
    optional = {fd.name: _value(fd, pools, depth) for fd in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional)


def _assign(message: Message, fd: FieldDescriptor, value: Any) -> None:
    target = getattr(message, fd.name)
    entry = _map_entry(fd)
    if entry is not None:
        value_is_message = entry[1].message_type is not None
        for key, item in value.items():
            if value_is_message:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif fd.is_repeated:
        for item in value:
            if fd.message_type is not None:
                target.add().CopyFrom(item)
            else:
                target.append(item)
    elif fd.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, fd.name, value)


def build(cls: type[Message], fields: Mapping[str, Any], base: Message | None = None) -> Message:
    """`base` (or an empty message) with `fields` set over it."""
    message = cls()
    if base is not None:
        message.CopyFrom(base)
    for name, value in fields.items():
        fd = _descriptor(cls).fields_by_name[name]
        message.ClearField(name)
        _assign(message, fd, value)
    return message


def messages(descriptor: Descriptor, pools: Pools, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    return _fields(descriptor, pools, depth).map(lambda fields: build(cls, fields))


def requests(rpc: Rpc, pools: Pools, base: Message | None) -> st.SearchStrategy[Message]:
    """Generated requests; with a valid `base`, mostly that request with one (or several)
    of its fields replaced, so the checks behind the first refusal get reached too."""
    descriptor = _descriptor(rpc.request)
    generated = messages(descriptor, pools)
    if base is None:
        return generated
    some = _fields(descriptor, pools, 0)
    one = st.sampled_from(list(descriptor.fields)).flatmap(
        lambda fd: _value(fd, pools, 0).map(lambda value: {fd.name: value})
    )
    return st.one_of(
        generated,
        some.map(lambda fields: build(rpc.request, fields, base)),
        one.map(lambda fields: build(rpc.request, fields, base)),
        one.map(lambda fields: build(rpc.request, fields, base)),
    )


# -- calling the server ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str
    responses: tuple[Message, ...]


def call(channel: grpc.Channel, rpc: Rpc, request: Message) -> Answer:
    """Sends `request` and reads the whole answer (a stream up to MAX_STREAMED messages)."""
    serialize, parse = rpc.request.SerializeToString, rpc.response.FromString
    timeout = WAITING_TIMEOUT_S if rpc.path in WAITING_RPCS else UNARY_TIMEOUT_S
    if not rpc.server_streaming:
        method = channel.unary_unary(
            rpc.path, request_serializer=serialize, response_deserializer=parse
        )
        try:
            return Answer(Code.OK, "", (method(request, timeout=timeout),))
        except grpc.RpcError as exc:
            return Answer(exc.code(), exc.details() or "", ())
    stream = channel.unary_stream(
        rpc.path, request_serializer=serialize, response_deserializer=parse
    )(request, timeout=timeout)
    received: list[Message] = []
    try:
        for response in stream:
            received.append(response)
            if len(received) >= MAX_STREAMED:
                stream.cancel()  # ours: the answer so far is what counts
                break
    except grpc.RpcError as exc:
        return Answer(exc.code(), exc.details() or "", tuple(received))
    return Answer(Code.OK, "", tuple(received))


def task_ids_in(message: Message) -> Iterator[str]:
    """Every `task_id` string anywhere in `message`."""
    for fd, value in message.ListFields():
        if fd.name == "task_id" and fd.type == F.TYPE_STRING and not fd.is_repeated:
            yield value
        elif fd.message_type is not None and not _is_map(fd):
            for item in value if fd.is_repeated else (value,):
                yield from task_ids_in(item)


def describe(rpc: Rpc, request: Message) -> str:
    text = MessageToString(request, as_one_line=True, as_utf8=True)
    return f"{rpc.path}({text[:2000]})"


class Sent:
    """A generated request; Hypothesis prints a failing one as the call it is."""

    def __init__(self, rpc: Rpc, message: Message) -> None:
        self.rpc = rpc
        self.message = message

    def __repr__(self) -> str:
        return describe(self.rpc, self.message)


# -- the server ------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """Log records with a traceback: the server logs one for every bug it hides."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@dataclass
class Target:
    server: ServerThread
    stubs: Stubs
    pools: Pools
    # A valid request per RPC name, to mutate.
    bases: dict[str, Message]
    errors: ErrorRecords
    loop_errors: list[Mapping[str, Any]]


def _write_datasets(root: Path) -> None:
    for label, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        (root / "colours" / label).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            buffer = io.BytesIO()
            Image.new("RGB", (12, 12), colour).save(buffer, format="PNG")
            (root / "colours" / label / f"{i}.png").write_bytes(buffer.getvalue())
    (root / "flat").mkdir()
    (root / "flat" / "a.png").write_bytes(TINY_PNG)
    (root / "broken" / "cls").mkdir(parents=True)
    (root / "broken" / "cls" / "x.png").write_bytes(b"not a png")
    (root / "empty").mkdir()
    (root / "escape").symlink_to("/etc")
    (root / "loop").symlink_to(root / "loop")
    (root / "file.txt").write_text("not a folder")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    server = ServerThread(make_config(tmp), no_gpus()).start()
    stubs = Stubs.connect(server.port)
    try:
        loop_errors: list[Mapping[str, Any]] = []
        server.loop.call_soon_threadsafe(
            server.loop.set_exception_handler, lambda _loop, context: loop_errors.append(context)
        )
        yield _prepare(tmp, server, stubs, errors, loop_errors)
    finally:
        stubs.channel.close()
        server.stop()
        logging.getLogger().removeHandler(errors)


def _prepare(
    tmp: Path,
    server: ServerThread,
    stubs: Stubs,
    errors: ErrorRecords,
    loop_errors: list[Mapping[str, Any]],
) -> Target:
    """Files in and around the roots, a trained model, an ended task; the pools and the
    valid requests built from them."""
    data = server.config.data_dir
    root = server.config.dataset_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    _write_datasets(root)
    (data / "garbage.pt").write_bytes(b"\x80\x04junk")

    # One real model, so Infer and Predict get past "no such model" to the real work.
    trained = stubs.train(image_size=32, batch_size=32, val_split=0.0)
    assert stubs.events(trained.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    model_path = stubs.get(trained.task_id).model_path
    warm = inference_service_pb2.PredictRequest(task_id=trained.task_id, image=TINY_PNG)
    assert stubs.inference.Predict(warm, timeout=120).predictions
    # And one task that ended without a model.
    cancelled = stubs.train(request_id="fuzz-cancelled")
    stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=cancelled.task_id))

    paths = [tmp, data, root, data / "garbage.pt", data / "tandem.db", data / "tasks"]
    paths += [root / name for name in ("colours", "flat", "broken", "empty", "escape", "loop")]
    paths += [root / "escape" / "passwd", root / "file.txt", root / "missing", Path(model_path)]
    here = (*(str(p) for p in paths), f"{root}/../../..", f"{root}/colours/", "fuzz-cancelled")
    pools = Pools((*FIXED_THEMES, here), task_ids=[trained.task_id, cancelled.task_id])
    bases: dict[str, Message] = {
        "Train": training_service_pb2.TrainRequest(
            model="mobilenet_v3_small", dataset="synthetic", device="cpu", image_size=32
        ),
        "Infer": inference_service_pb2.InferRequest(
            task_id=trained.task_id, dataset="synthetic", device="cpu", batch_size=32
        ),
        "Predict": warm,
        "GetTask": task_service_pb2.GetTaskRequest(task_id=trained.task_id),
        "CancelTask": task_service_pb2.CancelTaskRequest(task_id=cancelled.task_id),
        "Logs": task_service_pb2.LogsRequest(task_id=trained.task_id, follow=False),
        "ListTasks": task_service_pb2.ListTasksRequest(page_size=1),
        "UpdateLimits": resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={"cpu": resources_pb2.ConcurrencyLimits(training=2, inference=4)}
        ),
    }
    return Target(server, stubs, pools, bases, errors, loop_errors)


def assert_alive(target: Target) -> None:
    health = health_pb2_grpc.HealthStub(target.stubs.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    target.stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest(), timeout=10)
    # Reported once: the next test starts clean.
    logged, target.errors.records = target.errors.records, []
    loop_errors = list(target.loop_errors)
    target.loop_errors.clear()
    assert not logged, [f"{r.getMessage()}: {r.exc_info[1]!r}" for r in logged if r.exc_info]
    assert not loop_errors, loop_errors


def check(target: Target, rpc: Rpc, request: Message) -> Answer:
    """Sends `request`; asserts the answer is OK or a client error with a sentence, and
    cancels any task it created."""
    answer = call(target.stubs.channel, rpc, request)
    allowed = CLIENT_ERRORS | ({Code.DEADLINE_EXCEEDED} if rpc.path in WAITING_RPCS else set())
    where = describe(rpc, request)
    assert answer.code in allowed, f"{where} answered {answer.code.name}: {answer.details!r}"
    if answer.code is not Code.OK:
        assert answer.details.strip(), f"{where} answered {answer.code.name} with no details"
        # gRPC's own words when the answer could not be delivered (a status sentence too
        # long for a trailer): the server's sentence never reached the client.
        assert "Stream removed" not in answer.details, f"{where}: {answer.details}"
    known = set(target.pools.task_ids)
    for response in answer.responses:
        for task_id in task_ids_in(response):
            if task_id in known:
                continue
            known.add(task_id)
            target.pools.task_ids.append(task_id)
            if rpc.path in CREATING_RPCS:
                cancel(target, task_id)
    return answer


def cancel(target: Target, task_id: str) -> None:
    """Cancels a task a fuzzed request created; it may have failed on its own already."""
    try:
        request = task_service_pb2.CancelTaskRequest(task_id=task_id)
        target.stubs.tasks.CancelTask(request, timeout=UNARY_TIMEOUT_S)
    except grpc.RpcError as exc:
        assert exc.code() is Code.FAILED_PRECONDITION, (task_id, exc.code(), exc.details())


# -- the tests -------------------------------------------------------------------------


def test_the_descriptors_name_every_rpc() -> None:
    assert {rpc.path for rpc in RPCS} >= EXPECTED_RPCS


MESSAGES = {
    descriptor.full_name: descriptor
    for module in _pb2_modules()
    for descriptor in module.DESCRIPTOR.message_types_by_name.values()
}


@pytest.mark.parametrize("message_type", sorted(MESSAGES))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_every_message_can_be_generated(message_type: str, data: st.DataObject) -> None:
    """The generator covers every field type the package uses (Task has Timestamps, a
    oneof, maps and enums), so a new field of any of them is fuzzed as it is added."""
    descriptor = MESSAGES[message_type]
    message = data.draw(messages(descriptor, Pools(task_ids=["t"])))
    cls = message_factory.GetMessageClass(descriptor)
    wire = message.SerializeToString(deterministic=True)
    assert cls.FromString(wire).SerializeToString(deterministic=True) == wire


# UpdateLimits last: the limits it leaves behind would hold up everything after it.
ORDERED = sorted(RPCS, key=lambda rpc: (rpc.name == "UpdateLimits", rpc.path))


@pytest.mark.parametrize("rpc", ORDERED, ids=[rpc.path.lstrip("/") for rpc in ORDERED])
def test_generated_requests_get_a_client_error_at_worst(target: Target, rpc: Rpc) -> None:
    base = target.bases.get(rpc.name)

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(sent=requests(rpc, target.pools, base).map(partial(Sent, rpc)))
    def fuzz(sent: Sent) -> None:
        check(target, rpc, sent.message)

    fuzz()
    assert_alive(target)


def test_sequences_of_generated_requests_to_any_rpc(target: Target) -> None:
    """Calls in a row to any RPCs, so one call's effect meets another's request: limits
    changed under a Predict, a Logs of a task created a moment ago, and so on."""
    any_call = st.one_of(
        *(
            requests(rpc, target.pools, target.bases.get(rpc.name)).map(partial(Sent, rpc))
            for rpc in RPCS
        )
    )

    @settings(
        max_examples=EXAMPLES_PER_RPC // 2,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(calls=st.lists(any_call, min_size=2, max_size=6))
    def fuzz(calls: list[Sent]) -> None:
        for sent in calls:
            check(target, sent.rpc, sent.message)

    fuzz()
    assert_alive(target)


def _by_path(path: str) -> Rpc:
    return next(rpc for rpc in RPCS if rpc.path == path)


# Found by the fuzzer; each was an INTERNAL or an undeliverable answer before its fix.
REGRESSIONS: tuple[tuple[str, Message, grpc.StatusCode], ...] = (
    # A page token for a row id beyond SQLite's INTEGER: OverflowError in the query.
    (
        "/tandem.v1.TaskService/ListTasks",
        task_service_pb2.ListTasksRequest(page_token=_page_token(f"id:{2**63}")),
        Code.INVALID_ARGUMENT,
    ),
    # Sentences that quote a long input: a trailer over the client's limits (8 KiB soft,
    # 16 KiB hard), so the client saw RESOURCE_EXHAUSTED "Stream removed", not NOT_FOUND.
    (
        "/tandem.v1.TaskService/GetTask",
        task_service_pb2.GetTaskRequest(task_id="x" * 20_000),
        Code.NOT_FOUND,
    ),
    (
        "/tandem.v1.TaskService/Logs",
        task_service_pb2.LogsRequest(task_id="\U0001f9ea" * 2_500, follow=False),
        Code.NOT_FOUND,
    ),
    (
        "/tandem.v1.ResourceService/UpdateLimits",
        resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={"x" * 20_000: resources_pb2.ConcurrencyLimits(training=1)}
        ),
        Code.NOT_FOUND,
    ),
)


@pytest.mark.parametrize(
    ("path", "request_", "code"),
    REGRESSIONS,
    ids=[f"{path.rsplit('/', 1)[1]}-{i}" for i, (path, _, _) in enumerate(REGRESSIONS)],
)
def test_requests_the_fuzzer_found(
    target: Target, path: str, request_: Message, code: grpc.StatusCode
) -> None:
    assert check(target, _by_path(path), request_).code is code
    assert_alive(target)
