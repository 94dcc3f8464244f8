"""Datasets from 8-bit images carry their codes: the float view decodes them to the values the float path gives
bit for bit, it is made only on demand (refused, naming its size, when the host lacks the memory), and the disk
cache keeps the codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from studio.cache import cache_root, finish_writes
from studio.data import codes as codes_module
from studio.data import get_entry, load_dataset
from studio.data.codes import ImageCodes
from studio.data.dataset import Dataset
from studio.data.imageopts import apply_image_options, unit_table
from studio.data.pixels import decode

pytestmark = pytest.mark.usefixtures("offline_fresh")

# Every bundled image build that stays 8-bit: gray and RGB codes, 16 and 255 levels, gray repeated to RGB.
EIGHT_BIT = [
    ("digits", {}),
    ("digits", {"resolution": 12, "channels": 3}),
    ("patches", {"size": 500}),
    ("textures", {"size": 300}),
    ("textures", {"size": 300, "channels": 3}),
]


@pytest.mark.parametrize("name,options", EIGHT_BIT, ids=[f"{n}{o}" for n, o in EIGHT_BIT])
def test_bundled_codes_decode_to_the_float32_data_bit_for_bit(name, options):
    ds = load_dataset(name, **options)
    built = get_entry(name).build(**ds.options)
    assert ds.codes is not None and ds.codes.codes.dtype == torch.uint8
    assert ds.codes.codes.shape == (ds.n, *ds.shape)
    assert torch.equal(ds.codes.codes, built.codes.expand(-1, ds.shape[0], -1, -1))
    # the float32 data as they were built before datasets kept codes: pixels.decode of the integer codes
    assert torch.equal(ds.x, decode(built.codes, built.levels, ds.shape[0]))
    assert ds.codes.scale == 2 / built.levels and ds.codes.offset == -1


def test_data_that_are_not_8_bit_have_no_codes():
    for name, options in (("patches", {"size": 300, "channels": 1}), ("faces", {}), ("moons", {})):
        ds = load_dataset(name, **options)  # luma of RGB codes, float64 sources, points
        assert ds.codes is None and ds.x.dtype == torch.float32


def test_unit_table_is_the_float_pipeline_for_8_bit_images():
    g = np.random.default_rng(1)
    for shape, channels in (((40, 9, 9, 3), 3), ((40, 9, 9), 1), ((40, 9, 9), 3)):
        images = g.integers(0, 256, shape, dtype=np.uint8)
        images.reshape(-1)[:256] = np.arange(256)  # every code
        x, _, _ = apply_image_options(images, None, None, {"resolution": 9, "channels": channels})
        planes = torch.from_numpy(images if images.ndim == 4 else images[..., None]).permute(0, 3, 1, 2)
        assert torch.equal(unit_table()[planes.long()].expand(-1, channels, -1, -1), x)


def _write_pngs(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    g = np.random.default_rng(seed)
    root.mkdir(parents=True)
    pixels = []
    for i, (h, w) in enumerate(sizes):
        a = g.integers(0, 256, (h, w, 3) if i % 2 == 0 else (h, w), dtype=np.uint8)
        Image.fromarray(a).save(root / f"{i}.png")
        pixels.append(a)
    return pixels


def test_folder_of_pngs_yields_codes_and_caches_them(tmp_path):
    pixels = _write_pngs(tmp_path / "pics", [(8, 8), (8, 8), (8, 11), (12, 8)])  # the last two are cropped
    ds = load_dataset("folder", path=str(tmp_path / "pics"), resolution=8, channels=3)
    assert ds.codes is not None and ds.codes.codes.shape == (4, 3, 8, 8)
    floats, _, _ = apply_image_options([Image.fromarray(a) for a in pixels], None, None,
                                       {"resolution": 8, "channels": 3})
    assert torch.equal(ds.x, floats)  # the float view is what the float path gives, bit for bit
    assert torch.equal(ds.codes.codes[0], torch.from_numpy(pixels[0]).permute(2, 0, 1))
    assert torch.equal(ds.codes.codes[1], torch.from_numpy(pixels[1])[None].expand(3, -1, -1))  # gray to RGB
    assert torch.equal(ds.codes.codes[2], torch.from_numpy(pixels[2][:, 1:9]).permute(2, 0, 1))  # centre crop
    finish_writes()
    entries = list((cache_root() / "datasets" / "folder").glob("*.safetensors"))
    assert len(entries) == 1
    stored = load_file(str(entries[0]))
    assert "x" not in stored and stored["codes"].dtype == torch.uint8 and stored["codes"].shape == (4, 3, 8, 8)
    again = load_dataset("folder", path=str(tmp_path / "pics"), resolution=8, channels=3)  # from the cache
    assert torch.equal(again.codes.codes, ds.codes.codes) and torch.equal(again.x, ds.x)
    assert again.fingerprint == ds.fingerprint


def test_folder_that_needs_resampling_stays_float(tmp_path):
    pixels = _write_pngs(tmp_path / "pics", [(8, 8), (16, 16)])
    ds = load_dataset("folder", path=str(tmp_path / "pics"), resolution=8, channels=3)
    floats, _, _ = apply_image_options([Image.fromarray(a) for a in pixels], None, None,
                                       {"resolution": 8, "channels": 3})
    assert ds.codes is None and torch.equal(ds.x, floats)
    gray = load_dataset("folder", path=str(tmp_path / "pics"), resolution=16, channels=1)  # RGB to gray: not 8-bit
    assert gray.codes is None


def test_bundled_cache_entries_hold_uint8_codes():
    load_dataset("digits", size=50)
    finish_writes()  # the build is stored in the background
    (entry,) = (cache_root() / "datasets" / "digits").glob("*.safetensors")
    stored = load_file(str(entry))
    assert "x" not in stored and stored["codes"].dtype == torch.uint8 and stored["codes"].shape == (50, 1, 8, 8)


def _codes_dataset(n: int, shape: tuple[int, ...], seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    return Dataset(codes=ImageCodes(codes, 255, unit_table()), name="imagenet64", kind="image", fingerprint="f")


def test_float_view_is_decoded_on_demand_and_kept_only_when_small(monkeypatch):
    ds = _codes_dataset(30, (3, 4, 4))
    assert ds.n == 30 and ds.shape == (3, 4, 4) and ds.nbytes == 30 * 48  # codes only until asked for floats
    x = ds.x
    assert x is ds.x and ds.nbytes == 5 * 30 * 48  # kept: small
    monkeypatch.setattr("studio.data.dataset.KEEP_FLOAT_BYTES", 100)
    big = _codes_dataset(30, (3, 4, 4))
    assert torch.equal(big.x, x) and big.x is not big.x and big.nbytes == 30 * 48  # decoded each time, not kept


def test_float_view_that_would_not_fit_is_refused_with_its_size(monkeypatch):
    monkeypatch.setattr(codes_module, "host_available_bytes", lambda: 16 * 2**30)
    codes = torch.zeros(1, 1, 1, 1, dtype=torch.uint8).expand(1_281_167, 3, 64, 64)  # ImageNet-64, no memory behind
    ds = Dataset(codes=ImageCodes(codes, 255, unit_table()), name="imagenet64", kind="image", fingerprint="f")
    assert ds.n == 1_281_167 and ds.dim == 12_288
    with pytest.raises(ValueError, match=r"dataset imagenet64: the float32 view of its 8-bit data \(1,281,167 x "
                                         r"3x64x64 = 58\.65 GiB\) needs 58\.65 GiB of host memory but 12\.80 GiB "
                                         r"is free for it; .*denoiser\.storage: uint8"):
        ds.flat()


def test_bad_codes_are_refused_by_field():
    with pytest.raises(ValueError, match=r"dataset codes: must be uint8 \[N, C, H, W\], got torch.int64"):
        ImageCodes(torch.zeros(2, 1, 4, 4, dtype=torch.long), 255, unit_table())
    with pytest.raises(ValueError, match="give the data as x"):
        Dataset(name="empty", kind="image", fingerprint="f")
    with pytest.raises(ValueError, match="8-bit codes are for image data"):
        Dataset(codes=ImageCodes(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 255, unit_table()), name="p",
                kind="points", fingerprint="f")


@pytest.mark.gpu
@pytest.mark.parametrize("name,options", [("patches", {"resolution": 16, "channels": 3, "size": 2000}),
                                          ("digits", {})])
def test_a_bank_built_on_the_gpu_from_codes_equals_the_float_data(name, options):
    """To a GPU the codes travel and are decoded there: the same values, norms and Gaussian fit as the float view
    sent over."""
    from studio.denoisers.softmax import DataBank

    data = load_dataset(name, **options)
    assert data.codes is not None
    bank, ref = DataBank.from_dataset(data, "cuda"), DataBank.from_flat(data.flat(), "cuda")
    assert torch.equal(bank.x, ref.x) and torch.equal(bank.sq_norms, ref.sq_norms)
    from studio.denoisers.wiener import fit_gaussian, gaussian_fit

    fit, fit_ref = gaussian_fit(data, "cuda"), fit_gaussian(data.flat(), torch.device("cuda"))
    assert all(torch.equal(fit[k], fit_ref[k]) for k in ("mu", "lam", "u"))
