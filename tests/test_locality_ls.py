"""Local score machines against float64 brute force, border pixels included; patch-size schedules."""

import json
import os
import random

import pytest
import torch

from locality_data import as_dataset, noisy, rel, smooth_images
from studio.denoisers import make_denoiser
from studio.denoisers.patch_schedule import PatchSchedule, auto_patch_size, full_window, load_schedule, save_schedule
from studio.denoisers.reference import els_ref, els_unfold_fp32, ls_ref, optimal_ref
from studio.denoisers.windows import torch_scan
from studio.denoisers.windows.geometry import KeyBanks, shape_groups
from studio.denoisers.windows.layout import Training, divisor_magic, level_layout, pick_blocks


@pytest.fixture(scope="module")
def tiny():
    return as_dataset(smooth_images(10, (2, 5, 6), seed=8), "tiny")


def els_loops(x_t: torch.Tensor, data: torch.Tensor, ab: float, k: int) -> torch.Tensor:
    """The ELS machine written as loops: every window of the query pixel's clipped shape inside every
    training image is a candidate; distances by explicit differences; float64."""
    B, C, H, W = x_t.shape
    h = k // 2
    x, d = x_t.double(), data.double()
    out = torch.empty(B, C, H, W, dtype=torch.float64)
    for y in range(H):
        for xx in range(W):
            offs = [(dy, dx) for dy in range(-h, h + 1) for dx in range(-h, h + 1)
                    if 0 <= y + dy < H and 0 <= xx + dx < W]
            ys, xs = torch.tensor([o[0] for o in offs]), torch.tensor([o[1] for o in offs])
            query = x[:, :, y + ys, xx + xs]  # [B, C, |offs|]
            logits, values = [], []
            for qy in range(H):
                for qx in range(W):
                    if all(0 <= qy + dy < H and 0 <= qx + dx < W for dy, dx in offs):
                        cand = ab**0.5 * d[:, :, qy + ys, qx + xs]  # [N, C, |offs|]
                        dist = ((query[:, None] - cand[None]) ** 2).sum((2, 3))  # [B, N]
                        logits.append(-dist / (2 * (1 - ab)))
                        values.append(d[:, :, qy, qx])
            w = torch.softmax(torch.cat(logits, 1), 1)  # [B, N * positions]
            out[:, :, y, xx] = w @ torch.cat(values)
    return out


@pytest.mark.parametrize("ab", [0.1, 0.7])
@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_els_matches_loops_and_reference(tiny, ab, k):
    """k = 9 on 5 x 6 images: windows as tall as the image, so one shape holds a pixel at every row offset."""
    x = noisy(tiny.x, ab, b=2)
    loops = els_loops(x, tiny.x, ab, k)
    assert rel(els_ref(x, tiny.x, ab, k), loops) < 1e-12
    out = make_denoiser("els", patch_size=k, chunk_size=3).fit(tiny).denoise(x, 0, ab)
    assert rel(out.x0, loops) < 1e-5 and out.shared == {"patch_size": k}
    assert rel(els_unfold_fp32(x, tiny.x, ab, k, chunk=4), loops) < 1e-5  # the previous release, bench's yardstick


@pytest.fixture(scope="module")
def levels():
    """Gray images on 5 levels: many training windows repeat (the deduplicated keys carry their counts)."""
    x = torch.round(smooth_images(40, (1, 7, 8), seed=3) * 2) / 2
    return as_dataset(x, "levels")


