"""Checkpoint folders: find a network (bundled, local folder, Hub id), load it from safetensors only, and read
how it was trained (schedule, prediction type, data) from scheduler_config.json and the model card.

Two layouts are read. The pipeline layout, which the studio writes for UNets (bundled and trained) and which
`diffusers.DDPMPipeline.from_pretrained(folder)` loads: model_index.json, unet/ (config.json +
diffusion_pytorch_model.safetensors), scheduler/scheduler_config.json, README.md model card. The flat layout
(a `save_pretrained` folder: config.json, the safetensors and optionally scheduler_config.json beside them),
which older studio checkpoints and the 2-D TimeMLP ones use: DDPMPipeline cannot load a TimeMLP (not a diffusers
class), so those stay flat.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from studio import resource_dir
from studio.cache import Recent, atomic_write
from studio.data.dataset import Dataset
from studio.models.card import CARD, STUDIO_TAG, read_card, read_meta, write_card

CHECKPOINTS = resource_dir("assets") / "checkpoints"
WEIGHTS = "diffusion_pytorch_model.safetensors"
SCHEDULER = "scheduler_config.json"
MODEL_INDEX = "model_index.json"
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# diffusers' beta_schedule names -> studio.diffusion.schedules names (same formulas, checked in the tests).
_SCHEDULE_NAMES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine",
                   "sigmoid": "sigmoid"}
DEFAULT_SCHEDULE = {"name": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def network_classes() -> dict[str, type[nn.Module]]:
    """config.json `_class_name` -> class; imported lazily (diffusers is slow to import)."""
    from diffusers import UNet2DModel

    from studio.models.mlp import TimeMLP

    return {"UNet2DModel": UNet2DModel, "TimeMLP": TimeMLP}


@dataclass(frozen=True)
class TrainedInfo:
    """How a network was trained, as far as its folder tells: schedule, prediction type, data it saw."""

    schedule: dict[str, Any]
    prediction_type: str
    data_shape: tuple[int, ...] | None
    dataset: dict[str, Any]
    notes: tuple[str, ...] = ()


def _is_network(folder: Path) -> bool:
    """Whether `folder` itself holds config.json of a supported network."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("_class_name") in {"UNet2DModel", "TimeMLP"}
    except (OSError, ValueError):
        return False


def model_folder(folder: Path) -> Path | None:
    """The folder holding the network: `folder` itself (flat layout) or its `unet/` (pipeline layout)."""
    for candidate in (Path(folder), Path(folder) / "unet"):
        if _is_network(candidate):
            return candidate
    return None


def is_checkpoint(folder: Path) -> bool:
    """Whether `folder` is a checkpoint in either layout."""
    return model_folder(folder) is not None


def bundled(dataset_name: str) -> list[Path]:
    """Bundled checkpoints of a dataset: assets/checkpoints/<name>/ itself, or its variant subfolders."""
    root = CHECKPOINTS / dataset_name
    if is_checkpoint(root):
        return [root]
    return sorted(p for p in root.glob("*") if is_checkpoint(p)) if root.is_dir() else []


def all_bundled() -> dict[str, list[Path]]:
    return {p.name: bundled(p.name) for p in sorted(CHECKPOINTS.glob("*")) if bundled(p.name)}


def label(folder: Path) -> str:
    """A bundled checkpoint's name as `denoiser.model` accepts it (e.g. digits, patches/gray16)."""
    try:
        return Path(folder).resolve().relative_to(CHECKPOINTS.resolve()).as_posix()
    except ValueError:
        return str(folder)


def _describe(folders: list[Path]) -> str:
    parts = []
    for f in folders:
        shape = trained_info(f).data_shape
        parts.append(f"{label(f)} ({'x'.join(map(str, shape)) if shape else 'shape unknown'})")
    return ", ".join(parts) or "(none)"


def choose_bundled(dataset: Dataset) -> Path:
    """The bundled checkpoint for this dataset whose data shape matches (same fingerprint preferred)."""
    folders = bundled(dataset.name)
    hint = (f"train one with `python -m studio train --dataset {dataset.name} --out DIR` and set "
            f"denoiser.model=DIR (or a Hub model id)")
    if not folders:
        everything = [f for fs in all_bundled().values() for f in fs]
        raise ValueError(f"denoiser.model: no bundled checkpoint for dataset {dataset.name}; bundled ones: "
                         f"{_describe(everything)}; {hint}")
    fitting = [f for f in folders if trained_info(f).data_shape == tuple(dataset.shape)]
    if not fitting:
        raise ValueError(f"denoiser.model: the bundled checkpoints for {dataset.name} are {_describe(folders)}, "
                         f"none for this dataset's shape {'x'.join(map(str, dataset.shape))}; {hint}")
    same_data = [f for f in fitting if trained_info(f).dataset.get("fingerprint") == dataset.fingerprint]
    return (same_data or fitting)[0]


