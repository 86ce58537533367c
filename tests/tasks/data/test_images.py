"""Image folders (`--dataset DIR`): decoded through a DataLoader, split stratified, refused in one line when bad;
pre-cached as tensors or streamed (`--image-cache`), with the same splits, preprocessing and trained weights."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tasks.data import images
from tasks.data.datasets import ImageOptions, load_cached, outputs, prepare, preprocessor_from_dict
from tasks.data.images import check_image_cache
from tasks.models.evaluate import quality
from tasks.models.train import TrainConfig, fit
from thresholds.energy.request import LoopRequest, parse_size
from thresholds.errors import InputError
from thresholds.request import Naming, parse


def _folder(
    root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 10), mode: str = "L", suffix: str = ".png"
) -> Path:
    """`classes[name]` images per class; each class has its own brightness so a model could tell them apart."""
    rng = np.random.default_rng(0)
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            pixels = np.clip(rng.normal(40 + 60 * c, 20, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / name / f"{i}{suffix}")
    return root


def _prepare(root: Path, tmp_path: Path, **kw: object) -> object:
    return load_cached(str(prepare(str(root), tmp_path / "cache", **kw)))  # type: ignore[arg-type]


def test_a_greyscale_folder_becomes_shaped_standardised_tensors_with_stratified_splits(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"cat": 30, "dog": 20, "eel": 25})
    data = _prepare(root, tmp_path)
    assert data.class_labels == ("cat", "dog", "eel") and data.n_classes == 3 and data.task == "classification"  # type: ignore[attr-defined]
    assert data.input_shape == (1, 10, 12) and data.x_train.shape[1:] == (1, 10, 12)  # type: ignore[attr-defined]
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 75  # type: ignore[attr-defined]
    for split in ("y_train", "y_val", "y_test"):
        assert set(getattr(data, split).tolist()) == {0, 1, 2}, split  # stratified: every class in every split
    assert abs(float(data.x_train.mean())) < 1e-4 and float(data.x_train.std()) == pytest.approx(1.0, abs=1e-3)  # type: ignore[attr-defined]
    # Deterministic: the same folder and seed give the same cache and split.
    again = load_cached(str(prepare(str(root), tmp_path / "cache2")))
    assert torch.equal(again.y_test, data.y_test) and torch.equal(again.x_test, data.x_test)  # type: ignore[attr-defined,arg-type]
    pre = data.preprocessing  # type: ignore[attr-defined]
    assert (
        pre["channels"] == 1
        and (pre["height"], pre["width"]) == (10, 12)
        and pre["class_labels"] == ["cat", "dog", "eel"]
    )


def test_the_raw_example_goes_through_the_recorded_preprocessing_to_the_cached_test_inputs(tmp_path: Path) -> None:
    data = _prepare(_folder(tmp_path / "imgs", {"a": 12, "b": 12}), tmp_path)
    pre = preprocessor_from_dict(data.preprocessing)  # type: ignore[attr-defined]
    frame = pd.DataFrame.from_records(list(data.raw_example), columns=pre.input_columns)  # type: ignore[attr-defined]
    x = torch.from_numpy(pre.transform(frame)).reshape(len(frame), *pre.sample_shape)
    assert torch.allclose(x, data.x_test[: len(frame)], atol=1e-5)  # type: ignore[attr-defined]
    assert images.ImagePreprocessor.from_dict(pre.to_dict()) == pre


def test_colour_and_jpeg_files_give_three_channels(tmp_path: Path) -> None:
    data = _prepare(_folder(tmp_path / "imgs", {"a": 12, "b": 12}, mode="RGB", suffix=".jpg"), tmp_path)
    assert data.input_shape == (3, 10, 12)  # type: ignore[attr-defined]
    mixed = _folder(tmp_path / "mixed", {"a": 12, "b": 12})
    _folder(mixed, {"c": 12}, mode="RGB")
    data = _prepare(mixed, tmp_path)
    assert data.input_shape == (3, 10, 12) and any("all read as RGB" in n for n in data.notes)  # type: ignore[attr-defined]


def test_decoding_with_worker_processes_gives_the_same_tensor(tmp_path: Path) -> None:
    folder = images.scan(_folder(tmp_path / "imgs", {"a": 40, "b": 40}))
    serial = images.decode(folder.files, 1, folder.height, folder.width, folder.root, workers=0)
    parallel = images.decode(folder.files, 1, folder.height, folder.width, folder.root, workers=2)
    assert serial.dtype == torch.uint8 and serial.shape == (80, 1, 10, 12) and torch.equal(serial, parallel)
    assert int(serial[0, 0, 0, 0]) == int(np.asarray(Image.open(folder.files[0]))[0, 0])


def test_mixed_sizes_are_refused_unless_a_size_is_given(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 12, "b": 12})
    Image.fromarray(np.zeros((20, 16), dtype=np.uint8)).save(root / "b" / "odd.png")
    with pytest.raises(InputError) as err:
        prepare(str(root), tmp_path / "cache")
    assert (
        "image size = '20x16 (b/odd.png)': expected every image 10x12 like 24 of 25 files, or --image-size HxW"
        in str(err.value)
    )
    data = _prepare(root, tmp_path, folder=ImageOptions(size=(8, 8)))
    assert data.input_shape == (1, 8, 8) and any("resized 25 of 25 images to 8x8" in n for n in data.notes)  # type: ignore[attr-defined]


def test_samples_takes_a_stratified_subset(tmp_path: Path) -> None:
    data = _prepare(_folder(tmp_path / "imgs", {"a": 30, "b": 30}), tmp_path, samples=24)
    y = torch.cat([data.y_train, data.y_val, data.y_test])  # type: ignore[attr-defined]
    assert len(y) == 24 and int((y == 0).sum()) == 12


def _one_class(root: Path) -> None:
    _folder(root, {"only": 25})


def _empty_class(root: Path) -> None:
    _folder(root, {"a": 12, "b": 12})
    (root / "c").mkdir()


def _text_file(root: Path) -> None:
    _folder(root, {"a": 12, "b": 12})
    (root / "a" / "notes.txt").write_text("not an image")


def _garbage_png(root: Path) -> None:
    _folder(root, {"a": 12, "b": 12})
    (root / "b" / "3.png").write_bytes(b"\x00garbage, not a PNG" * 10)


def _truncated_png(root: Path) -> None:
    _folder(root, {"a": 12, "b": 12})
    data = (root / "a" / "5.png").read_bytes()
    (root / "a" / "5.png").write_bytes(data[: len(data) // 2])  # a valid header, then the data stops


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_one_class, "class folders = ['only']: expected at least 2 subfolders, one per class"),
        (_empty_class, "class folder = 'c': expected at least one PNG or JPEG image (it is empty)"),
        (_text_file, "file = 'a/notes.txt': expected only PNG or JPEG images"),
        (_garbage_png, "file = 'b/3.png': expected a readable PNG or JPEG image (UnidentifiedImageError)"),
        (_truncated_png, "file = 'a/5.png': expected a readable PNG or JPEG image (OSError"),
    ],
    ids=["one class", "empty class", "non-image file", "corrupt file", "truncated file"],
)
def test_a_bad_folder_is_one_line_naming_what_is_wrong(tmp_path: Path, make: object, needle: str) -> None:
    root = tmp_path / "imgs"
    make(root)  # type: ignore[operator]
    with pytest.raises(InputError) as err:
        prepare(str(root), tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"dataset {root}: ") and needle in message, message


@pytest.mark.parametrize(("value", "expected"), [("32x24", (32, 24)), ("28", (28, 28))])
def test_image_size_option(value: str, expected: tuple[int, int]) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["32by32", "0x4", "x", "5000x5000"])
def test_bad_image_size_is_one_line(value: str) -> None:
    with pytest.raises(InputError, match=r"--image-size = .*expected HxW"):
        parse(LoopRequest, {"scenario": "dev-cpu", "dataset": "pics", "image_size": value}, Naming.FLAG)


def test_files_to_score_are_decoded_as_the_model_was_trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pre = images.ImagePreprocessor(1, 8, 8, [0.5], [0.25], ["a", "b"])
    source = _folder(
        tmp_path / "new", {"x": 3}, size=(16, 16), mode="RGB"
    )  # colour and larger than the model's 8x8 greyscale
    files = images.files_to_score(source)
    (frame,) = list(images.pixel_frames(files, pre, source, rows=64))
    assert frame.shape == (3, 64) and list(frame.columns[:2]) == ["pixel_0", "pixel_1"]
    assert float(frame.to_numpy().max()) <= 255 and float(frame.to_numpy().min()) >= 0
    # A chunk at a time, in file order: the same pixels as the whole folder at once.
    chunked = list(images.pixel_frames(files, pre, source, rows=2))
    monkeypatch.setattr(images, "DECODE_BATCH", 1)  # chunks gathered from several decoded batches
    gathered = list(images.pixel_frames(files, pre, source, rows=2))
    for parts in (chunked, gathered):
        assert [len(c) for c in parts] == [2, 1]
        pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), frame)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="found none"):
        images.files_to_score(tmp_path / "nothing")


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(120, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 3)
    )


def test_a_streamed_folder_has_the_memory_caches_splits_labels_and_preprocessing(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"cat": 30, "dog": 20, "eel": 25})
    memory, streamed = (
        _prepare(root, tmp_path, folder=ImageOptions(cache="memory")),
        _prepare(root, tmp_path, folder=ImageOptions(cache="stream")),
    )
    assert isinstance(memory.x_train, torch.Tensor) and isinstance(streamed.x_train, images.StreamedSplit)  # type: ignore[attr-defined]
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(memory, f"y_{split}"), getattr(streamed, f"y_{split}")), split
        assert len(getattr(streamed, f"x_{split}")) == len(getattr(memory, f"x_{split}")), split
    m, s = memory.preprocessing, streamed.preprocessing  # type: ignore[attr-defined]
    assert np.allclose(m["mean"], s["mean"], rtol=0, atol=1e-6) and np.allclose(m["std"], s["std"], rtol=0, atol=1e-6)
    assert m["mean"] != [0.0] and (m["channels"], m["height"], m["width"], m["class_labels"]) == (
        s["channels"],
        s["height"],
        s["width"],
        s["class_labels"],
    )
    assert streamed.raw_example == memory.raw_example and any(
        "image cache: stream (--image-cache stream)" in n for n in streamed.notes
    )  # type: ignore[attr-defined]
    # The streamed inputs are the cached ones: indexed, sliced, or chunk by chunk through a model.
    index = torch.tensor([3, 0, 7])
    assert torch.equal(streamed.x_test[index], memory.x_test[index]) and torch.equal(
        streamed.x_val[:4], memory.x_val[:4]
    )  # type: ignore[attr-defined]
    net = _net().eval()
    with torch.no_grad():
        assert torch.allclose(outputs(net, streamed.x_val, chunk=4), net(memory.x_val), atol=1e-6)  # type: ignore[attr-defined]
    assert quality(net, streamed) == quality(net, memory)  # type: ignore[arg-type]
    # A pass that starts while another holds the split's workers (a nested loop, a second thread) gets its own.
    outer = streamed.x_val.batches(torch.arange(len(streamed.x_val)), 5)  # type: ignore[attr-defined]
    _, first = next(outer)
    assert torch.equal(torch.cat(list(streamed.x_val.chunks(3))), memory.x_val)  # type: ignore[attr-defined]
    assert torch.equal(torch.cat([first, *(inputs for _, inputs in outer)]), memory.x_val)  # type: ignore[attr-defined]


def test_training_on_a_streamed_folder_gives_the_memory_caches_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _folder(tmp_path / "imgs", {"cat": 30, "dog": 20, "eel": 25})
    memory, stream_path = (
        _prepare(root, tmp_path, folder=ImageOptions(cache="memory")),
        prepare(str(root), tmp_path / "cache", folder=ImageOptions(cache="stream")),
    )
    monkeypatch.setattr(images, "default_workers", lambda n: 2)  # worker processes even for this small folder
    streamed = load_cached(str(stream_path))
    assert isinstance(streamed.x_train, images.StreamedSplit) and streamed.x_train.workers == 2
    cfg = TrainConfig(max_epochs=2, early_stopping=False, batch_size=8, seed=3)
    a, b = _net(), _net()
    report_a, report_b = fit(a, memory, cfg), fit(b, streamed, cfg)  # type: ignore[arg-type]  # `memory`: `_prepare`'s object
    # The same seeded batch order, the same float32 inputs: the same weights, bit for bit (dropout included,
    # since the loader's worker seeds come from its own generator, not torch's global one).
    assert report_a.train_losses == report_b.train_losses
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert report_b.val_losses == pytest.approx(
        report_a.val_losses, abs=1e-6
    )  # validation in chunks: the same loss to float rounding


def ce_step(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A user's training step over an image folder's (x, y) batches."""
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def test_a_training_step_on_a_streamed_folder_decodes_each_validation_chunk_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.models.hooks import resolve

    root = _folder(tmp_path / "imgs", {"cat": 30, "dog": 20, "eel": 25})
    memory, streamed = (
        _prepare(root, tmp_path, folder=ImageOptions(cache="memory")),
        _prepare(root, tmp_path, folder=ImageOptions(cache="stream")),
    )
    assert isinstance(streamed.x_val, images.StreamedSplit)  # type: ignore[attr-defined]
    reads: list[int] = []
    chunks = images.StreamedSplit.chunks

    def counted(self: images.StreamedSplit, size: int = 256) -> object:
        reads.append(len(self))
        return chunks(self, size)

    monkeypatch.setattr(images.StreamedSplit, "chunks", counted)
    step = resolve({"train_step": "tests.tasks.data.test_images:ce_step"})
    cfg = TrainConfig(max_epochs=2, early_stopping=False, batch_size=8, seed=3)
    report_a, report_b = fit(_net(), memory, cfg, hooks=step), fit(_net(), streamed, cfg, hooks=step)  # type: ignore[arg-type]
    assert reads.count(len(streamed.x_val)) == 2  # type: ignore[attr-defined]  # one pass per epoch, outputs and loss from the same decoded chunks
    assert report_b.val_losses == pytest.approx(report_a.val_losses, abs=1e-6)


