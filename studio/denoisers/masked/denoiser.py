"""The base class of the masked-softmax denoisers (pca_locality, ls): the resident data, one column plan per
mask kept in memory, and the choice between the torch and the Triton tiles."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import torch

from studio.cache import Recent
from studio.data.dataset import Dataset
from studio.denoisers.base import Denoiser
from studio.denoisers.budget import require
from studio.denoisers.masked import torch_tiles
from studio.denoisers.kernels import KERNELS, use_triton
from studio.denoisers.masked.ahead import LevelsAhead
from studio.denoisers.masked.plan import ColumnPlan, plan_for
from studio.denoisers.softmax import DataBank, posterior_mean
from studio.params import Param

KERNEL = Param("kernel", str, "auto", "masked-softmax implementation: auto = Triton on CUDA when installed, else torch",
               choices=KERNELS)
PLANS_KEPT = 64


@dataclass
class MaskEntry:
    """A noise level's column plan (on the device) and the fraction of ones in its mask. The [D, D] mask itself is
    not kept: the plan holds what the kernels need, and a host copy per level cost 9.4 MB (151 MB at 3x64x64)."""

    plan: ColumnPlan
    density: float


class MaskedSoftmaxDenoiser(Denoiser):
    """Shared machinery of the masked-softmax denoisers: the resident data, and one plan per mask kept in
    memory (least recently used dropped), so a step only looks its plan up."""

    def _fit_bank(self, dataset: Dataset) -> None:
        D = dataset.dim
        require(4 * D * D * 2 + 4 * dataset.n * D, self.device, f"denoiser.{self.name}: masks and training data")
        self.bank = DataBank.from_dataset(dataset, self.device)
        self.plans = Recent(keep=PLANS_KEPT)  # MaskEntry by mask key
        self.ahead = LevelsAhead(self.device, self._prepare_level)

    def level(self, ab: float) -> tuple[Hashable, Callable[[], torch.Tensor]]:
        """The key of the mask used at ā, and how to make that mask (bool [D, D])."""
        raise NotImplementedError

    def prepare(self, alpha_bars: Sequence[float]) -> None:
        self._check_fitted()
        if self.ahead.depth and self._triton():
            from studio.denoisers.masked import triton_tiles

            triton_tiles.bank_halves(self.bank)  # per bank, made here on the run's stream before the levels
        self.ahead.start(alpha_bars)

    def _triton(self) -> bool:
        return use_triton(self.device, self.p["kernel"])

    def _entry(self, make_mask: Callable[[], torch.Tensor]) -> MaskEntry:
        """A level's plan, with what the kernel that runs reads of it, built on the device."""
        mask = make_mask()  # bool [D, D], on the CPU or already on the device
        plan = plan_for(mask, self._check_fitted().shape, self.device, self.p["kernel"])
        if self._triton():
            from studio.denoisers.masked import triton_tiles

            triton_tiles.prepare_plan(plan, self.bank)
        else:
            torch_tiles.prepare(plan, self.bank)  # the torch tiles' layout and Q
        return MaskEntry(plan, float(mask.float().mean()))

    def _prepare_level(self, ab: float) -> MaskEntry:
        """LevelsAhead's build (in its thread): the level's entry, kept with the others."""
        key, make_mask = self.level(ab)
        return self.plans.get_or_make(key, lambda: self._entry(make_mask))

    def _plan(self, ab: float, key: Hashable, make_mask: Callable[[], torch.Tensor]) -> MaskEntry:
        """The entry of the mask `key` used at ā: prepared ahead, kept from earlier, or built now (the time the
        run waits for it counts in setup_s)."""
        self.setup_s += self.ahead.wait(ab)

        def make() -> MaskEntry:
            t0 = time.perf_counter()
            entry = self._entry(make_mask)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.setup_s += time.perf_counter() - t0
            return entry

        return self.plans.get_or_make(key, make)

    def _masked_mean(self, x_t: torch.Tensor, plan: ColumnPlan, ab: float) -> torch.Tensor:
        flat = x_t.reshape(x_t.shape[0], -1).float()
        out = masked_posterior_mean(flat, self.bank, plan, ab, self.p["temperature"], self.p["chunk_size"],
                                    self.p["kernel"])
        return out.reshape(x_t.shape)


def masked_posterior_mean(
    x: torch.Tensor, bank: DataBank, plan: ColumnPlan, ab: float, temperature: float = 1.0,
    chunk: int | None = None, kernel: str = "auto",
) -> torch.Tensor:
    """x̂0 [B, D] for queries x [B, D] (fp32, on the bank's device) under the plan's mask."""
    B, D = x.shape
    out = torch.empty_like(x)
    if plan.dense.numel():
        out[:, plan.dense] = posterior_mean(x, bank, ab, temperature, chunk, k=1).mean[:, plan.dense]
    if not plan.n_tiles:
        return out
    if use_triton(x.device, kernel):
        from studio.denoisers.masked import triton_tiles  # imports triton: only where it runs

        means = triton_tiles.tiles_posterior_mean(x, bank, plan, ab, temperature)
    else:
        means = torch_tiles.tiles_posterior_mean(x, bank, plan, ab, temperature, chunk)
    real = plan.cols < D
    out[:, plan.cols[real]] = means[:, real]
    return out
