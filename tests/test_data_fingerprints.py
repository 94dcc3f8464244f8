"""Bundled datasets are the same bytes on every machine: recorded fingerprints, decoded sources, integer pixels."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from studio.data import dataset_names, get_entry, load_dataset
from studio.data.imageopts import LUMA
from studio.data.photos import PHOTOS, load_photo
from studio.data.pixels import BITS, decode, resize, taps

# Recorded once; a different value on any machine or library version is a bug (or a deliberate rebuild:
# then re-record here and in the bundled checkpoints' README.md files).
FINGERPRINTS = [
    ("digits", {}, "9560bd95918fee3a0af7"),
    ("faces", {}, "c03fff38db5d20d5beef"),
    ("nonfaces", {}, "ad48b76dc7401c757136"),
    ("patches", {}, "c864080fd7ebc0d60a47"),
    ("patches", {"channels": 1}, "b1cfc8decfb37c71cd7d"),  # the patches/gray16 checkpoint's data
    ("textures", {}, "ad0f02721bcdb33e9a9e"),
    ("swissroll", {}, "666cf4b7a1df5c205493"),
    ("moons", {}, "e7d390e6055ea977c0ad"),
    ("gaussians8", {}, "fc9eb35953594194ab77"),
    ("checkerboard", {}, "7a3b2aa4bc4f0ad05d25"),
    # resized variants exercise the integer (digits) and float64 (faces) resampling
    ("digits", {"resolution": 12, "channels": 3}, "2f9835e906d12eda2844"),
    ("faces", {"resolution": 16}, "08a17f3ce2b466579aab"),
]

# sha256 (first 16 hex) of each decoded source photo: if a fingerprint changes, this says whether the shipped
# file or its decoder (Pillow's libjpeg / zlib) changed rather than the studio's own arithmetic.
PHOTO_HASHES = {
    "astronaut": "a8c429c18afa7b0f", "coffee": "0ce2b51640b9c95f", "chelsea": "416b729128bfb2c3",
    "rocket": "3d4435cc745752b7", "hubble_deep_field": "9a3ea9548188f81e", "retina": "3670e389d0dae9f7",
    "immunohistochemistry": "c5b3ef509a92f16d", "motorcycle": "ca829467c1d4f427", "china": "e701459344fd6979",
    "flower": "3202904ed246795b", "brick": "664a145c5253f0d6", "grass": "b18dae4c68bf850a",
    "gravel": "3d51ad45f789cd8b",
}

pytestmark = pytest.mark.usefixtures("offline_fresh")


def test_every_bundled_dataset_has_a_recorded_fingerprint():
    bundled = {name for name in dataset_names() if get_entry(name).bundled}
    assert {name for name, opts, _ in FINGERPRINTS if not opts} == bundled


@pytest.mark.parametrize("name,options,want", FINGERPRINTS, ids=[f"{n}{o or ''}" for n, o, _ in FINGERPRINTS])
def test_bundled_fingerprint_is_the_recorded_one(name, options, want):
    assert load_dataset(name, **options).fingerprint == want


def test_decoded_source_photos_are_the_recorded_ones():
    got = {name: hashlib.sha256(load_photo(name).tobytes()).hexdigest()[:16] for name in PHOTOS}
    assert got == PHOTO_HASHES


def test_image_fingerprints_hash_the_integer_codes():
    ds = load_dataset("patches", size=64, resolution=8)
    built = get_entry("patches").build(**ds.options)
    assert built.codes.dtype == torch.uint8 and built.codes.shape == (64, 3, 8, 8)
    assert torch.equal(ds.x, decode(built.codes, 255, 3))
    assert torch.equal(ds.x, built.codes.double().div(127.5).sub(1).float())  # x is exactly the 8-bit value


@pytest.mark.parametrize("n_in,n_out", [(13, 4), (20, 7), (9, 9), (8, 12), (1411, 706)])
def test_integer_resize_is_the_rounded_float64_filter(n_in, n_out):
    rng = np.random.default_rng(n_in)
    codes = rng.integers(0, 256, size=(2, 1, n_in, 5), dtype=np.uint8)
    index, weight = taps(n_in, n_out)
    dense = np.zeros((n_out, n_in))
    np.add.at(dense, (np.arange(n_out)[:, None].repeat(index.shape[1], 1), index), weight)
    want = np.einsum("oi,ncij->ncoj", dense, codes.astype(np.float64))
    got = resize(codes, n_out, 5, 255)
    assert got.dtype == np.uint8 and got.shape == (2, 1, n_out, 5)
    # within half a code, plus what 14-bit weights can move (< 2 * 255 * taps / 2**BITS codes)
    assert np.abs(got - want).max() <= 0.5 + 2 * 255 * index.shape[1] / 2 ** BITS


def test_resize_weights_match_the_triangle_filter_and_sum_to_one():
    index, weight = taps(20, 7)
    assert np.allclose(weight.sum(1), 1)
    centre = (3 + 0.5) * 20 / 7
    row = {int(j): w for j, w in zip(index[3], weight[3]) if w > 0}
    expect = {j: max(0.0, 1 - abs((j + 0.5 - centre) / (20 / 7))) for j in range(20)}
    total = sum(expect.values())
    assert row == pytest.approx({j: v / total for j, v in expect.items() if v > 0})


def test_gray_decode_is_the_exact_luma_of_the_codes():
    codes = torch.randint(0, 256, (4, 3, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    gray = decode(codes, 255, 1)
    want = (codes.double() / 255).permute(0, 2, 3, 1) @ torch.tensor(LUMA, dtype=torch.float64) * 2 - 1
    assert gray.shape == (4, 1, 5, 5) and torch.allclose(gray[:, 0].double(), want, atol=1e-7)
    assert torch.equal(decode(codes[:, :1], 255, 3), decode(codes[:, :1], 255, 1).repeat(1, 3, 1, 1))
