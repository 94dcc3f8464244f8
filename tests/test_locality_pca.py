"""pca_locality against float64 brute force: masks, exactness, invariances, the θ=0 limit, normalisations."""

import pytest
import torch

from locality_data import as_dataset, noisy, rel, smooth_images
from studio.cache import is_cached
from studio.denoisers import make_denoiser
from studio.denoisers import budget
from studio.denoisers.masked import masks
from studio.denoisers.masked.denoiser import masked_posterior_mean
from studio.denoisers.masked.plan import build_plan
from studio.denoisers.masked.torch_tiles import torch_layout
from studio.denoisers.reference import locality_mask_ref, masked_softmax_ref, optimal_ref, pca_locality_ref
from studio.denoisers.softmax import DataBank
from studio.denoisers.wiener import gaussian_fit

LEVELS = [0.003, 0.08, 0.4, 0.9, 0.999]


@pytest.fixture(scope="module")
def rgb():
    return as_dataset(smooth_images(160, (3, 6, 6)), "rgb")


@pytest.fixture(scope="module")
def gray():
    return as_dataset(smooth_images(200, (1, 8, 8), seed=3), "gray")


@pytest.mark.parametrize("ab", LEVELS)
@pytest.mark.parametrize("norm", ["self", "reference"])
def test_matches_float64_brute_force(rgb, ab, norm):
    x = noisy(rgb.x, ab)
    den = make_denoiser("pca_locality", mask_threshold=0.05, mask_normalization=norm, chunk_size=45).fit(rgb)
    out = den.denoise(x, 0, ab)
    assert rel(out.x0, pca_locality_ref(x, rgb.x, ab, 0.05, norm)) < 1e-4
    assert torch.equal(den.level_mask(ab), locality_mask_ref(rgb.x, ab, 0.05, norm))


def test_levels_exercise_every_path(rgb):
    """Across LEVELS the plans hold all-ones columns, complement tiles and plain sparse tiles, and the torch
    tiles run both ways: whole mask blocks and gathered supports."""
    den = make_denoiser("pca_locality", mask_threshold=0.05).fit(rgb)
    plans = [den.mask(ab).plan for ab in LEVELS]
    assert any(p.dense.numel() for p in plans)
    assert any(bool(p.based.any()) for p in plans)
    assert any(bool((~p.based.any(1)).any()) for p in plans if p.n_tiles)
    runs = [run for p in plans for group in torch_layout(p) for run in group.runs]
    assert any(run.rows is None for run in runs) and any(run.rows is not None for run in runs)


def test_tiles_skip_what_local_masks_leave_out():
    """A 3 x 3 window mask on a 32 x 32 image: the tiles read a small part of the D x D products."""
    plan = build_plan(masks.patch_mask((1, 32, 32), 3), (1, 32, 32))
    assert plan.work() < 0.12 and not bool(plan.based.any())


@pytest.mark.parametrize("ab", [0.05, 0.6])
def test_gray_default_threshold_and_temperature(gray, ab):
    x = noisy(gray.x, ab, b=3)
    out = make_denoiser("pca_locality", temperature=0.5).fit(gray).denoise(x, 0, ab)
    assert out.shared["mask_threshold"] == 0.02
    assert rel(out.x0, pca_locality_ref(x, gray.x, ab, 0.02, temperature=0.5)) < 1e-4


def test_default_thresholds():
    assert masks.default_threshold((1, 28, 28)) == 0.005
    assert masks.default_threshold((3, 32, 32)) == 0.05
    assert masks.default_threshold((3, 16, 16)) == 0.02


@pytest.mark.parametrize("ab", [0.02, 0.5, 0.95])
def test_invariant_to_chunk_batch_and_order(rgb, ab):
    x = noisy(rgb.x, ab, b=6)
    outs = [make_denoiser("pca_locality", chunk_size=c).fit(rgb).denoise(x, 0, ab).x0 for c in (1, 17, 1000)]
    for o in outs[1:]:
        assert rel(o, outs[0]) < 1e-5
    den = make_denoiser("pca_locality").fit(rgb)
    one_by_one = torch.cat([den.denoise(x[i:i + 1], 0, ab).x0 for i in range(6)])
    assert rel(one_by_one, outs[0]) < 1e-5
    perm = torch.randperm(rgb.n, generator=torch.Generator().manual_seed(5))
    shuffled = make_denoiser("pca_locality").fit(as_dataset(rgb.x[perm], "rgb-shuffled"))
    assert rel(shuffled.denoise(x, 0, ab).x0, outs[0]) < 1e-5


