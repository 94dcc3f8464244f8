"""Bundled datasets: offline, documented shapes and labels, stable fingerprints, seeded patches."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from studio.data import load_dataset, registry
from studio.data.digits import read_digits
from studio.data.imageopts import LUMA
from studio.data.patches import COLOR_PHOTOS, cut_patches, split_evenly

BUNDLED = {
    # name: (N, item shape, label counts or None)
    "digits": (1797, (1, 8, 8), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
    "faces": (100, (1, 25, 25), None),
    "nonfaces": (100, (1, 25, 25), None),
    "patches": (20_000, (3, 16, 16), [2000] * 10),
    "textures": (6000, (1, 16, 16), [2000] * 3),
}


pytestmark = pytest.mark.usefixtures("offline_fresh")


def _rebuild(name, monkeypatch, tmp_path, tag, **opts):
    """Load with an empty cache folder and an empty memo, so the builder runs from the package files."""
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / tag))
    registry._MEMO.clear()
    return load_dataset(name, **opts)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_dataset_loads_offline_with_documented_shape(name, monkeypatch, tmp_path):
    n, shape, counts = BUNDLED[name]
    first = _rebuild(name, monkeypatch, tmp_path, "a")
    assert first.kind == "image" and first.n == n and first.shape == shape
    assert first.x.dtype == torch.float32
    assert first.x.min() >= -1 and first.x.max() <= 1 and first.x.std() > 0.1
    if counts is None:
        assert first.labels is None
    else:
        assert torch.bincount(first.labels).tolist() == counts
        assert len(first.class_names) == len(counts)
    assert first.source and first.license
    registry._MEMO.clear()
    warm = load_dataset(name)  # same cache folder: read back from disk
    assert warm is not first and warm.fingerprint == first.fingerprint and torch.equal(warm.x, first.x)
    rebuilt = _rebuild(name, monkeypatch, tmp_path, "b")
    assert rebuilt.fingerprint == first.fingerprint and torch.equal(rebuilt.x, first.x)


def test_digits_match_scikit_learn_loader():
    from sklearn.datasets import load_digits

    images, labels = read_digits()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(labels, ref.target)
    ds = load_dataset("digits")
    assert torch.allclose(ds.x[:, 0].double(), torch.from_numpy(ref.images / 8.0 - 1), atol=1e-6)
    assert torch.equal(ds.labels, torch.from_numpy(ref.target).long())


def test_faces_are_the_first_hundred_of_lfw_subset():
    import skimage.data

    lfw = skimage.data.lfw_subset()
    faces, nonfaces = load_dataset("faces"), load_dataset("nonfaces")
    assert torch.allclose(faces.x[:, 0].double(), torch.from_numpy(lfw[:100] * 2 - 1), atol=1e-6)
    assert torch.allclose(nonfaces.x[:, 0].double(), torch.from_numpy(lfw[100:] * 2 - 1), atol=1e-6)


def _fingerprints_differ(name, base_opts, changes):
    base = load_dataset(name, **base_opts)
    prints = {base.fingerprint}
    for option, value in changes:
        prints.add(load_dataset(name, **{**base_opts, option: value}).fingerprint)
    assert len(prints) == len(changes) + 1


def test_every_image_option_changes_the_fingerprint():
    _fingerprints_differ("digits", {"size": 1000}, [
        ("resolution", 12), ("channels", 3), ("size", 500), ("subset", "random"), ("subset_seed", 5),
        ("classes", "3,4"),
    ])


def test_every_patch_option_changes_the_fingerprint():
    _fingerprints_differ("textures", {"size": 300}, [
        ("resolution", 8), ("channels", 3), ("size", 299), ("seed", 1), ("classes", "grass"),
    ])


def test_patches_are_reproducible_by_seed(monkeypatch, tmp_path):
    a = _rebuild("patches", monkeypatch, tmp_path, "a", size=2000, seed=7)
    b = _rebuild("patches", monkeypatch, tmp_path, "b", size=2000, seed=7)
    c = _rebuild("patches", monkeypatch, tmp_path, "c", size=2000, seed=8)
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels) and a.fingerprint == b.fingerprint
    assert not torch.equal(a.x, c.x) and a.fingerprint != c.fingerprint


def test_gray_patches_are_the_luma_of_the_rgb_patches():
    rgb = load_dataset("patches", size=500, resolution=8)
    gray = load_dataset("patches", size=500, resolution=8, channels=1)
    want = torch.einsum("nchw,c->nhw", rgb.x, torch.tensor(LUMA))  # luma is affine-invariant: weights sum to 1
    assert torch.allclose(gray.x[:, 0], want, atol=1e-5)
    assert torch.equal(gray.labels, rgb.labels)


def test_patches_class_filter_keeps_only_chosen_photos():
    ds = load_dataset("patches", size=301, classes="rocket,flower")
    ids = sorted({COLOR_PHOTOS.index("rocket"), COLOR_PHOTOS.index("flower")})
    assert ds.n == 301 and sorted(set(ds.labels.tolist())) == ids
    assert sorted(torch.bincount(ds.labels, minlength=10)[ids].tolist()) == [150, 151]
    with pytest.raises(ValueError, match="unknown class 'lena'"):
        load_dataset("patches", size=10, classes="lena")


def test_cut_patches_are_windows_of_the_image_or_their_mirror():
    """Pixel values encode their row and column, so every patch reveals where it was cut."""
    h, w, side = 13, 15, 4
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = (np.arange(h) * 16)[:, None]
    image[..., 1] = (np.arange(w) * 16)[None, :]
    g = torch.Generator().manual_seed(0)
    x, owner = cut_patches([image], [400], side, 3, (1.0,), g)
    assert x.shape == (400, 3, side, side) and owner.tolist() == [0] * 400
    rows = torch.round((x[:, 0] + 1) / 2 * 255 / 16).long()
    cols = torch.round((x[:, 1] + 1) / 2 * 255 / 16).long()
    steps = torch.arange(side)
    assert torch.equal(rows, (rows[:, :1, :1] + steps[None, :, None]).expand(-1, -1, side))
    forward = torch.all(cols == cols[:, :, :1] + steps, dim=(1, 2))
    mirrored = torch.all(cols == cols[:, :, :1] - steps, dim=(1, 2))
    assert torch.all(forward ^ mirrored)
    assert 120 < int(mirrored.sum()) < 280
    left = torch.where(forward, cols[:, 0, 0], cols[:, 0, -1])
    assert rows.min() == 0 and rows.max() == h - 1 and left.min() == 0 and left.max() == w - side


def test_split_evenly():
    assert split_evenly(10, 3) == [4, 3, 3] and sum(split_evenly(20_000, 7)) == 20_000