@pytest.mark.parametrize("ab", [0.05, 0.5, 0.995])
@pytest.mark.parametrize("k", [3, 5])
def test_els_is_exact_whatever_the_parts_threads_tiles_and_duplicates(levels, ab, k):
    x = noisy(levels.x, ab, b=5)
    ref = els_ref(x, levels.x, ab, k)
    den = make_denoiser("els", patch_size=k).fit(levels)
    kept = den.key_banks(k)
    raw = sum(levels.n * g.positions(7, 8) for g in kept.groups)
    assert kept.kept is not None and sum(v.n for v in kept.kept.values()) < 0.75 * raw  # duplicates merged
    streamed = KeyBanks(den.images, k, budget=0)
    assert streamed.kept is None
    outs = [den.denoise_at(x, ab, k).x0]
    for banks in (kept, streamed):
        for opts in ({"threads": 1}, {"threads": 2, "chunk": 3}, {"threads": 3, "chunk": 1, "tile": 64}):
            outs.append(torch_scan.els_mean(x, banks, ab, **opts))
    for out in outs:
        assert rel(out, ref) < 1e-5
    assert rel(outs[1], outs[0]) < 1e-6


def test_els_parts_give_the_same_bits_on_any_number_of_threads(levels):
    x = noisy(levels.x, 0.3, b=4)
    banks = make_denoiser("els", patch_size=3).fit(levels).key_banks(3)
    one = torch_scan.els_mean(x, banks, 0.3, chunk=2, threads=1)
    assert torch.equal(torch_scan.els_mean(x, banks, 0.3, chunk=2, threads=2), one)


@pytest.mark.parametrize("ab", [0.05, 0.6, 0.99])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_ls_matches_float64_brute_force(tiny, ab, k):
    x = noisy(tiny.x, ab, b=3)
    out = make_denoiser("ls", patch_size=k, chunk_size=4).fit(tiny).denoise(x, 0, ab)
    assert rel(out.x0, ls_ref(x, tiny.x, ab, k)) < 1e-5


@pytest.mark.parametrize("name", ["ls", "els"])
@pytest.mark.parametrize("ab", [0.02, 0.9])
def test_whole_image_patch_is_optimal(tiny, name, ab):
    x = noisy(tiny.x, ab)
    k = full_window(tiny.shape)
    assert k == 11
    out = make_denoiser(name, patch_size=k).fit(tiny).denoise(x, 0, ab).x0
    assert rel(out, optimal_ref(x, tiny.x, ab)) < 1e-5


def test_els_is_translation_equivariant_in_the_interior():
    """Shifting the training set changes nothing; shifting an interior query shifts the output."""
    data = as_dataset(smooth_images(12, (1, 9, 9), seed=5), "equi")
    x = noisy(data.x, 0.5, b=1)
    den = make_denoiser("els", patch_size=3).fit(data)
    out = den.denoise(x, 0, 0.5).x0
    moved = den.denoise(torch.roll(x, 1, 3), 0, 0.5).x0
    # Pixels whose 3x3 window stays inside the image before and after the shift.
    assert rel(moved[..., 1:-1, 2:-1], out[..., 1:-1, 1:-2]) < 1e-5


def test_auto_schedule_comes_from_the_locality_masks():
    data = as_dataset(smooth_images(300, (1, 8, 8), seed=6), "auto")
    sizes = [auto_patch_size(data, ab) for ab in (1e-4, 0.3, 0.9, 0.999)]
    assert sizes[0] == full_window(data.shape)  # all-ones masks at high noise: the whole image
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]
    assert all(k % 2 == 1 for k in sizes)
    den = make_denoiser("ls").fit(data)
    assert den.denoise(noisy(data.x, 0.999), 0, 0.999).shared["patch_size"] == sizes[-1]


def test_schedule_files_round_trip_and_pick_the_nearest_level(tmp_path, tiny):
    sched = PatchSchedule([{"t": 900, "alpha_bar": 0.001, "patch_size": 9},
                           {"t": 100, "alpha_bar": 0.9, "patch_size": 3}], {"denoiser": "els"})
    for name in ("s.yaml", "s.json"):
        save_schedule(sched, tmp_path / name)
        back = load_schedule(tmp_path / name)
        assert back.entries == sched.entries and back.meta == {"denoiser": "els"}
    assert back.size(0.002) == 9 and back.size(0.5) == 3 and back.size(0.95) == 3
    den = make_denoiser("els", patch_schedule=str(tmp_path / "s.json")).fit(tiny)
    x = noisy(tiny.x, 0.9)
    assert den.denoise(x, 100, 0.9).shared["patch_size"] == 3
    assert den.denoise(x, 900, 0.001).shared["patch_size"] == 9


