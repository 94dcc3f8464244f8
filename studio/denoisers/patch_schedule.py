"""Patch-size schedules of the local-score machines: which k x k window each noise level uses.

A schedule is a list of (ā, k) entries; a step at ā uses the entry nearest in log-SNR log(ā / (1-ā)), so a
schedule calibrated with one noise schedule or step count transfers to others. Files are YAML or JSON:

    denoiser: els
    target: optimal
    dataset: {name: digits, fingerprint: 1a2b...}
    entries:
      - {t: 999, alpha_bar: 4.0e-05, patch_size: 15}
      - {t: 499, alpha_bar: 0.0786, patch_size: 7}

The default ("auto") comes from the data: the window whose area matches the average support of the
pca_locality masks at that level (Lukoianov et al. show that these masks match what trained networks
look at), the whole image once the masks are all ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from studio.cache import atomic_write
from studio.data.dataset import Dataset
from studio.denoisers.masked.masks import default_threshold, locality_mask


def full_window(shape: tuple[int, ...]) -> int:
    """The smallest odd side whose window, centred at any pixel, covers the whole image."""
    return 2 * max(shape[1], shape[2]) - 1


def check_patch_size(k: Any, shape: tuple[int, ...], field_name: str = "denoiser.patch_size") -> int:
    """k as an odd int in [1, full_window(shape)], or a ValueError naming the field."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 or k > full_window(shape):
        raise ValueError(f"{field_name}: {k!r} is not allowed; use an odd integer in [1, {full_window(shape)}]")
    return k


def log_snr(ab: float) -> float:
    ab = min(max(ab, 1e-12), 1 - 1e-12)
    return math.log(ab / (1 - ab))


@dataclass
class PatchSchedule:
    """(ā, k) entries plus free-form provenance (what it was calibrated against, on which data)."""

    entries: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def size(self, ab: float) -> int:
        best = min(self.entries, key=lambda e: abs(log_snr(e["alpha_bar"]) - log_snr(ab)))
        return int(best["patch_size"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta, "entries": self.entries}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "PatchSchedule":
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list) or not data["entries"]:
            raise ValueError(f"denoiser.patch_schedule: {where} must hold a non-empty 'entries' list")
        entries = []
        for e in data["entries"]:
            if not isinstance(e, dict) or "alpha_bar" not in e or "patch_size" not in e:
                raise ValueError(f"denoiser.patch_schedule: every entry of {where} needs alpha_bar and patch_size")
            ab, k = e["alpha_bar"], e["patch_size"]
            if isinstance(ab, bool) or not isinstance(ab, (int, float)) or not 0 < ab < 1:
                raise ValueError(f"denoiser.patch_schedule: alpha_bar {ab!r} in {where} must lie in (0, 1)")
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(f"denoiser.patch_schedule: patch_size {k!r} in {where} must be an odd integer >= 1")
            entries.append({**e, "alpha_bar": float(ab), "patch_size": k})
        return cls(entries, {k: v for k, v in data.items() if k != "entries"})


def load_schedule(path: str | Path) -> PatchSchedule:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"denoiser.patch_schedule: no such file {path} (use auto or a .yaml/.json schedule)")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"denoiser.patch_schedule: {path} is not valid {path.suffix or 'YAML'} ({err})") from None
    return PatchSchedule.from_dict(data, str(path))


def save_schedule(schedule: PatchSchedule, path: str | Path) -> None:
    """Write YAML, or JSON when the name ends in .json (atomically)."""
    path = Path(path)
    data = schedule.to_dict()
    text = json.dumps(data, indent=2) if path.suffix.lower() == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write(path, lambda p: p.write_text(text))


def auto_patch_size(dataset: Dataset, ab: float, device: str = "cpu") -> int:
    """The default k at ā: odd side of the square holding the mean mask support per channel."""
    shape = dataset.shape
    mask = locality_mask(dataset, ab, default_threshold(shape), "self", device)
    if bool(mask.all()):
        return full_window(shape)
    side = math.sqrt(float(mask.sum(0).float().mean()) / shape[0])
    return min(full_window(shape), 2 * int((side - 1) / 2 + 0.5) + 1)
