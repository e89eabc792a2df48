"""Exports a model artifact to ONNX or TorchScript, and checks the file before offering it.

The check runs the exported file (onnxruntime for ONNX, `torch.jit.load` for TorchScript)
on deterministic generated images, normalised as the artifact says, in a batch of another
size than the export's example (so a batch size baked into the graph cannot pass), and
compares its logits with PyTorch's. Over `TOLERANCE` the export fails and no file is left;
a file is only ever written whole (a temporary file, then a rename).

The server never imports torch, so it runs this module as a process of its own:

    python -m engines.export --model PATH --format onnx --output PATH [--threads N]

which prints one JSON line on stdout: `{"ok": true, ...ExportResult}` or `{"ok": false,
"kind": "model" | "export", "error": "<sentence>"}` ("model": the file is not a usable
Tandem model; "export": the model could not be exported or failed the check). Whatever
the exporters print goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from engines.artifacts import ArtifactError, ModelArtifact, load_artifact
from engines.jobs import first_line

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
# The largest |logit difference| between an exported model and PyTorch that passes.
TOLERANCE = 1e-4
# The export traces with EXAMPLE_BATCH images and is checked with CHECK_BATCH.
EXAMPLE_BATCH = 2
CHECK_BATCH = 3
# The dynamo exporter (torch.export), not the legacy TorchScript-based one: the legacy one
# is deprecated (it warns on every call that it will be removed), although it was faster
# here (0.2-0.4 s against 2-8 s for resnet18 and mobilenet_v3_small at 32-224 px, on two
# cores); both matched PyTorch within 1.5e-6. Opset 18: the dynamo exporter builds at 18
# or above and its conversion down to 17 fails for these models (ONNX's Squeeze/Unsqueeze
# axes adapter); not its default (20 in torch 2.14), as 18 also loads in older runtimes
# (onnxruntime 1.14+, TensorRT 8.6+).
ONNX_OPSET = 18
# One protobuf holds at most 2 GiB; bigger models would need external data files.
MAX_ONNX_BYTES = 2**31 - 64 * 2**20
# Prefix of the metadata both formats carry: the artifact's description, as JSON values.
METADATA_PREFIX = "tandem."

Format = Literal["onnx", "torchscript"]


class ExportError(Exception):
    """An export that cannot be offered; the message reads as a sentence. `kind` is
    "model" for a file that is not a usable Tandem model, "export" for the rest."""

    def __init__(self, message: str, kind: Literal["model", "export"] = "export") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ExportResult:
    """A written and checked export."""

    path: str
    format: Format
    size_bytes: int
    # The largest |logit difference| from PyTorch on the check's images.
    max_abs_diff: float
    # The ONNX default-domain opset; 0 for TorchScript.
    opset: int
    seconds: float


def export_model(
    model_path: str, fmt: str, output: str, *, threads: int | None = None
) -> ExportResult:
    """Exports the artifact at `model_path` to `output` in format `fmt` on the CPU, checks
    it, and moves it into place; raises ExportError with a sentence otherwise."""
    started = time.perf_counter()
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        artifact = load_artifact(model_path, map_location="cpu")
        model = artifact.build_model()
    except ArtifactError as exc:
        raise ExportError(str(exc), kind="model") from None
    images = check_images(artifact, CHECK_BATCH)
    with torch.no_grad():
        expected = model(images)
    with _temporary_beside(output) as tmp:
        if fmt == "onnx":
            opset = _write_onnx(model, artifact, tmp)
            actual = _run_onnx(tmp, images, threads)
        else:
            opset = 0
            _write_torchscript(model, artifact, tmp)
            actual = _run_torchscript(tmp, images)
        diff = _max_abs_diff(expected, actual)
        if not diff <= TOLERANCE:  # NaN fails too
            raise ExportError(
                f"the {fmt} export of {artifact.architecture} differs from PyTorch by "
                f"{diff:.2e} (more than {TOLERANCE:.0e}) on the check images; nothing was written"
            )
        size = os.path.getsize(tmp)
        os.replace(tmp, output)
    return ExportResult(
        path=output,
        format="onnx" if fmt == "onnx" else "torchscript",
        size_bytes=size,
        max_abs_diff=diff,
        opset=opset,
        seconds=round(time.perf_counter() - started, 3),
    )


def check_images(artifact: ModelArtifact, batch: int) -> torch.Tensor:
    """`batch` deterministic images of the artifact's size, normalised with its mean and
    std: what a caller of the exported model feeds it."""
    generator = torch.Generator().manual_seed(0)
    size = artifact.image_size
    pixels = torch.rand(batch, 3, size, size, generator=generator)
    mean = torch.tensor(artifact.mean).view(1, 3, 1, 1)
    std = torch.tensor(artifact.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def metadata(artifact: ModelArtifact) -> dict[str, str]:
    """What an exported file says about itself, so it is usable without the artifact."""
    values: dict[str, object] = {
        "architecture": artifact.architecture,
        "classes": list(artifact.classes),
        "image_size": artifact.image_size,
        "mean": list(artifact.mean),
        "std": list(artifact.std),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
    }
    return {METADATA_PREFIX + key: json.dumps(value) for key, value in values.items()}


@contextlib.contextmanager
def _temporary_beside(output: str) -> Iterator[str]:
    """A temporary path in `output`'s folder (so the final rename stays on one
    filesystem), removed on the way out unless it was renamed into place."""
    directory = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {directory}: {exc.strerror}") from None
    tmp = os.path.join(directory, f".{os.path.basename(output)}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporters' deprecation notices (TorchScript is in maintenance) and tracer
    # warnings say nothing the check does not: the check is what decides.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", module=r"torch\.jit")  # TracerWarning
        yield


def _failed(fmt: str, artifact: ModelArtifact, exc: BaseException) -> ExportError:
    return ExportError(f"cannot export {artifact.architecture} to {fmt}: {first_line(exc)}")


def _write_onnx(model: torch.nn.Module, artifact: ModelArtifact, path: str) -> int:
    weight_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    if weight_bytes > MAX_ONNX_BYTES:
        raise ExportError(
            f"{artifact.architecture} has {weight_bytes / 2**30:.1f} GiB of weights; an ONNX "
            "file holds at most 2 GiB (use torchscript for this model)"
        )
    example = check_images(artifact, EXAMPLE_BATCH)
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
            assert program is not None  # with no file given, the exporter returns it
            program.model.metadata_props.update(metadata(artifact))
            program.save(path, external_data=False)
    except ExportError:
        raise
    except Exception as exc:  # torch.export's refusals are many and unnamed
        raise _failed("onnx", artifact, exc) from exc
    return _onnx_opset(path)


def _onnx_opset(path: str) -> int:
    import onnx

    proto = onnx.load(path, load_external_data=False)
    onnx.checker.check_model(proto)
    return max(
        (entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")),
        default=0,
    )


def _run_onnx(path: str, images: torch.Tensor, threads: int | None) -> torch.Tensor:
    import onnxruntime  # type: ignore[import-untyped]

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its notices are chatter here
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    return torch.from_numpy(logits)


def _write_torchscript(model: torch.nn.Module, artifact: ModelArtifact, path: str) -> None:
    # Traced, not scripted: tracing takes every model the zoo builds whatever Python its
    # forward uses, and a classifier's forward has no data-dependent branches; the check's
    # other batch size catches a shape the trace might have fixed.
    example = check_images(artifact, EXAMPLE_BATCH)
    try:
        with _quiet_exporter(), torch.no_grad():
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                model, example, check_trace=False
            )
            described = {key: json.loads(value) for key, value in metadata(artifact).items()}
            torch.jit.save(traced, path, _extra_files={"tandem.json": json.dumps(described)})
    except Exception as exc:
        raise _failed("torchscript", artifact, exc) from exc


def _run_torchscript(path: str, images: torch.Tensor) -> torch.Tensor:
    with _quiet_exporter(), torch.no_grad():
        loaded = torch.jit.load(path, map_location="cpu")  # type: ignore[no-untyped-call]
        output: torch.Tensor = loaded(images)
    return output


def _max_abs_diff(expected: torch.Tensor, actual: torch.Tensor) -> float:
    if expected.shape != actual.shape:
        raise ExportError(
            f"the export answers with shape {tuple(actual.shape)} where PyTorch gives "
            f"{tuple(expected.shape)}; nothing was written"
        )
    return float((expected.double() - actual.double()).abs().max())


# -- as a process of its own ----------------------------------------------------------


def _private_stdout() -> Callable[[str], None]:
    """Keeps fd 1 for the answer and sends everything else written there (the exporters
    print, and C++ libraries write to the descriptor directly) to stderr."""
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def write(line: str) -> None:
        answer.write(line + "\n")
        answer.flush()

    return write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines.export", description=__doc__)
    parser.add_argument("--model", required=True, help="the model artifact to export")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="the file to write")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads to use")
    parser.add_argument("--parent-pid", type=int, default=None, help="die with this process")
    args = parser.parse_args(argv)
    answer = _private_stdout()
    from engines.process import die_with_parent
    from engines.worker import lower_thread_priority

    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    # Before torch starts its threads, which inherit it: an export yields the CPU to
    # what someone waits on, as batch jobs do.
    lower_thread_priority()
    try:
        result = export_model(args.model, args.format, args.output, threads=args.threads)
    except ExportError as exc:
        answer(json.dumps({"ok": False, "kind": exc.kind, "error": str(exc)}))
        return 1
    except Exception as exc:  # a bug or a crash of a library: still a sentence
        traceback.print_exc()
        error = f"the export failed: {type(exc).__name__}: {first_line(exc)}"
        answer(json.dumps({"ok": False, "kind": "export", "error": error}))
        return 1
    answer(json.dumps({"ok": True, **asdict(result)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