@pytest.mark.parametrize("body, match", [
    ({"entries": []}, "non-empty"),
    ({"entries": [{"alpha_bar": 0.5}]}, "alpha_bar and patch_size"),
    ({"entries": [{"alpha_bar": 1.5, "patch_size": 3}]}, r"\(0, 1\)"),
    ({"entries": [{"alpha_bar": 0.5, "patch_size": 4}]}, "odd"),
])
def test_bad_schedules_and_sizes_are_clear_errors(tmp_path, tiny, body, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match=match):
        make_denoiser("ls", patch_schedule=str(path)).fit(tiny)


def test_missing_file_and_bad_patch_size(tmp_path, tiny):
    with pytest.raises(ValueError, match="no such file"):
        make_denoiser("els", patch_schedule=str(tmp_path / "none.yaml")).fit(tiny)
    with pytest.raises(ValueError, match="odd integer"):
        make_denoiser("ls", patch_size=4).fit(tiny)
    with pytest.raises(ValueError, match="odd integer"):
        make_denoiser("els", patch_size=13).fit(tiny)
    points = as_dataset(torch.zeros(4, 1, 2, 2), "p")
    points.kind = "points"
    points.x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="image"):
        make_denoiser("els").fit(points)


def _triton_cases():
    """(data, k) pairs for the Triton kernel: RGB and gray, fractional data (hi + lo halves) and 8-bit data (exact
    fp16 integers 255 x), windows narrower than, as tall as, and within one pixel of the image (blocks of more
    offsets than a group of value columns holds)."""
    smooth, gray = smooth_images(12, (3, 5, 6), seed=4), smooth_images(12, (1, 7, 6), seed=5)
    eight_bit = torch.round(smooth * 255) / 255
    return ([(smooth, k) for k in (1, 3, 5, 9)] + [(eight_bit, k) for k in (3, 7)] + [(gray, k) for k in (3, 9)]
            + [(torch.round(gray * 255) / 255, 5)])


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="set TRITON_INTERPRET=1 (CPU interpreter)")
def test_els_triton_kernel_interpreted_matches_float64(monkeypatch):
    """The kernel itself, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1 python -m pytest -k triton)."""
    pytest.importorskip("triton")
    from studio.denoisers.windows import triton_scan

    for data, k in _triton_cases():
        train = triton_scan.Training.build(data)
        assert train.exact == bool((torch.round(data * 255) / 255 == data).all())
        for ab, b in ((0.02, 3), (0.6, 1), (0.995, 2)):
            x = noisy(data, ab, b=b)
            assert rel(triton_scan.els_mean(x, train, k, ab), els_ref(x, data, ab, k)) < 1e-5
    # many key blocks split over several programs per block; the smallest tiles; a block layout reused
    data = torch.round(smooth_images(16, (3, 9, 8), seed=6) * 255) / 255
    train, layouts = triton_scan.Training.build(data), {}
    for cfg in ({}, {"BQ": 16, "BK": 16, "BKEY": 32, "programs_per_sm": 4}):
        monkeypatch.setattr(triton_scan, "ELS_TRITON_CONFIG", {**triton_scan.ELS_TRITON_CONFIG, **cfg})
        for k, ab in ((3, 0.3), (5, 0.9), (5, 0.9)):
            x = noisy(data, ab, b=3)
            assert rel(triton_scan.els_mean(x, train, k, ab, layouts=layouts), els_ref(x, data, ab, k)) < 1e-5
    assert len(layouts) == 4


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="set TRITON_INTERPRET=1 (CPU interpreter)")
def test_els_triton_keys_cross_images_and_slices(monkeypatch):
    """The kernel's key index (image, position) by multiply-high: shapes with fewer positions than a key block (a
    block spans several images) and with more (a block spans at most two), key slices ending inside an image and
    at the last key; 8-bit and fractional data."""
    pytest.importorskip("triton")
    from studio.denoisers.windows import triton_scan

    gray = smooth_images(5, (1, 14, 13), seed=7)
    for k in (3, 9):
        npos = level_layout(1, 1, 14, 13, k, 16, 16, torch.device("cpu")).meta[:, 15]
        assert bool((npos > 128).any()) == (k == 3) and bool((npos < 32).any()) == (k == 9)
    for data in (gray, torch.round(gray * 255) / 255):
        train = triton_scan.Training.build(data)
        for cfg in ({}, {"BQ": 16, "BK": 16, "BKEY": 32, "programs_per_sm": 16}):
            monkeypatch.setattr(triton_scan, "ELS_TRITON_CONFIG", {**triton_scan.ELS_TRITON_CONFIG, **cfg})
            for k, ab in ((3, 0.2), (9, 0.9)):
                x = noisy(data, ab, b=1)
                assert rel(triton_scan.els_mean(x, train, k, ab), els_ref(x, data, ab, k)) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["triton", "torch"])
