"""The Open Inference Protocol's REST bodies, translated to and from its gRPC messages.

An infer body is a JSON object, optionally followed by binary tensor data (the binary
tensor data extension, which tritonclient uses by default): the header
`Inference-Header-Content-Length` says where the JSON ends, and each input with a
`binary_data_size` parameter takes that many bytes of the rest, in input order. Inputs
given as JSON `data` (nested or flat) become raw contents too: FP32 numbers, or BYTES
strings (base64 with the input parameter `content_type: "base64"`, MLServer's
convention for bytes that are not text). An answer's outputs are binary when the
request's output says `binary_data: true` or the request says `binary_data_output: true`;
JSON `data` otherwise. Every refusal is a `BodyError` whose message is the sentence.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.oip_tensors import (
    ParameterValue,
    deserialize_bytes,
    floats_to_raw,
    parameter_value,
    raw_to_floats,
    serialize_bytes,
    to_parameter,
)
from tandem.inference import open_inference_pb2 as oip

# Parameters the gateway acts on itself; the gRPC server never sees them.
_GATEWAY_ONLY = frozenset({"binary_data", "binary_data_output", "binary_data_size"})
BINARY_HEADER = "Inference-Header-Content-Length"


class BodyError(ValueError):
    """A REST body the protocol does not allow; the message says what is wrong."""


@dataclass(frozen=True)
class InferCall:
    """A REST infer request as its gRPC request, and how its answer is to be written."""

    request: oip.ModelInferRequest
    # Outputs asked for with `binary_data` set either way, by name.
    binary: Mapping[str, bool] = field(default_factory=dict)
    # `binary_data_output`: outputs not named above are binary.
    binary_by_default: bool = False

    def wants_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_by_default)


def infer_request(body: bytes, header_length: str | None, name: str, version: str) -> InferCall:
    """The gRPC request for a REST infer `body` (and its binary header, if any)."""
    try:
        return _infer_request(body, header_length, name, version)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, BodyError):
            raise
        # A number JSON can hold and the protocol cannot (a parameter or a dimension
        # past 64 bits, an FP32 element past float's range): the caller's mistake.
        raise BodyError(f"the body holds a number the protocol cannot carry: {exc}") from None


def _infer_request(body: bytes, header_length: str | None, name: str, version: str) -> InferCall:
    if header_length is None:
        header, binary = body, b""
    else:
        length = _header_length(header_length, len(body))
        header, binary = body[:length], body[length:]
    try:
        document = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        hint = "" if header_length is not None else f" (binary data needs {BINARY_HEADER})"
        raise BodyError(f"the body is not valid JSON{hint}: {exc}") from None
    if not isinstance(document, dict):
        raise BodyError('the body must be a JSON object with "inputs"')
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BodyError('"inputs" must be a non-empty list of input tensors')
    request = oip.ModelInferRequest(model_name=name, model_version=version)
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise BodyError(f'"id" must be a string, got {request_id!r}')
    request.id = request_id
    parameters = _parameters(document.get("parameters"), "the request")
    for key, value in parameters.items():
        if key not in _GATEWAY_ONLY:
            request.parameters[key].CopyFrom(to_parameter(value))
    offset = 0
    raws: list[bytes] = []
    for number, item in enumerate(inputs, 1):
        tensor, raw, offset = _input(item, number, binary, offset)
        request.inputs.append(tensor)
        if raw is not None:
            raws.append(raw)
    if offset != len(binary):
        raise BodyError(
            f"the body has {len(binary) - offset} bytes of binary data that no input's "
            "binary_data_size claims"
        )
    if len(raws) == len(request.inputs):
        request.raw_input_contents.extend(raws)
    binary_outputs: dict[str, bool] = {}
    for number, item in enumerate(_list(document.get("outputs", []), '"outputs"'), 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BodyError(f'output {number} must be an object with a "name" string')
        wanted = _parameters(item.get("parameters"), f"output {item['name']}")
        output = request.outputs.add(name=item["name"])
        for key, value in wanted.items():
            if key not in _GATEWAY_ONLY:
                output.parameters[key].CopyFrom(to_parameter(value))
        if "binary_data" in wanted:
            binary_outputs[item["name"]] = bool(wanted["binary_data"])
    return InferCall(request, binary_outputs, bool(parameters.get("binary_data_output", False)))


def infer_response(response: oip.ModelInferResponse, call: InferCall) -> tuple[bytes, int | None]:
    """The REST answer's body, and the length of its JSON part when binary data follows."""
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = {
            key: parameter_value(value) for key, value in response.parameters.items()
        }
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        output: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if call.wants_binary(tensor.name):
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif tensor.datatype == "BYTES":
            items = deserialize_bytes(raw, f"output {tensor.name}")
            output["data"] = [item.decode("utf-8", errors="replace") for item in items]
        else:
            output["data"] = raw_to_floats(raw)
        outputs.append(output)
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def metadata_document(response: oip.ModelMetadataResponse) -> dict[str, Any]:
    """A ModelMetadata answer as the protocol's REST JSON (with Tandem's `parameters`)."""
    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": [_tensor_metadata(t) for t in response.inputs],
        "outputs": [_tensor_metadata(t) for t in response.outputs],
        "parameters": {key: parameter_value(v) for key, v in response.parameters.items()},
    }