def locate(model: str | None, dataset: Dataset) -> Path:
    """The checkpoint folder `model` names: None = bundled for the dataset, else a local folder, a bundled
    name (e.g. patches/rgb16) or a Hub model id (owner/name[@revision], downloaded once into the HF cache)."""
    if model is None:
        return choose_bundled(dataset)
    text = str(model).strip()
    local = Path(text).expanduser()
    if local.exists():
        found = model_folder(local) if local.is_dir() else None
        if found is None:
            raise ValueError(f"denoiser.model: {text} holds no config.json of a supported network "
                             f"({', '.join(network_classes())}) beside {WEIGHTS}")
        return found
    if is_checkpoint(CHECKPOINTS / text):
        return CHECKPOINTS / text
    if not _HUB_ID.match(text) or text.startswith((".", "~")):
        raise ValueError(f"denoiser.model: no folder {text}, and it is neither a bundled checkpoint "
                         f"({_describe([f for fs in all_bundled().values() for f in fs])}) nor a Hub model id "
                         f"(owner/name)")
    return _from_hub(text)


def _from_hub(text: str) -> Path:
    from studio.data.hub_client import HubError, fetch_files

    repo_id, _, revision = text.partition("@")

    def select(listing):
        paths = {f.path for f in listing}
        for prefix in ("", "unet/"):
            if prefix + "config.json" in paths:
                if prefix + WEIGHTS not in paths:
                    raise ValueError(f"denoiser.model: {repo_id} has no {prefix}{WEIGHTS} (only pickled weights, "
                                     "which the studio never loads)")
                extra = {SCHEDULER, f"scheduler/{SCHEDULER}", CARD}
                return [f for f in listing if f.path in extra or f.path in {prefix + "config.json", prefix + WEIGHTS}]
        raise ValueError(f"denoiser.model: {repo_id} holds no config.json of a diffusers model (nor unet/config.json)")

    try:
        files = fetch_files(repo_id, "model", revision or "main", select, what="denoiser.model")
    except HubError as err:
        raise ValueError(f"denoiser.model: {text!r} is not a local folder or a bundled checkpoint, and the Hub "
                         f"cannot provide it: {err} Or pass a local save_pretrained folder.") from None
    config = next(p for name, p in files.items() if name.endswith("config.json") and "scheduler" not in name)
    return config.parent


def _scheduler_config(folder: Path) -> Path | None:
    places = [folder / SCHEDULER, folder / "scheduler" / SCHEDULER]
    if folder.name == "unet":
        places += [folder.parent / "scheduler" / SCHEDULER, folder.parent / SCHEDULER]
    return next((p for p in places if p.is_file()), None)


def trained_info(folder: Path) -> TrainedInfo:
    """Schedule and prediction type from scheduler_config.json; data shape and dataset from the card/config."""
    folder = model_folder(folder) or Path(folder)
    notes: list[str] = []
    schedule, prediction = dict(DEFAULT_SCHEDULE), "epsilon"
    sched_file = _scheduler_config(folder)
    if sched_file is None:
        notes.append(f"{folder.name}: no {SCHEDULER}; assuming a linear schedule (T=1000, β 1e-4..0.02) and "
                     "ε prediction")
    else:
        cfg = json.loads(sched_file.read_text())
        name = _SCHEDULE_NAMES.get(cfg.get("beta_schedule", "linear"))
        if name is None or cfg.get("trained_betas") is not None:
            raise ValueError(f"denoiser.model: {folder} was trained with beta_schedule "
                             f"{cfg.get('beta_schedule')!r}, which the studio does not implement; "
                             f"supported: {', '.join(_SCHEDULE_NAMES)}")
        schedule = {"name": name, "T": int(cfg.get("num_train_timesteps", 1000)),
                    "beta_start": float(cfg.get("beta_start", 1e-4)), "beta_end": float(cfg.get("beta_end", 0.02))}
        prediction = cfg.get("prediction_type", "epsilon")
    card = read_card(folder.parent if folder.name == "unet" else folder) or read_card(folder)
    config = json.loads((folder / "config.json").read_text())
    shape = card.get("data_shape")
    if shape is None and config.get("_class_name") == "UNet2DModel" and config.get("sample_size"):
        side = config["sample_size"]
        side = side if isinstance(side, (list, tuple)) else [side, side]
        shape = [config.get("in_channels", 3), *side]
    elif shape is None and config.get("_class_name") == "TimeMLP":
        shape = [config.get("in_features", 2)]
    return TrainedInfo(schedule, prediction, tuple(shape) if shape else None, card.get("dataset", {}), tuple(notes))