def test_els_on_gpu_matches_float64(kernel):
    for data, k in _triton_cases():
        den = make_denoiser("els", device="cuda", kernel=kernel, patch_size=k).fit(as_dataset(data, "gpu"))
        for ab in (0.02, 0.6, 0.995):
            for b in (1, 5, 19):
                x = noisy(data, ab, b=b)
                out = den.denoise(x.cuda(), 0, ab).x0
                assert out.is_cuda and rel(out.cpu(), els_ref(x, data, ab, k)) < 1e-5


@pytest.mark.gpu
def test_els_triton_at_a_larger_size_matches_float64():
    """RGB 16 x 16 photo-like images, 150 of them, patch sizes up to a window nearly as wide as the image."""
    data = as_dataset(smooth_images(150, (3, 16, 16), seed=2), "rgb16")
    den = make_denoiser("els", device="cuda", kernel="triton").fit(data)
    for k in (1, 3, 5, 9, 15, 29):
        for ab in (0.05, 0.5, 0.98):
            x = noisy(data.x, ab, b=6)
            out = den.denoise_at(x.cuda(), ab, k).x0.cpu()
            # H200: at most 3.4e-6, except 1.1e-5 at k=29, ā=0.05 (nearly whole-image windows: the fp16 hi/lo
            # products carry 22 bits over 2,523 terms)
            assert rel(out, els_ref(x, data.x, ab, k)) < 2e-5


def test_els_triton_compiles_each_variant_of_a_runs_levels_once(monkeypatch):
    """compile_levels compiles (warmup: no run) every kernel variant the levels' launches use, each once, from the
    first patch size that needs it; the block layouts it builds are the ones the calls then reuse."""
    pytest.importorskip("triton")
    from studio.denoisers.windows import triton_scan

    compiled = []

    class Recorder:
        def warmup(self, *args, grid, **options):
            assert len(grid) == 2 and len(args) == 20
            compiled.append(tuple(sorted(options.items())))

    monkeypatch.setattr(triton_scan, "_els_kernel", Recorder())
    train, layouts = triton_scan.Training.build(torch.round(smooth_images(16, (3, 9, 8), seed=6) * 255) / 255), {}
    ks, x = [3, 5, 7, 5, 15], torch.ones(4, 3, 9, 8)
    assert triton_scan.compile_levels(tuple(x.shape), train, ks, layouts, threads=3) == len(compiled)
    wanted = {tuple(sorted(options.items())) for k in ks
              for _, _, options in triton_scan.level_launches(x, train, k, 0.5, layouts=layouts).calls}
    assert len(compiled) == len(set(compiled)) and set(compiled) == wanted and len(wanted) >= 4
    assert len(layouts) == 4  # one per distinct k, built once


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="set TRITON_INTERPRET=1 (CPU interpreter)")
def test_an_els_run_compiles_its_levels_kernels_at_its_first_call(monkeypatch):
    """After prepare(levels) the first Triton call compiles the variants of every level's patch size (not the whole
    window's: optimal serves it) for its batch, once; the results are those of calls without it."""
    pytest.importorskip("triton")
    from studio.denoisers.windows import triton_scan

    data = as_dataset(torch.round(smooth_images(12, (3, 5, 6), seed=4) * 255) / 255, "rgb5x6")
    asked = []
    real = triton_scan.compile_levels
    monkeypatch.setattr(triton_scan, "compile_levels", lambda shape, train, ks, layouts: asked.append(
        (shape, list(ks))) or real(shape, train, ks, layouts))
    levels = [0.02, 0.3, 0.6, 0.995]
    den = make_denoiser("els", kernel="triton").fit(data)
    plain = [den.denoise(noisy(data.x, ab, b=3), 0, ab).x0 for ab in levels]
    assert not asked
    den.prepare(levels)
    ks = [k for k in dict.fromkeys(den.patch_size(ab) for ab in levels) if k != full_window(data.shape)]
    for ab, want in zip(levels, plain):
        assert torch.equal(den.denoise(noisy(data.x, ab, b=3), 0, ab).x0, want)
    assert asked == [((3, 3, 5, 6), ks)] and ks and den.upcoming == []


