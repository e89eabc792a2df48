"""The Open Inference Protocol's tensors as Tandem's models take and give them.

A model takes one input: `image_bytes`, a BYTES tensor of encoded images (PNG or JPEG;
shape [N] or [N, 1]), or `images`, an FP32 tensor [N, 3, S, S] already normalised with
the model's mean and std (S is its image size). It gives one output, `probabilities`:
FP32 [N, classes]; with the classification extension (`classification: k` on the
requested output) a BYTES tensor [N, k] of "score:index:label" strings instead, as
Triton words them. Raw contents are little-endian; a BYTES element is its length (4
bytes, little-endian) followed by its bytes. Both the servicer and the REST gateway read
and write tensors with these functions; every refusal is a sentence (ValueError).
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from engines.jobs import Pixels, Prediction
from tandem.inference import open_inference_pb2 as oip

# Images one ModelInfer call may carry (a batch of them: the serving path batches
# across calls anyway).
MAX_IMAGES_PER_CALL = 1024
ENCODED_INPUT = "image_bytes"
PIXELS_INPUT = "images"
OUTPUT = "probabilities"
PLATFORM = "pytorch_torchvision"
# The protocol's extensions Tandem supports (ServerMetadata says so).
EXTENSIONS = ("classification", "binary_tensor_data", "parameters")

ParameterValue = bool | int | float | str

_LENGTH = struct.Struct("<I")
_BIG_ENDIAN = sys.byteorder == "big"


def serialize_bytes(items: Iterable[bytes]) -> bytes:
    """BYTES elements as raw contents: each one's length, then its bytes."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def deserialize_bytes(data: bytes, what: str) -> list[bytes]:
    """Raw BYTES contents as their elements; ValueError naming `what` if they are cut."""
    items: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ValueError(f"{what}: the BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise ValueError(
                f"{what}: a BYTES element says it has {length} bytes but only "
                f"{len(data) - offset} remain"
            )
        items.append(data[offset : offset + length])
        offset += length
    return items


def floats_to_raw(values: Iterable[float]) -> bytes:
    """FP32 values as little-endian raw contents."""
    packed = array.array("f", values)
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def raw_to_floats(data: bytes) -> list[float]:
    """Little-endian FP32 raw contents as numbers."""
    unpacked = array.array("f")
    unpacked.frombytes(data)
    if _BIG_ENDIAN:
        unpacked.byteswap()
    return unpacked.tolist()


def parameter_value(parameter: oip.InferParameter) -> ParameterValue | None:
    """The value an InferParameter holds, of whichever type it has (None if unset)."""
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def to_parameter(value: ParameterValue) -> oip.InferParameter:
    """A JSON value (bool, int, float or string) as an InferParameter."""
    if isinstance(value, bool):
        return oip.InferParameter(bool_param=value)
    if isinstance(value, int):
        if value >= 2**63:
            return oip.InferParameter(uint64_param=value)
        return oip.InferParameter(int64_param=value)
    if isinstance(value, float):
        return oip.InferParameter(double_param=value)
    return oip.InferParameter(string_param=value)