def test_a_file_that_breaks_while_streaming_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _folder(tmp_path / "imgs", {"a": 15, "b": 15})
    path = prepare(str(root), tmp_path / "cache", folder=ImageOptions(cache="stream"))
    monkeypatch.setattr(images, "default_workers", lambda n: 2)  # the error comes back from a worker process
    data = load_cached(str(path))
    assert isinstance(data.x_train, images.StreamedSplit)
    broken = data.x_train.files[5]
    broken.write_bytes(
        broken.read_bytes()[: broken.stat().st_size // 2]
    )  # changed after the cache was made: a valid header, then the data stops
    with pytest.raises(InputError) as err:
        fit(_net(), data, TrainConfig(max_epochs=1, batch_size=4))
    message = str(err.value)
    assert (
        "\n" not in message
        and f"file = '{broken.relative_to(root)}': expected a readable PNG or JPEG image (OSError" in message
    ), message
    assert message.startswith(f"dataset {root}: ")


def test_a_daemonic_process_decodes_in_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    assert images.default_workers(10) == 0 and images.default_workers(1000) >= 1
    monkeypatch.setattr(
        images.multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True)
    )  # a Dask worker's
    assert images.default_workers(1000) == 0


def test_auto_streams_a_folder_over_the_memory_budget(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 12, "b": 12})  # 24 images of 1x10x12: 11,520 bytes as float32
    small = _prepare(root, tmp_path / "one", folder=ImageOptions(memory_budget_bytes=10_000))
    assert isinstance(small.x_train, images.StreamedSplit)  # type: ignore[attr-defined]
    assert any(
        "stream (--image-cache auto): 24 decoded images would take 0.0 MB as float32, over 0 MB" in n
        for n in small.notes
    )  # type: ignore[attr-defined]
    roomy = _prepare(root, tmp_path / "two", folder=ImageOptions(memory_budget_bytes=20_000))
    assert isinstance(roomy.x_train, torch.Tensor) and any("memory (--image-cache auto)" in n for n in roomy.notes)  # type: ignore[attr-defined]
    assert images.memory_budget_bytes() > 0


@pytest.mark.parametrize(
    ("check", "name"),
    [
        (check_image_cache, "--image-cache"),
        (lambda v: parse(LoopRequest, {"scenario": "s", "dataset": "d", "image_cache": v}), "image_cache"),
    ],
    ids=["preparing", "request"],
)
def test_a_bad_image_cache_is_one_line(check: object, name: str) -> None:
    with pytest.raises(InputError, match=rf"{name} = 'disk': expected one of memory, stream, auto"):
        check("disk")  # type: ignore[operator]