_LOADED = Recent(keep=4)  # networks by (folder, weights' mtime and size, device)


def load_network(folder: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The network in `folder` (either layout) in float32 eval mode on `device` (safetensors only), kept for
    reuse."""
    folder = (model_folder(folder) or Path(folder)).resolve()
    config = json.loads((folder / "config.json").read_text())
    classes = network_classes()
    cls = classes.get(config.get("_class_name"))
    if cls is None:
        raise ValueError(f"denoiser.model: {folder} holds a {config.get('_class_name')!r}; supported: "
                         f"{', '.join(classes)}")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ValueError(f"denoiser.model: {folder} has no {WEIGHTS} (the studio loads safetensors only)")
    stat = weights.stat()
    key = (str(folder), stat.st_mtime_ns, stat.st_size, str(torch.device(device)))

    def load() -> nn.Module:
        net = cls.from_pretrained(folder, use_safetensors=True, torch_dtype=torch.float32, low_cpu_mem_usage=False)
        return net.to(device).eval().requires_grad_(False)

    return _LOADED.get_or_make(key, load)


def save_network(net: nn.Module, folder: Path, half: bool = False) -> None:
    """save_pretrained a CPU copy of `net` (safetensors), in fp16 when `half`, leaving `net` untouched."""
    import copy

    copy_ = copy.deepcopy(net).to("cpu")
    (copy_.half() if half else copy_.float()).save_pretrained(folder, safe_serialization=True)


def write_scheduler_config(folder: Path, schedule: dict[str, Any], prediction_type: str) -> None:
    """The training schedule as diffusers' DDPMScheduler config, so diffusers pipelines read it too."""
    from diffusers import DDPMScheduler

    theirs = {v: k for k, v in _SCHEDULE_NAMES.items()}[schedule["name"]]
    DDPMScheduler(num_train_timesteps=schedule["T"], beta_schedule=theirs, beta_start=schedule["beta_start"],
                  beta_end=schedule["beta_end"], prediction_type=prediction_type).save_config(folder)


def write_model_index(folder: Path) -> None:
    """model_index.json of a diffusers DDPMPipeline whose unet/ and scheduler/ sit in `folder`."""
    import diffusers

    index = {"_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}
    atomic_write(Path(folder) / MODEL_INDEX, lambda p: p.write_text(json.dumps(index, indent=2) + "\n"))


def save_checkpoint(net: nn.Module, folder: Path, schedule: dict[str, Any], prediction_type: str,
                    half: bool = False) -> None:
    """Save `net` and its schedule into an empty `folder`: a DDPMPipeline folder for a UNet2DModel, the flat
    layout for anything else (a TimeMLP, which diffusers pipelines cannot load)."""
    folder = Path(folder)
    pipeline = type(net).__name__ == "UNet2DModel"
    save_network(net, folder / "unet" if pipeline else folder, half=half)
    write_scheduler_config(folder / "scheduler" if pipeline else folder, schedule, prediction_type)
    if pipeline:
        write_model_index(folder)


FLAT_FILES = ("config.json", WEIGHTS, SCHEDULER)
PIPELINE_TAG = "unconditional-image-generation"
# how a card's body names the files of each layout (a converted card's body is updated from one to the other)
FLAT_NOTE = "config.json + diffusion_pytorch_model.safetensors (diffusers save_pretrained), scheduler_config.json"
PIPELINE_NOTE = ("model_index.json, unet/ (config.json + diffusion_pytorch_model.safetensors) and "
                 "scheduler/scheduler_config.json: a diffusers DDPMPipeline folder")


def to_pipeline_layout(folder: Path) -> bool:
    """Move a flat UNet2DModel checkpoint into the pipeline layout in place (the weights' bytes unchanged) and
    rewrite its model card through ModelCard; False (and nothing done) for other networks or layouts."""
    folder = Path(folder)
    if model_folder(folder) != folder or not (folder / SCHEDULER).is_file():
        return False
    if json.loads((folder / "config.json").read_text()).get("_class_name") != "UNet2DModel":
        return False
    (folder / "unet").mkdir()
    (folder / "scheduler").mkdir()
    for name in FLAT_FILES:
        (folder / name).rename(folder / ("scheduler" if name == SCHEDULER else "unet") / name)
    write_model_index(folder)
    meta, body = read_meta(folder)
    tags = [t for t in meta.get("tags", []) if t != STUDIO_TAG]  # write_card puts it first again
    write_card(folder, meta.get("studio", {}), body.replace(FLAT_NOTE, PIPELINE_NOTE), tuple(tags),
               pipeline_tag=PIPELINE_TAG, datasets=tuple(meta.get("datasets") or ()))
    return True