def whole_number(value: ParameterValue | None, what: str) -> int | None:
    """An integer parameter (None when absent); ValueError for any other type."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def _input_kind(tensor: oip.ModelInferRequest.InferInputTensor) -> str:
    """Which of the two inputs `tensor` is: by its name, or, for a name of the caller's
    own (KServe's examples call a model's one input `input-0`), by its datatype, since a
    model has one input of each. A known name with the other datatype stays an error."""
    if tensor.name in (ENCODED_INPUT, PIXELS_INPUT):
        return tensor.name
    return {"BYTES": ENCODED_INPUT, "FP32": PIXELS_INPUT}.get(tensor.datatype, "")


@dataclass(frozen=True)
class ModelShape:
    """What a model's tensors look like: its image size and its class labels."""

    image_size: int
    classes: tuple[str, ...]

    def inputs(self) -> list[oip.ModelMetadataResponse.TensorMetadata]:
        size = self.image_size
        return [
            oip.ModelMetadataResponse.TensorMetadata(
                name=ENCODED_INPUT, datatype="BYTES", shape=[-1]
            ),
            oip.ModelMetadataResponse.TensorMetadata(
                name=PIXELS_INPUT, datatype="FP32", shape=[-1, 3, size, size]
            ),
        ]

    def outputs(self) -> list[oip.ModelMetadataResponse.TensorMetadata]:
        return [
            oip.ModelMetadataResponse.TensorMetadata(
                name=OUTPUT, datatype="FP32", shape=[-1, len(self.classes)]
            )
        ]

    def _takes(self) -> str:
        size = self.image_size
        return (
            f"{ENCODED_INPUT} (BYTES [N], PNG or JPEG files) or "
            f"{PIXELS_INPUT} (FP32 [N, 3, {size}, {size}], normalised)"
        )

    def read_inputs(self, request: oip.ModelInferRequest) -> list[bytes | Pixels]:
        """The request's images, one item each; ValueError says what is wrong."""
        if len(request.inputs) != 1:
            raise ValueError(f"give exactly one input, {self._takes()}; got {len(request.inputs)}")
        tensor = request.inputs[0]
        if request.raw_input_contents and len(request.raw_input_contents) != 1:
            raise ValueError(
                f"raw_input_contents has {len(request.raw_input_contents)} entries for 1 input"
            )
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        if raw is not None and tensor.HasField("contents"):
            raise ValueError(
                f"input {tensor.name}: give its data in contents or in raw_input_contents, not both"
            )
        shape = list(tensor.shape)
        if shape and shape[0] > MAX_IMAGES_PER_CALL:
            # Each image becomes a pending request of the serving path: a message of
            # millions of empty elements must not become millions of them.
            raise ValueError(
                f"input {tensor.name} has {shape[0]} images; a call may carry at most "
                f"{MAX_IMAGES_PER_CALL}"
            )
        kind = _input_kind(tensor)
        if kind == ENCODED_INPUT:
            self._check_type(tensor, "BYTES")
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
                raise ValueError(
                    f"input {tensor.name} must have shape [N] or [N, 1] with N >= 1, got {shape}"
                )
            items = (
                deserialize_bytes(raw, f"input {tensor.name}")
                if raw is not None
                else list(tensor.contents.bytes_contents)
            )
            if len(items) != shape[0]:
                raise ValueError(
                    f"input {tensor.name} has shape {shape} but holds {len(items)} elements"
                )
            return list(items)
        if kind == PIXELS_INPUT:
            self._check_type(tensor, "FP32")
            size = self.image_size
            if len(shape) != 4 or shape[1:] != [3, size, size] or shape[0] < 1:
                raise ValueError(
                    f"input {tensor.name} must have shape [N, 3, {size}, {size}] with N >= 1 "
                    f"(this model's image size is {size}), got {shape}"
                )
            data = raw if raw is not None else floats_to_raw(tensor.contents.fp32_contents)
            per_image = 3 * size * size * 4
            if len(data) != shape[0] * per_image:
                raise ValueError(
                    f"input {tensor.name} has shape {shape}, which needs "
                    f"{shape[0] * per_image} bytes of FP32 data, but holds {len(data)}"
                )
            return [
                Pixels(data[start : start + per_image]) for start in range(0, len(data), per_image)
            ]
        raise ValueError(f"unknown input {tensor.name!r}; the model takes {self._takes()}")

    @staticmethod
    def _check_type(tensor: oip.ModelInferRequest.InferInputTensor, datatype: str) -> None:
        if tensor.datatype != datatype:
            raise ValueError(
                f"input {tensor.name} must be {datatype}, got {tensor.datatype or 'no datatype'}"
            )

    def classification(self, request: oip.ModelInferRequest) -> int:
        """The k of the classification extension on the requested output, or 0 for the
        probabilities; ValueError for an unknown output or a bad k."""
        if not request.outputs:
            return 0
        if len(request.outputs) != 1 or request.outputs[0].name != OUTPUT:
            names = ", ".join(repr(output.name) for output in request.outputs)
            raise ValueError(f"unknown output {names}; the model gives one output, {OUTPUT}")
        wanted = request.outputs[0].parameters
        k = (
            whole_number(parameter_value(wanted["classification"]), "classification")
            if "classification" in wanted
            else 0
        )
        if k is None or k == 0:
            return 0
        if k < 0:
            raise ValueError(f"classification must be a positive integer, got {k}")
        return min(k, len(self.classes))


def probabilities_output(
    vectors: Sequence[bytes], classes: int
) -> tuple[oip.ModelInferResponse.InferOutputTensor, bytes]:
    """The FP32 [N, classes] output and its raw contents."""
    tensor = oip.ModelInferResponse.InferOutputTensor(
        name=OUTPUT, datatype="FP32", shape=[len(vectors), classes]
    )
    return tensor, b"".join(vectors)


def classification_output(
    answers: Sequence[Sequence[Prediction]], k: int
) -> tuple[oip.ModelInferResponse.InferOutputTensor, bytes]:
    """The BYTES [N, k] output of "score:index:label" strings (Triton's wording: the score
    with six decimals) and its raw contents."""
    tensor = oip.ModelInferResponse.InferOutputTensor(
        name=OUTPUT, datatype="BYTES", shape=[len(answers), k]
    )
    words = (
        f"{p.score:f}:{p.index}:{p.label}".encode() for predictions in answers for p in predictions
    )
    return tensor, serialize_bytes(words)


def request_parameters(
    parameters: Mapping[str, oip.InferParameter],
) -> dict[str, ParameterValue | None]:
    """A parameters map as plain values."""
    return {key: parameter_value(value) for key, value in parameters.items()}
