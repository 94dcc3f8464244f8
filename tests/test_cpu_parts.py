"""CPU work run as fixed parts on single-threaded workers: the same numbers whatever the thread count."""

import pytest
import torch

from locality_data import noisy
from studio.denoisers.masked import masks, torch_tiles
from studio.denoisers.masked.denoiser import masked_posterior_mean
from studio.denoisers.masked.plan import build_plan
from studio.denoisers.softmax import DataBank, posterior_mean


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_optimal_and_tiles_equal_bit_for_bit_on_one_and_two_threads(threads):
    g = torch.Generator().manual_seed(7)
    shape, D = (3, 8, 8), 192
    x = torch.rand(300, D, generator=g) * 2 - 1
    mask = masks.patch_mask(shape, 3) | (torch.rand(D, D, generator=g) < 0.2)
    out = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        bank = DataBank.from_flat(x, "cpu")
        plan = build_plan(mask, shape)
        torch_tiles.prepare(plan, bank)
        q = noisy(x, 0.5, b=5)
        out[n] = (posterior_mean(q, bank, 0.5).mean, masked_posterior_mean(q, bank, plan, 0.5),
                  torch_tiles.kept_squares(plan, bank))
    whole = torch_tiles.plan_squares(torch_tiles.torch_layout(plan), bank.x.T.contiguous() ** 2,
                                     bank.channel_sq_norms(3))
    assert torch.equal(out[1][2], whole)  # Q made in slices of the data: the numbers of one product
    for a, b in zip(out[1], out[2]):
        assert torch.equal(a, b)