@pytest.mark.parametrize("ab", [0.01, 0.5, 0.97])
def test_theta_zero_is_optimal(rgb, ab):
    x = noisy(rgb.x, ab)
    den = make_denoiser("pca_locality", mask_threshold=0.0).fit(rgb)
    out = den.denoise(x, 0, ab)
    assert bool(den.level_mask(ab).all()) and out.shared["mask_density"] == 1.0
    assert rel(out.x0, optimal_ref(x, rgb.x, ab)) < 1e-5


def test_reference_normalisation_differs_exactly_where_diagonals_differ(rgb):
    ab = 0.9
    w = masks.wiener_matrix(gaussian_fit(rgb), ab)
    p_self, p_ref = masks.projection(w, "self"), masks.projection(w, "reference")
    diag = w.diagonal()
    same = torch.isclose(diag[:, None], diag[None, :], rtol=1e-12, atol=0)
    assert torch.allclose(p_self[same], p_ref[same], rtol=1e-12, atol=1e-15)
    ratio = p_ref[~same] / p_self[~same]
    assert torch.allclose(ratio, (diag[None, :] / diag[:, None]).expand_as(w)[~same], rtol=1e-9)
    assert (ratio - 1).abs().min() > 1e-6  # every pair of unequal diagonals changes P
    x = noisy(rgb.x, ab)
    dens = {n: make_denoiser("pca_locality", mask_normalization=n).fit(rgb) for n in ("self", "reference")}
    outs = {n: d.denoise(x, 0, ab) for n, d in dens.items()}
    assert not torch.equal(dens["self"].level_mask(ab), dens["reference"].level_mask(ab))
    assert rel(outs["self"].x0, outs["reference"].x0) > 1e-4


def test_equal_diagonals_make_the_normalisations_agree():
    data = as_dataset(smooth_images(120, (1, 6, 6), seed=7, stationary=True), "stationary")
    # Translation-invariant statistics: augment with every cyclic shift so all pixel variances are equal.
    shifted = torch.cat([torch.roll(data.x, (dy, dx), (2, 3)) for dy in range(6) for dx in range(6)])
    data = as_dataset(shifted, "cyclic")
    densities = []
    for ab in (0.9, 0.999, 0.99999):
        a = masks.locality_mask(data, ab, 0.05, "self")
        assert torch.equal(a, masks.locality_mask(data, ab, 0.05, "reference"))
        densities.append(float(a.float().mean()))
    assert min(densities) < 1


def test_masks_are_cached_by_dataset_level_threshold_and_normalisation(rgb, monkeypatch):
    ab = 0.21
    first = masks.locality_mask(rgb, ab, 0.05, "self")
    assert is_cached("locality-masks", masks.mask_key(rgb, ab, 0.05, "self"))
    assert not is_cached("locality-masks", masks.mask_key(rgb, ab, 0.06, "self"))
    assert not is_cached("locality-masks", masks.mask_key(rgb, ab, 0.05, "reference"))
    monkeypatch.setattr(masks, "gaussian_fit", lambda d: pytest.fail("the mask should come from the cache"))
    assert torch.equal(masks.locality_mask(rgb, ab, 0.05, "self"), first)


def test_a_step_reports_the_mask_density_without_copying_the_mask(rgb):
    """Each level's [D, D] mask stays out of the step record (a host copy per level was 151 MB at 3x64x64); the
    record carries its density, threshold and normalisation."""
    ab = 0.2
    den = make_denoiser("pca_locality").fit(rgb)
    out = den.denoise(noisy(rgb.x, ab), 0, ab)
    mask = den.level_mask(ab)
    assert mask.dtype == torch.bool and mask.shape == (rgb.dim, rgb.dim)
    assert torch.equal(mask, locality_mask_ref(rgb.x, ab, den.theta, "self"))
    assert "mask" not in out.shared and out.extras == {}
    assert out.shared["mask_density"] == pytest.approx(float(mask.float().mean()))
    assert out.shared["mask_normalization"] == "self"


