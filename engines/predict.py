"""Prediction with a trained model: image bytes or tensors in, top-k labels (and, when
asked, each image's whole probability vector) out.

`Predictor` holds one model artifact's network on one device and answers batches. It
preprocesses with `datasets.image_transform` and the artifact's own size and
normalisation, so a model sees exactly the numbers it saw in training. It runs the network
in eval mode under `torch.inference_mode`, so an image's answer does not depend on the
other images in its batch: batch norm uses its running statistics, dropout is off.

`decode_image` is the gate for untrusted bytes (the online Predict RPC): PNG or JPEG only,
with a cap on the pixel count so a small file cannot expand into gigabytes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import torch
from PIL import Image, UnidentifiedImageError

from engines.artifacts import ModelArtifact, load_artifact, load_artifact_bytes
from engines.datasets import image_transform
from engines.devices import resolve_device
from engines.jobs import Pixels, Prediction, first_line
from engines.prepared_model import PreparedModel, prepare_for_inference

# 50 megapixels covers a 48 MP camera photo; decoded to RGB that is 150 MB, which is as
# much as one request should be able to make a worker allocate. It is below Pillow's own
# default (89 MP, a warning, then an error at twice that), so this check speaks first.
MAX_IMAGE_PIXELS = 50_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


class ImageError(ValueError):
    """Input that is not a usable image; the message reads as a sentence."""


def _pixel_limit() -> int:
    # Whoever lowered Pillow's limit in this process meant it; never allow more than it.
    pil_limit = Image.MAX_IMAGE_PIXELS
    return MAX_IMAGE_PIXELS if pil_limit is None else min(MAX_IMAGE_PIXELS, int(pil_limit))


def _open_rgb(source: IO[bytes], formats: tuple[str, ...] | None, unknown: str) -> Image.Image:
    """Decode `source` to RGB the way training's loader does (open, then convert)."""
    try:
        # Image.open reads only the header, so the size is known before any pixel is.
        with Image.open(source, formats=formats) as image:
            width, height = image.size
            limit = _pixel_limit()
            if width * height > limit:
                raise ImageError(
                    f"image is too large: {width}x{height} is {width * height:,} pixels, "
                    f"over the limit of {limit:,}"
                )
            # convert() loads the pixels: truncated or corrupt data fails here.
            return image.convert("RGB")
    except (ImageError, MemoryError):
        # A MemoryError is this worker's state, not the image's fault: let it propagate.
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (its warning is an exception when warnings are errors).
        raise ImageError(
            f"image is too large: more than {_pixel_limit():,} pixels ({first_line(exc)})"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(unknown) from None
    except Exception as exc:
        # Pillow's decoders fail in many ways on bad data (OSError for truncation,
        # SyntaxError for broken PNG chunks, ValueError, struct.error, zlib.error...); to
        # a caller they all mean the same thing.
        raise ImageError(f"image is truncated or corrupt: {first_line(exc)}") from None


def decode_image(data: bytes) -> Image.Image:
    """The RGB image encoded in `data`, which must be a PNG or a JPEG.

    Raises ImageError for anything else (GIF, BMP, text...), for truncated or corrupt
    data, and for an image of more than MAX_IMAGE_PIXELS pixels.
    """
    if not data:
        raise ImageError("the image is empty (0 bytes); expected a PNG or JPEG image")
    # The signature check comes first so no other Pillow decoder ever sees these bytes:
    # each format accepted is one more parser exposed to untrusted input.
    if not data.startswith((_PNG_SIGNATURE, _JPEG_SIGNATURE)):
        raise ImageError("the data is not a PNG or JPEG image")
    return _open_rgb(io.BytesIO(data), ("PNG", "JPEG"), "the data is not a PNG or JPEG image")


def open_image(path: str) -> Image.Image:
    """The RGB image in the file at `path`, in any format training reads.

    Batch inference reads dataset files with this rather than `decode_image`: a dataset
    that trained (BMP, WebP, TIFF are all ImageFolder formats) must also infer. Raises
    ImageError for an unreadable, corrupt or oversized file.
    """
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; Image.open reads it lazily
    except OSError as exc:
        raise ImageError(f"cannot read the file: {exc.strerror or exc}") from None
    with file:
        return _open_rgb(file, None, "the file is not an image format that can be read")


@contextlib.contextmanager
def full_float32_convolutions() -> Iterator[None]:
    # cuDNN runs float32 convolutions in TF32 (10 mantissa bits) by default on Ampere and
    # later, and picks its algorithm by batch size: with TF32 one image can score ~1e-3
    # differently alone and in a batch. IEEE float32 keeps that to rounding noise, and
    # inference can afford it. The per-operator setting (torch's current TF32 API; mixing
    # it with the legacy `allow_tf32` flag is an error) is restored on exit, so a training
    # job that runs next in this worker process keeps its default.
    # torch.backends.cudnn is a module object swapped for a class at import: mypy can't see it.
    conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]
    previous = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = previous


