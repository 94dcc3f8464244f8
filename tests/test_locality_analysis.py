"""The UI's locality maps: the denoiser's own mask column and the Wiener row, shaped like the image."""

import pytest
import torch

from locality_data import as_dataset, noisy, smooth_images
from studio.analysis.locality import locality_stack, locality_view
from studio.denoisers import make_denoiser
from studio.denoisers.reference import locality_mask_ref
from studio.diffusion.schedules import Schedule


@pytest.fixture(scope="module")
def data():
    return as_dataset(smooth_images(120, (3, 5, 6), seed=9), "maps")


def dense_wiener(data, ab):
    d = data.flat().double()
    cov = (d - d.mean(0)).T @ (d - d.mean(0)) / d.shape[0]
    return torch.linalg.solve(ab * cov + (1 - ab) * torch.eye(cov.shape[0], dtype=torch.float64), ab * cov).T


@pytest.mark.parametrize("norm", ["self", "reference"])
def test_view_is_the_mask_column_and_wiener_row(data, norm):
    t = 300
    ab = Schedule.build().ab(t)
    view = locality_view(data, (2, 4), t=t, channel=1, mask_threshold=0.05, mask_normalization=norm)
    m = (1 * 5 + 2) * 6 + 4
    assert view.coordinate == (1, 2, 4) and view.t == t and view.alpha_bar == ab
    assert view.mask.shape == view.wiener_row.shape == view.projection.shape == data.shape
    assert torch.equal(view.mask.reshape(-1), locality_mask_ref(data.x, ab, 0.05, norm)[:, m])
    w = dense_wiener(data, ab)
    assert torch.allclose(view.wiener_row.reshape(-1), w[m], rtol=1e-8, atol=1e-12)
    diag = w.diagonal()
    expected = w[:, m] / diag[m] if norm == "self" else w[:, m] / diag
    assert torch.allclose(view.projection.reshape(-1), expected, rtol=1e-8, atol=1e-12)
    assert view.mask_density == pytest.approx(float(locality_mask_ref(data.x, ab, 0.05, norm).float().mean()))


def test_view_matches_what_the_denoiser_used(data):
    ab = 0.8
    den = make_denoiser("pca_locality").fit(data)
    out = den.denoise(noisy(data.x, ab), 0, ab)
    view = locality_view(data, (0, 5), alpha_bar=ab)
    assert view.mask_threshold == out.shared["mask_threshold"] == 0.02
    assert torch.equal(view.mask.reshape(-1), den.level_mask(ab)[:, 5])


def test_stack_over_a_run(data):
    sched = Schedule.build()
    ts = [999, 500, 100, 0]
    stack = locality_stack(data, (1, 1), timesteps=ts, alpha_bars=[sched.ab(t) for t in ts])
    assert stack.masks.shape == (4, *data.shape) and stack.masks.dtype == torch.bool
    assert stack.wiener_rows.shape == (4, *data.shape) and stack.timesteps == ts
    assert len(stack.mask_densities) == 4
    sizes = stack.masks.flatten(1).sum(1)
    assert sizes[0] >= sizes[-1]  # the support shrinks as the noise fades
    for k, t in enumerate(ts):
        one = locality_view(data, (1, 1), t=t)
        assert torch.equal(one.mask, stack.masks[k])
        assert torch.allclose(one.wiener_row, stack.wiener_rows[k], rtol=1e-12, atol=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"pixel": (5, 0), "t": 3}, "pixel"),
    ({"pixel": (0, 0), "t": 3, "channel": 3}, "channel"),
    ({"pixel": (0, 0), "t": 1000}, "t"),
    ({"pixel": (0, 0), "alpha_bar": 1.0}, "alpha_bar"),
    ({"pixel": (0, 0)}, "t"),
    ({"pixel": (0, 0), "t": 3, "mask_normalization": "row"}, "mask_normalization"),
])
def test_bad_requests_are_clear_errors(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        locality_view(data, **kwargs)