KERNEL_DEVICES = [("torch", "cpu"), pytest.param("triton", "cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("kernel, device", KERNEL_DEVICES)
def test_plan_matches_dense_softmax_on_arbitrary_masks(kernel, device):
    """The tile/complement arrangement is exact for any 0/1 mask, not only Wiener masks."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(90, 50, generator=g) * 2 - 1
    mask = torch.rand(50, 50, generator=g) < 0.3  # columns 9..22: sparse tile
    mask[:, :7] = True  # all-ones columns
    mask[:, 7:9] = False  # empty columns: uniform weights
    mask[:, 23:] = True
    mask[:4, 23:39] = False  # columns 23..38: a complement tile
    plan = build_plan(mask, (50,), tile=16)
    assert plan.dense.tolist() == [*range(7), *range(39, 50)]
    assert plan.based.tolist() == [[False], [True]]
    bank = DataBank.from_flat(x, device)
    for ab in (0.1, 0.8):
        q = noisy(x, ab, b=3)
        out = masked_posterior_mean(q.to(device), bank, plan.to(device), ab, chunk=13, kernel=kernel)
        assert rel(out.cpu(), masked_softmax_ref(q, x, ab, mask)) < 1e-5


def test_tiles_reading_every_input_share_their_differences():
    """Tiles whose support is every input (scattered mid-noise masks) and tiles with a small support, in one call,
    over several default-sized CPU chunks and one given chunk size: the same as the dense float64 softmax."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(600, 48, generator=g) * 2 - 1
    mask = torch.rand(48, 48, generator=g) < 0.5  # columns 0..31: two tiles reading every input
    mask[10:, 32:] = False  # columns 32..47: a tile reading inputs 0..9 only
    plan = build_plan(mask, (48,), tile=16)
    assert [s.numel() for s in plan.supports] == [48, 48, 10]
    bank = DataBank.from_flat(x, "cpu")
    for ab, chunk in ((0.2, None), (0.9, None), (0.9, 7)):
        q = noisy(x, ab, b=3)
        assert rel(masked_posterior_mean(q, bank, plan, ab, chunk=chunk), masked_softmax_ref(q, x, ab, mask)) < 1e-5


@pytest.mark.parametrize("kept, group_bytes", [(True, None), (False, None), (False, 1)])
def test_torch_tiles_every_layout_and_way_to_q(monkeypatch, kept, group_bytes):
    """Tiles merged into one (identical sparse columns), tiles one at a time (compact windows, some starting from
    channel distances), whole mask blocks, all-ones columns; Q kept with the plan, formed per chunk for the whole
    plan, or per group inside the tile loop (from the rows just gathered): all the dense float64 softmax."""
    from studio.denoisers.masked import torch_tiles

    if not kept:
        monkeypatch.setattr(torch_tiles, "SQUARES_BYTES", 0)
    if group_bytes is not None:
        monkeypatch.setattr(torch_tiles, "GROUP_BYTES", group_bytes)
    g = torch.Generator().manual_seed(4)
    shape, D = (3, 8, 8), 192
    mixed = (torch.rand(D, generator=g) < 0.3)[:, None].expand(D, D).clone()  # columns 0..63: one shared support
    mixed[:, 64:] = masks.patch_mask(shape, 3)[:, 64:]
    mixed[torch.arange(0, D, 5)[:, None], torch.arange(64, 128)[None, :]] = True  # channel-based windows
    mixed[:, 150:] = torch.rand(D, 42, generator=g) < 0.8
    mixed[:, 180:] = True
    dense = torch.rand(D, D, generator=g) < 0.8  # every tile by its whole mask block
    x = torch.rand(200, D, generator=g) * 2 - 1
    bank = DataBank.from_flat(x, "cpu")
    seen = set()
    for mask in (mixed, dense):
        plan = build_plan(mask, shape)
        for group in torch_layout(plan):
            kinds = ("whole" if r.rows is None else "merged" if r.count > 1 else "one" for r in group.runs)
            seen |= {(kind, group.q_by_run) for kind in kinds}
            seen |= {("based", True)} if group.based is not None else set()
        for ab, chunk in ((0.1, None), (0.8, 37), (0.99, None)):
            q = noisy(x, ab, b=3)
            assert rel(masked_posterior_mean(q, bank, plan, ab, chunk=chunk), masked_softmax_ref(q, x, ab, mask)) < 1e-5
    assert {"whole", "merged", "one", "based"} <= {kind for kind, _ in seen}
    assert {True, False} <= {by_run for _, by_run in seen}


@pytest.mark.parametrize("kernel, device", KERNEL_DEVICES)
def test_plan_starts_tiles_from_channel_distances_where_cheaper(kernel, device):
    """An RGB mask whose columns read all of their own channel but a blob of the others: tiles are one
    channel each, start from their own channel's full distance and read only the blobs, and stay exact."""
    shape = (3, 8, 8)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(70, 192, generator=g) * 2 - 1
    mask = masks.patch_mask(shape, 3)
    channel = torch.arange(192) // 64
    mask |= channel[:, None] == channel[None, :]
    mask[torch.arange(0, 192, 7), 5] = False  # holes in column 5's own channel
    plan = build_plan(mask, shape, tile=16)
    for t in range(plan.n_tiles):
        real = plan.cols[t][plan.cols[t] < 192]
        own = int(channel[real[0]])
        assert bool((channel[real] == own).all())
        assert plan.based[t].tolist() == [k == own for k in range(3)]
    assert plan.work() < 0.5 * build_plan(mask, (192,), tile=16).work()
    other = (channel[:, None] == (channel[None, :] + 1) % 3)  # every column reads exactly the next channel
    plan_other = build_plan(other, shape, tile=16)
    assert plan_other.work() == 0 and plan_other.based.sum(1).tolist() == [1] * plan_other.n_tiles
    bank = DataBank.from_flat(x, device)
    for ab in (0.1, 0.8):
        q = noisy(x, ab, b=4)
        for m, p in ((mask, plan), (other, plan_other)):
            out = masked_posterior_mean(q.to(device), bank, p.to(device), ab, chunk=29, kernel=kernel)
            assert rel(out.cpu(), masked_softmax_ref(q, x, ab, m)) < 1e-5


def test_bad_parameters_and_memory_are_clear_errors(rgb, monkeypatch):
    with pytest.raises(ValueError, match="mask_normalization"):
        make_denoiser("pca_locality", mask_normalization="diag")
    with pytest.raises(ValueError, match="mask_threshold"):
        make_denoiser("pca_locality", mask_threshold=2)
    with pytest.raises(ValueError, match="kernel"):
        make_denoiser("pca_locality", kernel="cuda")
    monkeypatch.setattr(budget, "CPU_BUDGET_BYTES", 10_000)
    with pytest.raises(ValueError, match=r"GiB.*budget"):
        make_denoiser("pca_locality").fit(rgb)


@pytest.mark.gpu
@pytest.mark.parametrize("cache_squares", [True, False])
def test_triton_kernel_matches_float64_on_gpu(rgb, cache_squares, monkeypatch):
    from studio.denoisers.masked import triton_tiles as masked_triton

    monkeypatch.setattr(masked_triton, "SQUARES_SHARE", 0.25 if cache_squares else 0.0)
    for ab in LEVELS:
        for b in (1, 5, 19):
            x = noisy(rgb.x, ab, b=b).cuda()
            out = make_denoiser("pca_locality", device="cuda", kernel="triton").fit(rgb).denoise(x, 0, ab)
            assert rel(out.x0.cpu(), pca_locality_ref(x.cpu(), rgb.x, ab, 0.02)) < 1e-4


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (8, 8), (37, 37), (2, 3, 7)])
def test_packed_masks_round_trip_exactly(shape):
    g = torch.Generator().manual_seed(sum(shape))
    for density in (0.0, 0.03, 0.5, 0.97, 1.0):
        mask = torch.rand(shape, generator=g) < density
        bits = masks.pack_bits(mask)
        assert bits.dtype == torch.uint8 and bits.numel() == -(-mask.numel() // 8)
        assert torch.equal(masks.unpack_bits(bits, shape), mask)


def test_gaussian_fit_matches_the_float64_covariance(rgb):
    from studio.denoisers.wiener import centred_covariance

    d = rgb.flat().double()
    ref = (d - d.mean(0)).T @ (d - d.mean(0)) / d.shape[0]
    for rows in (7, 64, None):  # blocks of rows are summed exactly in float64: any block size, one result
        mu, cov = centred_covariance(rgb.flat(), torch.device("cpu"), rows)
        assert torch.allclose(mu, d.mean(0), rtol=0, atol=1e-14)
        assert torch.allclose(cov, ref, rtol=0, atol=1e-14 * ref.abs().max())
    fit = gaussian_fit(rgb)
    rebuilt = (fit["u"] * fit["lam"]) @ fit["u"].T
    assert torch.allclose(rebuilt, ref, rtol=0, atol=1e-12 * ref.abs().max())
    assert gaussian_fit(rgb) is fit  # kept in memory for the process


@pytest.mark.parametrize("ab", [0.01, 0.3, 0.95])
def test_recomputed_and_stored_masks_agree_with_the_reference(rgb, ab):
    ref = locality_mask_ref(rgb.x, ab, 0.05, "self")
    fresh = masks.locality_mask(rgb, ab, 0.05, "self", store=False)
    assert not is_cached("locality-masks", masks.mask_key(rgb, ab, 0.05, "self"))  # recomputing writes nothing
    stored = masks.locality_mask(rgb, ab, 0.05, "self", store=True)
    again = masks.locality_mask(rgb, ab, 0.05, "self", store=True)  # read back from the packed file
    assert is_cached("locality-masks", masks.mask_key(rgb, ab, 0.05, "self"))
    for m in (fresh, stored, again):
        assert m.device.type == "cpu" and torch.equal(m, ref)


@pytest.mark.gpu
@pytest.mark.parametrize("ab", [0.01, 0.3, 0.95])
def test_gpu_fit_and_masks_equal_the_cpu_ones(rgb, ab):
    from studio.denoisers.wiener import fit_gaussian

    cpu, gpu = fit_gaussian(rgb.flat(), torch.device("cpu")), fit_gaussian(rgb.flat(), torch.device("cuda"))
    assert gpu["u"].is_cuda and gpu["u"].dtype == torch.float64
    w_cpu = masks.wiener_matrix(cpu, ab)
    w_gpu = masks.wiener_matrix(gpu, ab, "cuda").cpu()
    assert torch.allclose(w_gpu, w_cpu, rtol=0, atol=1e-12 * w_cpu.abs().max())
    assert torch.equal(masks.locality_mask(rgb, ab, 0.05, "self", "cuda"), locality_mask_ref(rgb.x, ab, 0.05, "self"))


@pytest.mark.parametrize("BK", [1, 16, 64])
def test_padded_supports_match_a_per_tile_loop(rgb, BK):
    from studio.denoisers.masked.plan import padded_supports

    plan = build_plan(locality_mask_ref(rgb.x, 0.3, 0.05), rgb.shape, 16)
    kidx, blk, ptr = padded_supports(plan, BK, torch.device("cpu"))
    idx, rows, ref_ptr = [], [], [0]
    for support, block in zip(plan.supports, plan.blocks):  # the per-tile reference
        pad = -support.numel() % BK
        idx.append(torch.cat([support, torch.full((pad,), plan.D, dtype=torch.long)]))
        rows.append(torch.cat([block, torch.zeros(pad, block.shape[1])]))
        ref_ptr.append(ref_ptr[-1] + support.numel() + pad)
    assert ptr == ref_ptr and torch.equal(kidx, torch.cat(idx)) and torch.equal(blk, torch.cat(rows))


@pytest.mark.gpu
@pytest.mark.parametrize("ab", [0.05, 0.5, 0.95])
def test_plans_built_on_the_gpu_equal_the_cpu_ones(rgb, ab):
    mask = locality_mask_ref(rgb.x, ab, 0.05)
    cpu, gpu = build_plan(mask, rgb.shape, 16), build_plan(mask.cuda(), rgb.shape, 16)
    assert torch.equal(cpu.dense, gpu.dense.cpu()) and torch.equal(cpu.cols, gpu.cols.cpu())
    assert torch.equal(cpu.based, gpu.based.cpu()) and len(cpu.supports) == len(gpu.supports)
    for a, b, c, d in zip(cpu.supports, gpu.supports, cpu.blocks, gpu.blocks):
        assert torch.equal(a, b.cpu()) and torch.equal(c, d.cpu())