class Predictor:
    """One artifact's model, loaded once on one device, answering batches of images."""

    def __init__(self, artifact: ModelArtifact, device: str, *, prepare: bool = True) -> None:
        """Build the model on `device` (raises JobError for a device this host lacks, and
        ArtifactError when the weights do not fit the architecture).

        `prepare` folds batch norm and picks channels-last where that answers alike
        (`engines.prepared_model`); False runs the network as built, as a plain PyTorch
        deployment would (the benchmarks' peers)."""
        self.artifact = artifact
        self.device = resolve_device(device)
        self.classes: tuple[str, ...] = artifact.classes

        # Eval mode is what makes answers batch-independent: in train mode batch norm
        # would normalise each image with its batch's statistics. Built on the CPU and
        # prepared there, so the device receives only the network it will run.
        built = artifact.build_model().cpu().eval()
        if prepare:
            prepared = prepare_for_inference(built, self.device, artifact.image_size)
        else:
            prepared = PreparedModel(built.to(self.device), torch.contiguous_format, folded=False)
        self.model: torch.nn.Module = prepared.module
        self.preparation = prepared
        self.transform: Callable[[Image.Image], torch.Tensor] = image_transform(
            artifact.image_size, artifact.mean, artifact.std
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """An RGB image as the model's input: a normalised float CHW tensor (on the CPU)."""
        tensor = self.transform(image)
        if not isinstance(tensor, torch.Tensor):  # image_transform ends in Normalize.
            raise TypeError(f"the transform returned {type(tensor).__name__}, not a tensor")
        return tensor

    def pixels(self, pixels: Pixels) -> torch.Tensor:
        """A caller's preprocessed image as the model's input (on the CPU); ImageError
        when it is not (3, H, W) float32 at the model's size, or holds NaN or infinity."""
        size = self.artifact.image_size
        expected = 3 * size * size * 4
        if len(pixels.data) != expected:
            raise ImageError(
                f"the tensor has {len(pixels.data)} bytes; a 3x{size}x{size} float32 image "
                f"has {expected}"
            )
        # A copy: torch must own writable memory, and the message's bytes are not.
        tensor = torch.frombuffer(bytearray(pixels.data), dtype=torch.float32)
        if not bool(torch.isfinite(tensor).all()):
            raise ImageError("the tensor holds NaN or infinite values")
        return tensor.view(3, size, size)

    def predict_batch(self, batch: torch.Tensor, top_k: int) -> list[list[Prediction]]:
        """Top-k predictions (most likely first) for each image of an NCHW `batch`.

        `batch` holds preprocessed images (see `preprocess`) on any device. `top_k` above
        the number of classes gives every class.
        """
        return self.score_batch(batch, top_k, probabilities=False)[0]

    def score_batch(
        self, batch: torch.Tensor, top_k: int, *, probabilities: bool
    ) -> tuple[list[list[Prediction]], list[bytes]]:
        """`predict_batch`'s top-k, and with `probabilities` each image's softmax over
        every class as float32 bytes (the same numbers the top-k scores come from)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        if batch.ndim != 4:
            raise ValueError(f"expected a batch of shape (N, 3, H, W), not {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            return [], []
        k = min(top_k, self.num_classes)
        vectors: list[bytes] = []
        with full_float32_convolutions(), torch.inference_mode():
            logits = self.model(
                batch.to(
                    self.device, memory_format=self.preparation.memory_format, non_blocking=True
                )
            )
            if not isinstance(logits, torch.Tensor):
                # zoo builds every model with a single head; anything else is a zoo bug.
                raise TypeError(f"{self.artifact.architecture} returned {type(logits).__name__}")
            # Softmax in float32 even if a model ever computes in lower precision.
            softmax = torch.softmax(logits.float(), dim=1)
            scores, indices = softmax.topk(k, dim=1)
            # One device-to-host copy for the whole batch, not one per number.
            rows = zip(scores.cpu().tolist(), indices.cpu().tolist(), strict=True)
            if probabilities:
                vectors = [row.numpy().tobytes() for row in softmax.cpu().contiguous()]
        return [
            [
                Prediction(label=self.classes[index], score=float(score), index=int(index))
                for score, index in zip(row_scores, row_indices, strict=True)
            ]
            for row_scores, row_indices in rows
        ], vectors

    def predict_images(
        self, images: Sequence[bytes | Pixels], top_k: int
    ) -> list[list[Prediction] | ImageError]:
        """Predictions for each encoded image (PNG or JPEG) or preprocessed tensor, in
        input order.

        An input that does not decode gets its ImageError in its place; the others are
        answered together in one forward pass.
        """
        return self.answer_images(images, top_k, probabilities=False)[0]

    def answer_images(
        self, images: Sequence[bytes | Pixels], top_k: int, *, probabilities: bool
    ) -> tuple[list[list[Prediction] | ImageError], list[bytes]]:
        """`predict_images`, and with `probabilities` each input's probability vector
        (see `score_batch`; empty bytes for an input that did not decode)."""
        results: list[list[Prediction] | ImageError] = []
        tensors: list[torch.Tensor] = []
        good: list[int] = []
        for position, data in enumerate(images):
            try:
                # Preprocess at once so a large decoded image is freed before the next.
                tensor = (
                    self.pixels(data)
                    if isinstance(data, Pixels)
                    else self.preprocess(decode_image(data))
                )
            except ImageError as exc:
                results.append(exc)
                continue
            tensors.append(tensor)
            good.append(position)
            results.append([])
        vectors = [b""] * len(images) if probabilities else []
        if tensors:
            answers, scored = self.score_batch(
                torch.stack(tensors), top_k, probabilities=probabilities
            )
            for number, (position, predictions) in enumerate(zip(good, answers, strict=True)):
                results[position] = predictions
                if probabilities:
                    vectors[position] = scored[number]
        return results, vectors


def from_path(model_path: str, device: str, *, prepare: bool = True) -> Predictor:
    """A Predictor for the artifact at `model_path` on `device`.

    Raises ArtifactError for a file that is not a usable artifact, JobError for a device
    this machine lacks.
    """
    # Loaded on the CPU and moved once the model is built: loading straight onto a GPU
    # would hold the weights there twice while the model is assembled.
    return Predictor(load_artifact(model_path, map_location="cpu"), device, prepare=prepare)


def from_bytes(data: bytes, model_path: str, device: str) -> Predictor:
    """A Predictor for the artifact whose file (`model_path`, for messages) holds `data`:
    how a model reaches a machine that cannot read the server's disk."""
    return Predictor(load_artifact_bytes(data, model_path, map_location="cpu"), device)