@pytest.mark.parametrize("shape, k, B", [((3, 5, 6), 3, 2), ((1, 8, 8), 5, 3), ((2, 5, 6), 9, 4), ((3, 12, 10), 7, 19)])
def test_triton_layout_covers_every_row_once(shape, k, B):
    """The kernel's block layout (built without Triton): each (shape, offset) block lists the offsets its rows use,
    every query row sits in exactly one block of its shape's size, and each launch's key slices add up to about the
    programs asked for."""
    C, H, W = shape
    BQ, BK = pick_blocks(B, C, H, W, k, 280.0, 200.0)
    lay = level_layout(B, C, H, W, k, BQ, BK, torch.device("cpu"), 280.0, 200.0)
    groups = shape_groups(H, W, k)
    seen = torch.zeros(lay.R_pad, dtype=torch.long)
    for blk in lay.meta.tolist():
        s, row0, rows, n_off, ostart = blk[:5]
        g = groups[s]
        assert 1 <= rows <= BQ[s] == blk[10] and (blk[12], blk[13]) == (g.kh, g.kw)
        assert blk[17] % BK == 0 and blk[17] >= blk[16]
        offs = [tuple(o) for o in lay.offs[ostart:ostart + n_off].tolist()]
        for r in range(row0, row0 + rows):
            local = int(lay.roff[r])
            assert 0 <= local < n_off and bool(lay.rvalid[r]) and int(lay.rshape[r]) == s
            seen[r] += 1
        up_left = torch.tensor([offs[int(lay.roff[r])] for r in range(row0, row0 + rows)])
        real = lay.rvalid.nonzero().squeeze(1).tolist()
        first = real.index(row0)
        pix = lay.dest[first:first + rows, 0] - lay.rowbase[row0:row0 + rows]  # the pixel's place in its window
        assert torch.equal(pix, up_left[:, 0] * W + up_left[:, 1])
    assert int(seen.sum()) == B * H * W and int(seen.max()) == 1 and int(lay.rvalid.sum()) == B * H * W
    assert sorted(lay.dest[:, 0].tolist()) == [b * C * H * W + i for b in range(B) for i in range(H * W)]
    x = torch.randn(B, C, H, W)
    q, out = lay.queries(x), torch.full_like(x, torch.nan)
    lay.scatter(out, q[:, :C] * 0 + torch.arange(lay.R_pad)[:, None].float())  # each pixel gets its row number
    for s, g in enumerate(groups):  # the rows of a shape hold the pixels' windows, zero beyond the width
        for r in (lay.rshape == s).nonzero().squeeze(1).tolist():
            if lay.rvalid[r]:
                b, y, xx = int(lay.rowbase[r]) // (C * H * W), *divmod(int(lay.rowbase[r]) % (H * W), W)
                want = x[b, :, y:y + g.kh, xx:xx + g.kw].reshape(-1)
                assert torch.equal(q[r, :want.numel()], want) and not q[r, want.numel():].any()
    assert not out.isnan().any()
    launches, most = lay.meta_for(50, 40, 32)
    assert sorted(bq for bq, _ in launches) == sorted(set(BQ))
    assert sum(len(meta) for _, meta in launches) == len(lay.meta)
    for bq, meta in launches:
        assert bool((meta[:, 10] == bq).all()) and 1 <= int(meta[:, 5].min()) and int(meta[:, 5].max()) <= most
        fair = torch.minimum(torch.full((len(meta),), 40.0), (50 * meta[:, 15].double() / 32).ceil()).sum()
        assert int(meta[:, 5].sum()) <= max(1.5 * fair, len(meta))


