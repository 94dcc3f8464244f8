"""Training data kept as 8-bit codes (studio.denoisers.byte_bank): the same x̂0 as float32 storage of the same
data, exact sums, detection of 8-bit data, memory refusals that name the size, and the Triton kernels (on the
GPU, or on the CPU under TRITON_INTERPRET=1 where triton is installed) against float64."""

from __future__ import annotations

import os

import pytest
import torch
from locality_data import rel, smooth_images

from studio.data.codes import ImageCodes
from studio.data.dataset import Dataset
from studio.data.imageopts import unit_table
from studio.data.pixels import decode
from studio.denoisers import make_denoiser
from studio.denoisers import byte_bank
from studio.denoisers.byte_bank import ByteBank, code_sq_norms, data_bank
from studio.denoisers.reference import nearest_ref, optimal_ref
from studio.denoisers.softmax import DataBank
from studio.diffusion.schedules import Schedule

LEVELS = (999, 900, 700, 500, 400, 300, 100, 0)  # timesteps, from noise to clean


def _interpreter() -> bool:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


interpreted = pytest.mark.skipif(not _interpreter(), reason="needs triton and TRITON_INTERPRET=1")
# Where the Triton kernels run: the GPU, or Triton's CPU interpreter (small sizes, slow).
KERNEL_DEVICES = [pytest.param("triton", "cuda", marks=pytest.mark.gpu),
                  pytest.param("triton", "cpu", marks=interpreted)]


def eight_bit(n: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, Dataset]:
    """Codes [n, *shape] of smooth images (structure, so the softmax is neither flat nor one-hot at middle noise)
    and the Dataset they decode to exactly as the bundled datasets do (pixels.decode)."""
    x = smooth_images(n, shape, seed=seed)
    codes = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return codes, Dataset(x=decode(codes, 255, shape[0]), name=f"codes{seed}", kind="image",
                          fingerprint=f"codes-{seed}-{n}-{shape}")


def noisy_queries(data: torch.Tensor, ab: float, b: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(data), (b,), generator=g)
    return ab**0.5 * data[pick] + (1 - ab) ** 0.5 * torch.randn(data[pick].shape, generator=g)


def fitted(name: str, data: Dataset, storage: str, device: str = "cpu", kernel: str = "auto", **params):
    den = make_denoiser(name, device=device, storage=storage, **params).fit(data)
    if storage == "uint8":
        assert isinstance(den.bank, ByteBank)
        den.bank.kernel = kernel
    return den


def same_as_float32(u8: torch.Tensor, f32: torch.Tensor, f64: torch.Tensor) -> None:
    """x̂0 from 8-bit storage is the float32 storage's to 1e-6 (relative L2 per sample and absolute) beyond the
    float32 path's own rounding, which reaches a few 1e-6 where 1/(1-ā) amplifies it and the softmax has few
    points; the 8-bit path's logits are accumulated past float32, so it is within 1e-6 of float64 everywhere."""
    assert rel(u8, f64) < 1e-6
    assert rel(u8, f32) < 1e-6 + rel(f32, f64)
    assert (u8 - f32).abs().max() < 1e-6 + (f32.double() - f64).abs().max()


@pytest.fixture(scope="module")
def rgb():
    return eight_bit(700, (3, 8, 8))


def test_uint8_storage_gives_the_float32_storage_x0(rgb):
    codes, data = rgb
    sched = Schedule.build()
    f32, u8 = fitted("optimal", data, "float32"), fitted("optimal", data, "uint8")
    n32, n8 = fitted("nearest", data, "float32"), fitted("nearest", data, "uint8")
    assert isinstance(f32.bank, DataBank) and u8.bank.codes.dtype == torch.uint8
    assert torch.equal(u8.bank.codes, codes.reshape(len(codes), -1))
    for i, t in enumerate(LEVELS):
        ab = sched.ab(t)
        x = noisy_queries(data.x, ab, 5, seed=i)
        a, b = f32.denoise(x, t, ab), u8.denoise(x, t, ab)
        same_as_float32(b.x0, a.x0, optimal_ref(x, data.x, ab))
        assert torch.allclose(b.extras["weights"], a.extras["weights"], rtol=1e-4, atol=1e-6)
        assert torch.allclose(b.extras["ess"], a.extras["ess"], rtol=1e-4)
        c, d = n32.denoise(x, t, ab), n8.denoise(x, t, ab)
        assert torch.equal(c.extras["neighbours"], d.extras["neighbours"])
        assert torch.equal(c.x0, d.x0)  # the nearest rows come back as the stored float32 values, bit for bit
        assert torch.equal(d.x0.double(), nearest_ref(x, data.x, ab))


