"""Prediction: decoding untrusted image bytes, and a Predictor whose answer for an image
does not depend on the batch it came in, over real (tiny) torchvision models."""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from engines import zoo
from engines.artifacts import ArtifactError, ModelArtifact, load_artifact, save_artifact
from engines.datasets import IMAGENET_MEAN, IMAGENET_STD, load_dataset
from engines.jobs import JobError, Prediction
from engines.predict import MAX_IMAGE_PIXELS, ImageError, Predictor, decode_image, from_path

CLASSES = ("blue", "green", "red")
IMAGE_SIZE = 32


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def picture(seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Image.Image:
    """A noisy image, different for each seed, so a model gives each its own answer."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB").convert(mode)


def png(seed: int = 0, size: tuple[int, int] = (40, 30)) -> bytes:
    return encode(picture(seed, size), "PNG")


def write_model(
    path: Path, model_name: str = "resnet18", classes: tuple[str, ...] = CLASSES
) -> Path:
    """A freshly built model saved as an artifact, its batch-norm statistics moved off
    their initial values so that eval and train mode really differ."""
    torch.manual_seed(0)
    model = zoo.build_model(model_name, len(classes), IMAGE_SIZE)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 + 0.5)
    save_artifact(
        str(path),
        model=model,
        architecture=model_name,
        classes=classes,
        image_size=IMAGE_SIZE,
        mean=(0.5, 0.4, 0.3),
        std=(0.25, 0.2, 0.3),
        epoch=1,
        metrics={},
    )
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    path = write_model(tmp_path_factory.mktemp("model") / "model.pt")
    return load_artifact(str(path))


@pytest.fixture(scope="module")
def predictor(artifact: ModelArtifact) -> Predictor:
    return Predictor(artifact, "cpu")


# --- decode_image ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_png_in_any_colour_mode_decodes_to_rgb(mode: str) -> None:
    image = decode_image(encode(picture(1, mode=mode), "PNG"))
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_jpeg_decodes_to_rgb() -> None:
    image = decode_image(encode(picture(2, mode="L"), "JPEG"))
    assert (image.mode, image.size) == ("RGB", (40, 30))


def truncated_png() -> bytes:
    data = png(3, (64, 64))
    return data[: len(data) // 2]


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header (IHDR, with a correct CRC) claims another size."""
    data = bytearray(png(4, (2, 2)))
    # Signature (8 bytes), IHDR length (4), "IHDR" (4), then width and height.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, I am text, not a picture", "not a PNG or JPEG image"),
        (encode(picture(5), "GIF"), "not a PNG or JPEG image"),
        (encode(picture(5), "BMP"), "not a PNG or JPEG image"),
        (truncated_png(), "image is truncated or corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a PNG or JPEG image|truncated or corrupt"),
        (encode(picture(6), "JPEG")[:200], "image is truncated or corrupt"),
        (png_claiming_size(20_000, 20_000), "image is too large: more than 50,000,000 pixels"),
    ],
    ids=["empty", "text", "gif", "bmp", "truncated-png", "png-garbage", "cut-jpeg", "bomb"],
)
def test_what_is_not_a_good_png_or_jpeg_is_an_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_the_pixel_limit_is_below_pillows_own() -> None:
    # Otherwise Pillow's guard (a warning, then an error) would speak before ours.
    assert Image.MAX_IMAGE_PIXELS is not None
    assert MAX_IMAGE_PIXELS <= Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="too large"):
        decode_image(png_claiming_size(MAX_IMAGE_PIXELS // 1000 + 1, 1000))


# --- Predictor ------------------------------------------------------------------------


def test_the_model_is_in_eval_mode(predictor: Predictor) -> None:
    assert not predictor.model.training
    assert all(not module.training for module in predictor.model.modules())


def test_an_image_gets_the_same_answer_alone_and_in_a_batch(predictor: Predictor) -> None:
    images = [png(seed, (30 + 7 * seed, 50 - 3 * seed)) for seed in range(6)]
    batched = predictor.predict_images(images, top_k=3)
    for image, together in zip(images, batched, strict=True):
        [alone] = predictor.predict_images([image], top_k=3)
        assert isinstance(alone, list)
        assert isinstance(together, list)
        assert [p.label for p in alone] == [p.label for p in together]
        assert [p.index for p in alone] == [p.index for p in together]
        for a, b in zip(alone, together, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-5)


def test_predictions_are_sorted_scores_capped_at_the_classes(predictor: Predictor) -> None:
    [answer] = predictor.predict_images([png(7)], top_k=10)
    assert isinstance(answer, list)
    assert len(answer) == len(CLASSES)
    assert all(isinstance(p, Prediction) and type(p.score) is float for p in answer)
    scores = [p.score for p in answer]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert sorted(p.index for p in answer) == [0, 1, 2]
    assert all(CLASSES[p.index] == p.label for p in answer)
    [top1] = predictor.predict_images([png(7)], top_k=1)
    assert top1 == answer[:1]


def test_bad_inputs_keep_their_place_among_good_ones(predictor: Predictor) -> None:
    images = [png(8), b"not an image", png(9), truncated_png(), png(8)]
    results = predictor.predict_images(images, top_k=2)
    assert [type(r) for r in results] == [list, ImageError, list, ImageError, list]
    assert results[0] == results[4]
    assert "not a PNG or JPEG" in str(results[1])
    assert "truncated or corrupt" in str(results[3])


def test_only_bad_inputs_or_none_need_no_model(predictor: Predictor) -> None:
    assert predictor.predict_images([], top_k=1) == []
    [result] = predictor.predict_images([b"GIF89a"], top_k=1)
    assert isinstance(result, ImageError)
    assert predictor.predict_batch(torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE), top_k=1) == []


def test_the_float32_override_is_undone_after_a_batch(predictor: Predictor) -> None:
    # A training job that runs next in the same worker keeps cuDNN's TF32 default.
    conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]
    before = conv.fp32_precision
    predictor.predict_images([png(11)], top_k=1)
    assert conv.fp32_precision == before


