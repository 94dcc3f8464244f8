"""Memory budgets for chunked work: free GPU memory (torch.cuda.mem_get_info) or a fixed CPU budget.

Chunk sizes are derived from these budgets, and a request whose smallest chunk cannot fit is refused
with a ValueError that states the estimate, instead of failing later with an out-of-memory traceback.
"""

from __future__ import annotations

import torch

CPU_BUDGET_BYTES = 1 << 30
GPU_FREE_FRACTION = 0.6


def memory_budget(device: torch.device) -> int:
    """Bytes a computation may hold at once on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + cached) * GPU_FREE_FRACTION)
    return CPU_BUDGET_BYTES


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def require(n_bytes: float, device: torch.device, what: str) -> None:
    """Raise a ValueError naming `what` when `n_bytes` exceed the budget of `device`."""
    budget = memory_budget(device)
    if n_bytes > budget:
        raise ValueError(
            f"{what}: needs about {gib(n_bytes)} of {device.type} memory but the budget is {gib(budget)}; "
            "use smaller images, fewer training points or a smaller batch_size"
        )


def rows_that_fit(per_row: float, fixed: float, device: torch.device, what: str, cap: int) -> int:
    """How many rows of `per_row` bytes fit beside `fixed` bytes (at most `cap`); ValueError if not one."""
    require(fixed + per_row, device, what)
    return int(max(1, min(cap, (memory_budget(device) - fixed) // max(per_row, 1))))