def codes_dataset(codes: torch.Tensor, name: str = "codes") -> Dataset:
    """A Dataset that carries its 8-bit codes, decoding as image folders and Hub datasets do (unit_table)."""
    return Dataset(codes=ImageCodes(codes, 255, unit_table()), name=name, kind="image", fingerprint=f"{name}-codes")


def test_uint8_storage_from_a_codes_dataset_makes_no_float_copy_and_gives_the_float32_x0(rgb, monkeypatch):
    """Folder and Hub data decode as float32 c / 255 * 2 - 1, up to 6e-8 from the exact map 2c/255 - 1 that the 8-bit
    arithmetic uses: x̂0 is within 1e-6 of float32 storage of those values (absolute), and exact for the map."""
    codes, exact = rgb
    data = codes_dataset(codes)
    floats = Dataset(x=data.x.clone(), name="floats", kind="image", fingerprint="floats")  # the same values
    data = codes_dataset(codes)  # a fresh one: no float view made yet

    def no_float_copy(self, what):
        raise AssertionError("the float32 view of the codes was made")

    monkeypatch.setattr(ImageCodes, "decode", no_float_copy)
    u8, n8 = fitted("optimal", data, "uint8"), fitted("nearest", data, "uint8")
    assert u8.bank.codes.data_ptr() == codes.data_ptr()  # the dataset's own codes: not even a uint8 copy on the CPU
    assert torch.equal(u8.bank.rows(torch.arange(len(codes))), floats.flat())  # rows as the float view holds them
    monkeypatch.undo()
    f32, n32 = fitted("optimal", floats, "float32"), fitted("nearest", floats, "float32")
    sched = Schedule.build()
    for i, t in enumerate(LEVELS):
        ab = sched.ab(t)
        x = noisy_queries(floats.x, ab, 5, seed=i)
        a, b = u8.denoise(x, t, ab).x0, f32.denoise(x, t, ab).x0
        assert (a - b).abs().max() < 1e-6 and (a.double() - optimal_ref(x, floats.x, ab)).abs().max() < 2e-7
        assert rel(a, optimal_ref(x, exact.x, ab)) < 1e-6
        c, d = n32.denoise(x, t, ab), n8.denoise(x, t, ab)
        assert torch.equal(c.extras["neighbours"], d.extras["neighbours"]) and torch.equal(c.x0, d.x0)


def test_auto_storage_keeps_codes_whose_float_view_would_not_fit(rgb, monkeypatch):
    from studio.data import codes as codes_module

    codes, _ = rgb
    monkeypatch.setattr(codes_module, "host_available_bytes", lambda: codes.numel() * 2)  # room for codes, not floats
    data = codes_dataset(codes)
    assert isinstance(make_denoiser("nearest").fit(data).bank, ByteBank)  # auto, CPU: the codes as they are
    with pytest.raises(ValueError, match=r"dataset codes: the float32 view of its 8-bit data \(700 x 3x8x8 = "
                                         r"0\.00 GiB\) needs 0\.00 GiB of host memory"):
        make_denoiser("optimal", storage="float32").fit(data)


def test_uint8_results_do_not_depend_on_the_chunk_size(rgb):
    _, data = rgb
    ab = Schedule.build().ab(500)
    x = noisy_queries(data.x, ab, 3, seed=7)
    whole = fitted("optimal", data, "uint8").denoise(x, 500, ab)
    for chunk in (1, 13, 256):
        part = fitted("optimal", data, "uint8", chunk_size=chunk).denoise(x, 500, ab)
        assert rel(part.x0, whole.x0) < 1e-6  # the float32 online-softmax state, rescaled once per chunk
        assert torch.equal(part.extras["neighbours"], whole.extras["neighbours"])