def test_top_k_must_be_positive(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        predictor.predict_batch(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE), top_k=0)


def test_preprocessing_is_trainings_with_the_artifacts_normalisation(
    artifact: ModelArtifact, tmp_path: Path
) -> None:
    # Training's loader with its (ImageNet) statistics, and a Predictor for an artifact
    # that records the same: the model must be fed the very same numbers.
    image = picture(10, (45, 33), mode="L")
    (tmp_path / "data" / "only").mkdir(parents=True)
    image.save(tmp_path / "data" / "only" / "a.png")
    trained_on, _ = load_dataset(str(tmp_path / "data"), IMAGE_SIZE, seed=0).dataset[0]
    imagenet = dataclasses.replace(artifact, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    fed = Predictor(imagenet, "cpu").preprocess(decode_image(encode(image, "PNG")))
    assert torch.equal(fed, trained_on)
    # And a Predictor normalises with its own artifact's numbers, not ImageNet's.
    own = Predictor(artifact, "cpu").preprocess(decode_image(encode(image, "PNG")))
    assert not torch.allclose(own, fed)


def test_a_mobilenet_is_batch_independent_too(tmp_path: Path) -> None:
    # MobileNetV3 has dropout and hardswish/squeeze-excite: more to get wrong than resnet.
    path = write_model(tmp_path / "m.pt", model_name="mobilenet_v3_small")
    predictor = from_path(str(path), "cpu")
    images = [png(seed) for seed in range(4)]
    together = predictor.predict_images(images, top_k=3)
    alone = [predictor.predict_images([image], top_k=3)[0] for image in images]
    for a, b in zip(alone, together, strict=True):
        assert isinstance(a, list)
        assert isinstance(b, list)
        assert [p.label for p in a] == [p.label for p in b]
        assert [p.score for p in a] == pytest.approx([p.score for p in b], abs=1e-5)


def test_from_path_refuses_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"certainly not a zip file")
    with pytest.raises(ArtifactError, match="cannot load model file"):
        from_path(str(bad), "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_on_a_cpu_machine_says_so(artifact: ModelArtifact) -> None:
    with pytest.raises(JobError, match="no usable CUDA GPU"):
        Predictor(artifact, "cuda:0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: CUDA is unavailable here")
def test_on_a_gpu_an_image_gets_the_same_answer_alone_and_in_a_batch(
    artifact: ModelArtifact,
) -> None:
    gpu = Predictor(artifact, "cuda:0")
    assert next(gpu.model.parameters()).device == torch.device("cuda", 0)
    images = [png(seed) for seed in range(8)]
    together = gpu.predict_images(images, top_k=3)
    for image, b in zip(images, together, strict=True):
        [a] = gpu.predict_images([image], top_k=3)
        assert isinstance(a, list)
        assert isinstance(b, list)
        assert [p.label for p in a] == [p.label for p in b]
        assert [p.score for p in a] == pytest.approx([p.score for p in b], abs=1e-5)