def test_triton_block_sizes_follow_the_shapes_rows():
    """Per shape, the block that costs least: the interior shape of a 32 x 32 level (2,592 rows) in blocks of 128,
    the corner shape (4 pixels: 32 rows) in small ones; with no gather cost, large blocks gain nothing."""
    groups = shape_groups(32, 32, 15)
    BQ, _ = pick_blocks(8, 3, 32, 32, 15, 280.0, 200.0)
    interior = max(range(len(groups)), key=lambda s: groups[s].pixels)
    corner = min(range(len(groups)), key=lambda s: groups[s].pixels)
    assert BQ[interior] == 128 and BQ[corner] <= 32 and groups[corner].pixels == 4
    assert set(pick_blocks(8, 3, 32, 32, 15, 280.0, 0.0)[0]) == {16}


def test_divisor_magic_divides_every_31_bit_index():
    """x // d == umulhi(2x, m) >> s at the edges of the proof's range: d of every size, x at multiples of d and
    around them, near 2^31, and random pairs; the magic needs d < 2^31."""
    ds = [1, 2, 3, 5, 6, 7, 12, 30, 100, 132, 641, 1023, 1024, 1025, 4095, 65537, 2**20 + 1, 10**9, 2**30,
          2**30 + 1, 2**31 - 1]
    top = 2**31 - 1
    for d in ds:
        m, s = divisor_magic(d)
        assert -(2**31) <= m < 2**31 and 0 <= s <= 31
        mu = m % 2**32
        xs = {0, 1, d - 1, d, d + 1, top, top - 1, top - top % d, top - top % d - 1}
        xs |= {q * d + r for q in (1, 2, 3, top // d - 1, top // d) for r in (-1, 0, 1, d - 1)}
        for x in sorted(v for v in xs if 0 <= v <= top):
            assert ((2 * x * mu) >> 32) >> s == x // d, (d, x)
    rng = random.Random(0)
    for d, x in ((rng.randrange(1, 2**rng.randrange(1, 32)), rng.randrange(2**31)) for _ in range(5000)):
        m, s = divisor_magic(d)
        assert ((2 * x * (m % 2**32)) >> 32) >> s == x // d, (d, x)
    for bad in (0, 2**31):
        with pytest.raises(ValueError, match="2\\^31"):
            divisor_magic(bad)


def test_training_planes_are_exact_for_8_bit_data():
    eight_bit = torch.round(smooth_images(5, (3, 4, 4), seed=1) * 255) / 255
    train = Training.build(eight_bit)
    assert train.exact and train.scale == 255 and bool((train.hi.float() / 255 == eight_bit).all())
    assert not Training.build(smooth_images(5, (3, 4, 4), seed=1)).exact
    sq = (eight_bit.double() ** 2).sum(1)
    assert torch.allclose(train.sat[:, 1:3, 2:4].diff(dim=1).diff(dim=2).squeeze(), sq[:, 1, 2], rtol=0, atol=1e-12)