def test_auto_storage_is_float32_on_the_cpu_and_for_data_that_are_not_8_bit(rgb):
    _, data = rgb
    assert isinstance(make_denoiser("optimal").fit(data).bank, DataBank)  # auto: 8-bit only on a GPU
    floats = Dataset(x=smooth_images(50, (3, 4, 4)), name="f", kind="image", fingerprint="f")
    assert isinstance(data_bank(floats, torch.device("cpu"), "float32"), DataBank)
    with pytest.raises(ValueError, match="denoiser.storage: uint8 keeps data that came from 8-bit images"):
        make_denoiser("optimal", storage="uint8").fit(floats)
    with pytest.raises(ValueError, match="denoiser.storage: 'u16' is not allowed"):
        make_denoiser("nearest", storage="u16")


def test_8_bit_data_are_recognised_from_either_decoding_and_rows_come_back_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 256, (300, 48), generator=g, dtype=torch.uint8)
    exact = decode(codes.reshape(300, 3, 4, 4), 255, 3).reshape(300, 48)  # float32(2c/255 - 1), correctly rounded
    ops = (codes.float() / 255.0).mul_(2).sub_(1)  # float32 arithmetic, as imageopts decodes uint8 images
    for values in (exact, ops):
        bank = ByteBank.from_values(values, torch.device("cpu"))
        assert torch.equal(bank.codes, codes)
        assert torch.equal(bank.rows(torch.arange(300)), values)
        assert abs(bank.scale - 2 / 255) < 1e-15 and abs(bank.offset - 1 / 255) < 1e-15
    shifted = exact.clone()
    shifted[7, 3] += 1e-3  # one value off the 8-bit grid
    assert ByteBank.from_values(shifted, torch.device("cpu")) is None
    twice = exact.clone()
    where = (codes == 200).nonzero()[0]
    twice[where[0], where[1]] += 2**-23  # within rounding of the map, but code 200 would stand for two values
    assert ByteBank.from_values(twice, torch.device("cpu")) is None


def test_code_norms_are_the_exact_map_norms(monkeypatch):
    from studio.denoisers import byte_bank

    g = torch.Generator().manual_seed(4)
    codes = torch.randint(0, 256, (1003, 96), generator=g, dtype=torch.uint8)
    monkeypatch.setattr(byte_bank, "_BLOCK_BYTES", 4 * 96 * 10)  # 10 rows per block
    ref = ((codes.double() - 128) * (2 / 255) + 1 / 255).pow(2).sum(1)
    assert torch.allclose(code_sq_norms(codes, 2 / 255, 1 / 255).double(), ref, rtol=1e-7, atol=0)


def test_8_bit_data_too_large_for_the_device_are_refused_with_their_size(monkeypatch):
    from studio.denoisers import budget

    monkeypatch.setattr(budget, "memory_budget", lambda device: 8 * 2**30)  # 8 GiB free on the "GPU"
    codes = torch.zeros(1, 12288, dtype=torch.uint8).expand(1_280_000, 12288)  # ImageNet-64 size, no memory behind
    with pytest.raises(ValueError, match=r"8-bit codes \(1,280,000 points x 12,288 coordinates as uint8 = 14\.65 GiB"
                                         r"\).*needs about 14\.91 GiB of cuda memory but the budget is 8\.00 GiB"):
        ByteBank.from_codes(codes, 2 / 255, 1 / 255, torch.device("cuda"))


@pytest.mark.parametrize("kernel, device", KERNEL_DEVICES)
def test_triton_kernels_match_float64(kernel, device):
    from studio.denoisers import softmax_triton

    g = torch.Generator().manual_seed(5)
    # points not a whole number of blocks; 13 queries (padded to 16); more blocks of points than splits; more
    # queries than one launch takes
    for n, d, b in ((200, 96, 3), (131, 80, 13), (2500, 48, 8), (150, 64, 40)):
        codes = torch.randint(0, 256, (n, d), generator=g, dtype=torch.uint8)
        x = torch.randn(b, d, generator=g) * torch.logspace(-3, 1, d)  # mixed magnitudes
        c = codes.double() - 128
        dots = softmax_triton.code_dots(codes.to(device), x.to(device)).cpu().double()
        assert ((dots - x.double() @ c.T).abs() / (x.double().abs() @ c.abs().T)).max() < 2e-7
        w = torch.rand(b, n, generator=g) ** 8
        w[:, 64:128] = 0  # a whole block of points with no weight is skipped
        w[0, 5] = 1e-30  # a weight far below fp16's range keeps its block alive
        sums = softmax_triton.weighted_code_sums(codes.to(device), w.to(device)).cpu().double()
        assert ((sums - w.double() @ c).abs() / (w.double() @ c.abs())).max() < 4e-7  # fp16 halves: 2^-23 a weight