def _tensor_metadata(tensor: oip.ModelMetadataResponse.TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def _header_length(value: str, body_length: int) -> int:
    try:
        length = int(value)
    except ValueError:
        raise BodyError(f"{BINARY_HEADER} must be a whole number, got {value!r}") from None
    if not 0 <= length <= body_length:
        raise BodyError(f"{BINARY_HEADER} is {length} but the body has {body_length} bytes")
    return length


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BodyError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _parameters(value: object, where: str) -> dict[str, ParameterValue]:
    """A `parameters` object of scalars."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BodyError(f"the parameters of {where} must be an object")
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise BodyError(f"parameter {key} of {where} must be a boolean, a number or a string")
    return value


def _input(
    item: object, number: int, binary: bytes, offset: int
) -> tuple[oip.ModelInferRequest.InferInputTensor, bytes | None, int]:
    """One input tensor, its raw contents (None where it cannot be packed) and where the
    next input's binary data starts."""
    if not isinstance(item, dict):
        raise BodyError(f"input {number} must be an object")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise BodyError(f'input {number} must have a "name" and a "datatype" string')
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise BodyError(f'input {name}: "shape" must be a list of integers')
    parameters = _parameters(item.get("parameters"), f"input {name}")
    tensor = oip.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    for key, value in parameters.items():
        if key not in _GATEWAY_ONLY:
            tensor.parameters[key].CopyFrom(to_parameter(value))
    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BodyError(f"input {name}: binary_data_size must be a whole number")
        if offset + size > len(binary):
            raise BodyError(
                f"input {name}: binary_data_size is {size} but only {len(binary) - offset} "
                "bytes of binary data remain"
            )
        return tensor, binary[offset : offset + size], offset + size
    if "data" not in item:
        raise BodyError(f'input {name} needs "data" or a binary_data_size parameter')
    values = _flat(item["data"])
    if datatype == "BYTES":
        as_base64 = parameters.get("content_type") == "base64"
        return tensor, serialize_bytes(_bytes(v, name, as_base64) for v in values), offset
    if datatype == "FP32":
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise BodyError(f"input {name}: FP32 data must be numbers")
        return tensor, floats_to_raw(values), offset
    return tensor, None, offset  # the server names the datatype it expects


def _flat(data: object) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flat(item))
    return flat


def _bytes(value: object, name: str, as_base64: bool) -> bytes:
    if not isinstance(value, str):
        raise BodyError(f"input {name}: BYTES data must be strings, got {value!r}")
    if not as_base64:
        return value.encode("utf-8")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BodyError(f"input {name}: an element is not valid base64") from None
