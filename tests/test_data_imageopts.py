"""The shared image options against hand computations in float64 numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from studio.data.imageopts import LUMA, apply_image_options, image_params, select_indices
from studio.params import resolve


def _triangle_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Antialiased bilinear resampling as a matrix: a triangle filter widened by the shrink factor."""
    scale = n_in / n_out
    width = max(scale, 1.0)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        for j in range(n_in):
            m[i, j] = max(0.0, 1.0 - abs((j + 0.5 - centre) / width))
        m[i] /= m[i].sum()
    return m


def _reference(img: np.ndarray, resolution: int) -> np.ndarray:
    """Center crop then separable resampling of one [H, W] float64 plane."""
    h, w = img.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = img[top:top + side, left:left + side]
    m = _triangle_matrix(side, resolution)
    return m @ crop @ m.T


def _opts(**over):
    return resolve(image_params(resolution=4, channels=1), over, "dataset")


@pytest.mark.parametrize("resolution", [2, 3, 4, 6, 9])
def test_crop_resize_matches_numpy_reference(resolution):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 6, 4), dtype=np.uint8)  # not square: the crop matters
    x, labels, names = apply_image_options(images, None, None, {"resolution": resolution, "channels": 1})
    assert x.dtype == torch.float32 and x.shape == (2, 1, resolution, resolution)
    assert labels is None and names is None
    for k in range(2):
        want = _reference(images[k].astype(np.float64) / 255.0, resolution) * 2 - 1
        np.testing.assert_allclose(x[k, 0].numpy(), want, atol=2e-6)


def test_resize_agrees_with_pil_bilinear():
    rng = np.random.default_rng(1)
    plane = rng.random((20, 20)).astype(np.float32)
    pil = np.asarray(Image.fromarray(plane, mode="F").resize((7, 7), Image.BILINEAR))
    x, _, _ = apply_image_options(plane[None], None, None, _opts(resolution=7))
    np.testing.assert_allclose((x[0, 0].numpy() + 1) / 2, pil, atol=1e-5)


def test_rgb_to_gray_uses_luma_and_gray_to_rgb_repeats():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    gray, _, _ = apply_image_options(rgb, None, None, _opts(channels=1))
    want = (rgb.astype(np.float64) / 255.0) @ np.array(LUMA) * 2 - 1
    np.testing.assert_allclose(gray[:, 0].numpy(), want, atol=2e-6)

    plane = rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    rgb3, _, _ = apply_image_options(plane, None, None, _opts(channels=3))
    assert rgb3.shape == (3, 3, 4, 4)
    for c in range(3):
        np.testing.assert_allclose(rgb3[:, c].numpy(), plane / 255.0 * 2 - 1, atol=2e-6)


def test_rgba_drops_alpha_and_value_ranges():
    rgba = np.zeros((1, 4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 7
    x, _, _ = apply_image_options(rgba, None, None, _opts(channels=3))
    assert torch.equal(x[0, 0], torch.ones(4, 4)) and torch.equal(x[0, 1], -torch.ones(4, 4))
    deep = np.full((1, 4, 4), 65535, dtype=np.uint16)
    assert torch.equal(apply_image_options(deep, None, None, _opts())[0], torch.ones(1, 1, 4, 4))
    floats = np.full((1, 4, 4), 0.25, dtype=np.float64)
    assert torch.allclose(apply_image_options(floats, None, None, _opts())[0], torch.full((1, 1, 4, 4), -0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply_image_options(floats * 8, None, None, _opts())
    mask = np.eye(4, dtype=bool)[None]
    assert torch.equal(apply_image_options(mask, None, None, _opts())[0][0, 0], torch.eye(4) * 2 - 1)
    with pytest.raises(ValueError, match="unsupported image dtype int32"):
        apply_image_options(np.full((1, 4, 4), 300, dtype=np.int32), None, None, _opts())


def test_mixed_size_list_and_pil_images():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(8, 12), dtype=np.uint8)
    b = rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8)
    x, _, _ = apply_image_options([Image.fromarray(a), b], None, None, _opts(resolution=4, channels=1))
    np.testing.assert_allclose(x[0, 0].numpy(), _reference(a / 255.0, 4) * 2 - 1, atol=2e-6)
    gray_b = (b / 255.0) @ np.array(LUMA)
    np.testing.assert_allclose(x[1, 0].numpy(), _reference(gray_b, 4) * 2 - 1, atol=2e-6)


def test_class_filter_by_name_and_number_keeps_source_ids():
    images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    labels = np.array([0, 1, 2, 0, 1, 2])
    names = ["cat", "dog", "owl"]
    x, y, out_names = apply_image_options(images, labels, names, _opts(classes=["owl", "0"]))
    assert y.tolist() == [0, 2, 0, 2] and out_names == names
    kept = [0, 2, 3, 5]
    np.testing.assert_allclose(x[:, 0].numpy(), images[kept] / 255.0 * 2 - 1, atol=2e-6)
    with pytest.raises(ValueError, match="unknown class 'emu'.*cat, dog, owl"):
        apply_image_options(images, labels, names, _opts(classes=["emu"]))
    with pytest.raises(ValueError, match="no class labels"):
        apply_image_options(images, None, None, _opts(classes=["cat"]))
    with pytest.raises(ValueError, match="unknown class '7'"):
        select_indices(6, torch.tensor(labels), None, {"classes": ["7"]})


def test_class_filter_that_leaves_nothing_is_an_error():
    labels = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="no images left"):
        select_indices(3, labels, ["a", "b", "c"], {"classes": ["c"]})


def test_first_n_and_seeded_random_subsets():
    n = 50
    first = select_indices(n, None, None, _opts(size=10))
    assert first.tolist() == list(range(10))
    r1 = select_indices(n, None, None, _opts(size=10, subset="random", subset_seed=3))
    r2 = select_indices(n, None, None, _opts(size=10, subset="random", subset_seed=3))
    r3 = select_indices(n, None, None, _opts(size=10, subset="random", subset_seed=4))
    want = torch.randperm(n, generator=torch.Generator().manual_seed(3))[:10].sort().values
    assert r1.tolist() == r2.tolist() == want.tolist()
    assert r1.tolist() != r3.tolist() and r1.tolist() != first.tolist()
    assert select_indices(n, None, None, _opts(size=80)).tolist() == list(range(n))


def test_subset_applies_after_class_filter():
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1])
    kept = select_indices(7, labels, None, {"classes": [1], "size": 2})
    assert kept.tolist() == [0, 2]


def test_params_declare_split_and_bounds():
    params = image_params(resolution=28, channels=1, splits=("train", "test"), max_size=100)
    opts = resolve(params, {}, "dataset")
    assert opts == {"resolution": 28, "channels": 1, "size": None, "subset": "first", "subset_seed": 0,
                    "classes": [], "split": "train"}
    with pytest.raises(ValueError, match="dataset.channels"):
        resolve(params, {"channels": 2}, "dataset")
    with pytest.raises(ValueError, match="dataset.size"):
        resolve(params, {"size": 101}, "dataset")
    with pytest.raises(ValueError, match="dataset.split.*train, test"):
        resolve(params, {"split": "val"}, "dataset")
    assert "split" not in {p.name for p in image_params(8, 1)}
    assert "classes" not in {p.name for p in image_params(8, 1, labelled=False)}