@pytest.mark.parametrize("kernel, device", [pytest.param("torch", "cuda", marks=pytest.mark.gpu), *KERNEL_DEVICES])
def test_8_bit_paths_match_float64_and_float32_storage(rgb, kernel, device):
    _, data = rgb
    sched = Schedule.build()
    f32 = fitted("optimal", data, "float32", device)
    u8 = fitted("optimal", data, "uint8", device, kernel)
    n32, n8 = fitted("nearest", data, "float32", device), fitted("nearest", data, "uint8", device, kernel)
    assert u8.bank.uses_triton() == (kernel == "triton")
    for i, t in enumerate(LEVELS):
        ab = sched.ab(t)
        x = noisy_queries(data.x, ab, 9 if i % 2 else 4, seed=i).to(device)
        a, b = f32.denoise(x, t, ab), u8.denoise(x, t, ab)
        same_as_float32(b.x0.cpu(), a.x0.cpu(), optimal_ref(x.cpu(), data.x, ab))
        assert torch.allclose(b.extras["weights"], a.extras["weights"], rtol=1e-4, atol=1e-6)
        c, d = n32.denoise(x, t, ab), n8.denoise(x, t, ab)
        assert torch.equal(c.extras["neighbours"][:, 0], d.extras["neighbours"][:, 0])
        assert torch.equal(c.x0, d.x0)


@pytest.mark.parametrize("kernel, device", KERNEL_DEVICES)
def test_triton_nearest_picks_the_lowest_index_among_equal_rows(kernel, device):
    codes, _ = eight_bit(100, (1, 4, 4), seed=2)
    flat = codes.reshape(100, -1)
    flat[[17, 40, 41]] = flat[63].clone()  # four equal rows
    bank = ByteBank.from_codes(flat, 2 / 255, 1 / 255, torch.device(device))
    bank.kernel = kernel
    x = (bank.rows(torch.tensor([63])) * 0.9).to(device)
    idx, dist = bank.nearest_rows(x, 0.81, k=6)
    assert idx[0, 0].item() == 17 and sorted(idx[0, :4].tolist()) == [17, 40, 41, 63]
    assert torch.all(dist[0, 1:] >= dist[0, :-1])


@pytest.mark.gpu
def test_auto_storage_on_the_gpu_keeps_large_8_bit_data_as_codes_and_the_rest_as_float32(rgb, monkeypatch):
    codes, data = rgb
    assert isinstance(make_denoiser("optimal", device="cuda").fit(data).bank, DataBank)  # small: cuBLAS wins
    monkeypatch.setattr(byte_bank, "AUTO_UINT8_MIN_BYTES", 4 * data.x.numel())  # as large as the threshold
    den = make_denoiser("optimal", device="cuda").fit(data)
    assert isinstance(den.bank, ByteBank) and den.bank.codes.is_cuda and den.bank.uses_triton()
    assert torch.equal(den.bank.codes.cpu(), codes.reshape(len(codes), -1))
    floats = Dataset(x=smooth_images(50, (3, 4, 4)), name="f", kind="image", fingerprint="f")
    assert isinstance(make_denoiser("nearest", device="cuda").fit(floats).bank, DataBank)
    assert isinstance(make_denoiser("optimal", device="cuda", storage="float32").fit(data).bank, DataBank)


def test_scale_bench_makes_8_bit_data_and_compares_them_with_float32_and_float64(tmp_path, capsys):
    import json

    from studio.cli import main

    out = tmp_path / "scale.json"
    assert main(["bench", "--scale", "--device", "cpu", "--n-data", "400", "--float-n", "150", "--shape", "1x4x4",
                 "--levels", "3", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["n_data"]) for r in rows] == [
        ("optimal uint8", 400), ("nearest uint8", 400), ("optimal uint8", 150), ("optimal float32", 150),
        ("nearest uint8", 150), ("nearest float32", 150)]
    for r in rows[2:]:
        assert r["max_rel_err"] < (1e-6 if r["storage"] == "uint8" else 1e-5) and r["same_top1_as_float32"]
    assert "optimal uint8" in capsys.readouterr().out
