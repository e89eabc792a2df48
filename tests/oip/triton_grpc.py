"""tritonclient's gRPC client, unchanged, run in a child process for the tests.

Why a child: tritonclient's stubs and Tandem's (`tandem.inference`) define the same
protobuf messages (`inference.ModelInferRequest`, ...), and protobuf refuses a second
definition of a name in one process. The test process holds Tandem's (the server's
modules are imported by the fixtures), so tritonclient.grpc runs here:

    python -m tests.oip.triton_grpc < calls.json

reads a JSON list of `{"call": NAME, "args": {...}}`, makes each call in order, and
prints a JSON list of their results. Bytes travel as base64; a call the server refuses
gives `{"error": {"status": "StatusCode.X", "message": "..."}}`. `run` is the parent's
side.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run(*calls: tuple[str, dict[str, Any]]) -> list[Any]:
    """Makes `calls` with tritonclient.grpc in a fresh Python process; their results."""
    script = json.dumps([{"call": name, "args": args} for name, args in calls])
    done = subprocess.run(
        [sys.executable, "-m", "tests.oip.triton_grpc"],
        input=script,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"the tritonclient child failed:\n{done.stderr[-4000:]}")
    results: list[Any] = json.loads(done.stdout.splitlines()[-1])
    return results


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the child's side ----------------------------------------------------------------


def _client(url: str) -> Any:
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url=url)


def health(url: str, name: str, version: str = "", token: str = "") -> dict[str, Any]:
    client = _client(url)
    headers = {"authorization": f"Bearer {token}"} if token else None
    return {
        "live": client.is_server_live(headers=headers),
        "ready": client.is_server_ready(headers=headers),
        "model_ready": client.is_model_ready(name, version, headers=headers),
    }


def server_metadata(url: str) -> dict[str, Any]:
    metadata: dict[str, Any] = _client(url).get_server_metadata(as_json=True)
    return metadata


def model_metadata(url: str, name: str, version: str = "", token: str = "") -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else None
    metadata: dict[str, Any] = _client(url).get_model_metadata(
        name, version, headers=headers, as_json=True
    )
    return metadata


def infer(
    url: str,
    name: str,
    input_name: str,
    datatype: str,
    shape: list[int],
    data: str | list[str],
    version: str = "",
    classification: int = 0,
    parameters: dict[str, Any] | None = None,
    priority: int = 0,
    request_id: str = "",
) -> dict[str, Any]:
    """One ModelInfer; `data`: the FP32 tensor's bytes, or the BYTES elements, base64."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    if datatype == "BYTES":
        array = np.array([base64.b64decode(item) for item in data], dtype=np.object_)
    else:
        raw = base64.b64decode(data if isinstance(data, str) else "".join(data))
        array = np.frombuffer(raw, dtype=np.float32)
    # The data flat, then the shape claimed: a test may claim a shape the data lacks.
    tensor = grpcclient.InferInput(input_name, [len(array)], datatype)
    tensor.set_data_from_numpy(array)
    tensor.set_shape(shape)
    outputs = [grpcclient.InferRequestedOutput("probabilities", class_count=classification)]
    result = _client(url).infer(
        name,
        [tensor],
        model_version=version,
        outputs=outputs,
        request_id=request_id,
        parameters=parameters,
        priority=priority,
    )
    answer = result.get_response()
    array = result.as_numpy("probabilities")
    values = (
        [item.decode() for item in array.reshape(-1)]
        if array.dtype == np.object_
        else [float(v) for v in array.reshape(-1)]
    )
    return {
        "model_name": answer.model_name,
        "model_version": answer.model_version,
        "id": answer.id,
        "datatype": answer.outputs[0].datatype,
        "shape": list(array.shape),
        "data": values,
    }


def wire_mismatches(ours: str) -> list[str]:
    """Every way the file descriptor `ours` (serialized, base64) differs from
    tritonclient's definition of the same messages and service: a message, field or RPC
    it lacks, or a field whose number, type or repetition differs. Fields that tritonclient's
    definition does not have are listed as `extra ...`."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    from tritonclient.grpc import service_pb2

    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(ours))
    mine = pool.Add(file)  # a private pool: no clash with tritonclient's names
    del mine
    ours_file = pool.FindFileByName(file.name)
    theirs = service_pb2.DESCRIPTOR
    found: list[str] = []

    def compare(message: Any, upstream: Any) -> None:
        for field in message.fields:
            other = upstream.fields_by_name.get(field.name)
            if other is None:
                found.append(f"extra {message.full_name}.{field.name} = {field.number}")
                continue
            ours_shape = (field.number, field.type, field.is_repeated)
            if ours_shape != (other.number, other.type, other.is_repeated):
                found.append(f"{message.full_name}.{field.name}: {ours_shape}")
            if field.message_type is not None:
                names = (field.message_type.full_name, other.message_type.full_name)
                if names[0] != names[1]:
                    found.append(f"{message.full_name}.{field.name} is a {names[0]}")
        for nested in message.nested_types:
            if nested.GetOptions().map_entry and nested.name not in upstream.nested_types_by_name:
                continue  # the entry type of an extra map field, reported as that field
            compare(nested, upstream.nested_types_by_name[nested.name])

    if ours_file.package != theirs.package:
        found.append(f"package {ours_file.package}")
    for message in ours_file.message_types_by_name.values():
        upstream = theirs.message_types_by_name.get(message.name)
        if upstream is None:
            found.append(f"no message {message.name} upstream")
        else:
            compare(message, upstream)
    for service in ours_file.services_by_name.values():
        upstream_service = theirs.services_by_name[service.name]
        for method in service.methods:
            other = upstream_service.methods_by_name.get(method.name)
            if other is None:
                found.append(f"no rpc {method.name} upstream")
                continue
            pair = (method.input_type.full_name, method.output_type.full_name)
            if pair != (other.input_type.full_name, other.output_type.full_name):
                found.append(f"rpc {method.name} takes or gives other messages: {pair}")
    return found


def _call(name: str, args: dict[str, Any]) -> Any:
    from tritonclient.utils import InferenceServerException

    calls: dict[str, Callable[..., Any]] = {
        "health": health,
        "server_metadata": server_metadata,
        "model_metadata": model_metadata,
        "infer": infer,
        "wire_mismatches": wire_mismatches,
    }
    try:
        return calls[name](**args)
    except InferenceServerException as exc:
        return {"error": {"status": exc.status(), "message": exc.message()}}


def main() -> None:
    calls = json.loads(sys.stdin.read())
    print(json.dumps([_call(c["call"], c["args"]) for c in calls]))


if __name__ == "__main__":
    main()
