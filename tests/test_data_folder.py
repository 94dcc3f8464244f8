"""User images from folders and zips: labels, skipped files, path escapes, upload limits."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.cache import cache_root
from studio.data import load_dataset
from studio.data.folder import TOP_LEVEL_CLASS
from studio.data.imageopts import apply_image_options

RNG = np.random.default_rng(0)
PIXELS = {  # relative path -> uint8 image; all 8x8 so resolution=8 keeps the exact pixels
    "cat/a.png": RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8),
    "cat/b.webp": RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8),
    "dog/c.png": RNG.integers(0, 256, (8, 8), dtype=np.uint8),
    "dog/deeper/d.png": RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8),
}


def _write_tree(root: Path) -> Path:
    """Four images in nested class folders, one corrupt png, one text file."""
    for rel, pixels in PIXELS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, lossless=True) if rel.endswith(".webp") else Image.fromarray(pixels).save(path)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "notes.txt").write_text("not an image")
    return root


def _zip_of(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def _expected(rel: str) -> torch.Tensor:
    pixels = PIXELS[rel].astype(np.float64) / 255
    rgb = np.repeat(pixels[..., None], 3, -1) if pixels.ndim == 2 else pixels
    return torch.from_numpy(rgb * 2 - 1).permute(2, 0, 1).float()


def test_folder_with_classes_skips_and_counts_bad_files(tmp_path, caplog):
    root = _write_tree(tmp_path / "pics")
    with caplog.at_level(logging.WARNING, logger="studio.data.folder"):
        ds = load_dataset("folder", path=str(root), resolution=8)
    order = sorted(PIXELS)  # cat/a.png, cat/b.webp, dog/c.png, dog/deeper/d.png
    assert ds.n == 4 and ds.shape == (3, 8, 8)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1]
    for i, rel in enumerate(order):
        assert torch.allclose(ds.x[i], _expected(rel), atol=1e-6), rel
    note = next(n for n in ds.notes if n.startswith("skipped"))
    assert "skipped 2 of 6 files" in note and "1 not png/jpg/webp (notes.txt)" in note
    assert "1 unreadable or corrupt (dog/broken.png)" in note
    assert any("skipped 2 of 6 files" in r.getMessage() for r in caplog.records)


def test_folder_options_filter_subset_gray_and_no_labels(tmp_path):
    root = _write_tree(tmp_path / "pics")
    dogs = load_dataset("folder", path=str(root), resolution=8, classes="dog", channels=1)
    assert dogs.n == 2 and dogs.labels.tolist() == [1, 1] and dogs.shape == (1, 8, 8)
    assert torch.allclose(dogs.x[0, 0], _expected("dog/c.png")[0], atol=1e-6)
    two = load_dataset("folder", path=str(root), resolution=8, size=2)
    assert two.n == 2 and two.labels.tolist() == [0, 0]
    plain = load_dataset("folder", path=str(root), resolution=8, labels=False)
    assert plain.labels is None and plain.class_names is None and plain.n == 4
    small = load_dataset("folder", path=str(root), resolution=4)
    want, _, _ = apply_image_options(PIXELS["cat/a.png"][None], None, None, {"resolution": 4, "channels": 3})
    assert small.shape == (3, 4, 4) and torch.allclose(small.x[0], want[0], atol=1e-6)
    with pytest.raises(ValueError, match="unknown class 'owl'.*cat, dog"):
        load_dataset("folder", path=str(root), classes="owl")


def test_images_beside_class_folders_get_their_own_class(tmp_path):
    root = _write_tree(tmp_path / "pics")
    Image.fromarray(PIXELS["cat/a.png"]).save(root / "loose.png")
    ds = load_dataset("folder", path=str(root), resolution=8)
    assert ds.class_names == [TOP_LEVEL_CLASS, "cat", "dog"] and ds.labels.tolist() == [1, 1, 2, 2, 0]


def test_folder_changes_are_seen_on_the_next_load(tmp_path):
    root = _write_tree(tmp_path / "pics")
    assert load_dataset("folder", path=str(root), resolution=8).n == 4
    Image.fromarray(PIXELS["dog/c.png"]).save(root / "dog" / "e.png")
    assert load_dataset("folder", path=str(root), resolution=8).n == 5


def test_zip_gives_the_same_data_and_is_extracted_once(tmp_path):
    root = _write_tree(tmp_path / "pics")
    folder_ds = load_dataset("folder", path=str(root), resolution=8)
    archive = _zip_of(root, tmp_path / "pics.zip", prefix="my-photos/")  # a wrapping folder, as zips often have
    zipped = load_dataset("folder", path=str(archive), resolution=8)
    assert torch.equal(zipped.x, folder_ds.x) and zipped.labels.tolist() == folder_ds.labels.tolist()
    assert zipped.class_names == ["cat", "dog"]
    uploads = list((cache_root() / "uploads").iterdir())
    assert len(uploads) == 1 and (uploads[0] / "my-photos" / "cat" / "a.png").is_file()
    stamp = uploads[0].stat().st_mtime_ns
    again = load_dataset("folder", path=str(archive), resolution=8)
    assert torch.equal(again.x, zipped.x) and uploads[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize("entry", ["../evil.png", "ok/../../evil.png", "/tmp/abs-evil.png", "C:/evil.png",
                                   "..\\evil.png"])
def test_zip_entries_escaping_the_folder_are_rejected(tmp_path, entry):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("fine.png", b"x")
        z.writestr(entry, b"x")
    with pytest.raises(ValueError, match="escapes the target folder"):
        load_dataset("folder", path=str(archive))
    assert not (cache_root() / "uploads").exists() or not any((cache_root() / "uploads").iterdir())
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/abs-evil.png").exists()


def test_zip_entries_that_clash_are_a_clear_error(tmp_path):
    archive = tmp_path / "clash.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a", b"file")
        z.writestr("a/b.png", b"x")
    with pytest.raises(ValueError, match="'a/b.png' of clash.zip cannot be written"):
        load_dataset("folder", path=str(archive))


def test_zip_over_the_file_count_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_FILES", "3")
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(4):
            z.writestr(f"img{i}.png", b"x")
    with pytest.raises(ValueError, match=r"holds 4 files, over the limit of 3 files \(STUDIO_MAX_UPLOAD_FILES\)"):
        load_dataset("folder", path=str(archive))


def test_zip_bomb_over_the_byte_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_BYTES", "100000")
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.png", b"\x00" * 1_000_000)
    assert archive.stat().st_size < 10_000  # small on disk, a megabyte unpacked
    with pytest.raises(ValueError, match=r"unpacks to 1000000 bytes, over the limit of 100000 bytes"):
        load_dataset("folder", path=str(archive))
    assert not (cache_root() / "uploads").exists() or not any((cache_root() / "uploads").iterdir())


def test_folder_over_the_limits(tmp_path, monkeypatch):
    root = _write_tree(tmp_path / "pics")
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_FILES", "5")
    with pytest.raises(ValueError, match=r"more than the limit of 5 files \(STUDIO_MAX_UPLOAD_FILES\)"):
        load_dataset("folder", path=str(root))
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_FILES", "100")
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_BYTES", "200")
    with pytest.raises(ValueError, match=r"more than the limit of 200 bytes \(STUDIO_MAX_UPLOAD_BYTES\)"):
        load_dataset("folder", path=str(root))
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_BYTES", "lots")
    with pytest.raises(ValueError, match="STUDIO_MAX_UPLOAD_BYTES: expected a positive whole number"):
        load_dataset("folder", path=str(root))


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="dataset.path: give a folder or a .zip"):
        load_dataset("folder")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("folder", path=str(tmp_path / "missing"))
    text = tmp_path / "list.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a .zip archive"):
        load_dataset("folder", path=str(text))
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"PK not really")
    with pytest.raises(ValueError, match="not a valid .zip archive"):
        load_dataset("folder", path=str(fake))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable png/jpg/jpeg/webp images"):
        load_dataset("folder", path=str(empty))
