"""Export a run folder, or a comparison folder of runs, as a shareable bundle: the files, an MP4 of the
trajectory when an encoder is installed, and a README.md dataset card; as a folder and as a .zip.

The bundle is what `studio.hub.push_run` uploads, so the exported and the pushed files are the same bytes.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import DatasetCardData

from studio import __version__
from studio.cache import atomic_dir, atomic_write

log = logging.getLogger("studio.hub.export")

CARD = "README.md"
VIDEO = "trajectory.mp4"
NO_VIDEO = "no MP4: no video encoder is installed (pip install imageio-ffmpeg to get trajectory.mp4)"
_FILE_ROLES = {
    "config.yaml": "the RunConfig; `python -m studio sample --config config.yaml --out run` reproduces the run",
    "metrics.json": "run id, dataset provenance, denoiser/sampler/schedule settings, timings, per-step metrics",
    "tensors.safetensors": "samples, x_t and x0 at every step, timesteps, alpha_bar (safetensors)",
    "samples.png": "final samples",
    "trajectory.png": "x_t above x0 per sample over the steps",
    "trajectory.gif": "per-step animation, x_t | x0",
    VIDEO: "per-step animation as MP4",
    CARD: "this card",
}
# Dataset license texts of the registry -> Hub license ids (anything else is "other").
_LICENSE_IDS = (
    (r"CC BY-NC-SA 4\.0", "cc-by-nc-sa-4.0"), (r"CC BY-NC 4\.0", "cc-by-nc-4.0"), (r"CC BY-SA 4\.0", "cc-by-sa-4.0"),
    (r"CC BY 4\.0", "cc-by-4.0"), (r"CC0", "cc0-1.0"), (r"MIT\b", "mit"), (r"Apache", "apache-2.0"),
    (r"BSD 3", "bsd-3-clause"), (r"unknown\b", "unknown"),
)


def is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file() and (folder / "metrics.json").is_file()


def run_parts(folder: str | Path) -> list[Path]:
    """The run folders a bundle holds: the folder itself, or (a comparison) the run folders inside it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"run_dir: {folder} is not a folder")
    if is_run(folder):
        return [folder]
    parts = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and is_run(p))
    if not parts:
        raise ValueError(f"run_dir: {folder} is neither a run folder (config.yaml + metrics.json) nor a comparison "
                         "folder (run folders inside)")
    return parts


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    return doc if isinstance(doc, dict) else {}


def bundle_id(folder: str | Path) -> str:
    """The bundle's name: metrics.json's run_id (or comparison_id), else the folder name; safe as a path part."""
    folder = Path(folder)
    doc = _read_json(folder / "metrics.json")
    raw = str(doc.get("run_id") or doc.get("comparison_id") or folder.resolve().name)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", raw).strip("._") or "run"
    return safe[:96]


def describe(folder: str | Path, name: str | None = None) -> dict[str, Any]:
    """What a bundle holds, for cards and the Hub index: id, kind, created, and per run the essentials."""
    folder = Path(folder)
    parts = run_parts(folder)
    runs = []
    for part in parts:
        doc = _read_json(part / "metrics.json")
        cfg = yaml.safe_load((part / "config.yaml").read_text()) or {}
        dataset, sampler = doc.get("dataset", {}), doc.get("sampler", cfg.get("sampler", {}))
        runs.append({
            "path": part.relative_to(folder).as_posix(),
            "run_id": doc.get("run_id", part.name),
            "dataset": dataset.get("name", cfg.get("dataset", {}).get("name", "?")),
            "kind": dataset.get("kind", "image"),
            "denoiser": doc.get("denoiser", cfg.get("denoiser", {})).get("name", "?"),
            "sampler": sampler.get("name", "?"),
            "steps": sampler.get("steps"),
            "n": cfg.get("n"),
            "license": dataset.get("license", ""),
            "source": dataset.get("source", ""),
        })
    top = _read_json(folder / "metrics.json")
    return {
        "id": name or bundle_id(folder),
        "kind": "run" if parts == [folder] else "comparison",
        "created": top.get("created") or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "runs": runs,
    }


def hub_license(texts: list[str]) -> str:
    """One Hub license id for all the given dataset license texts ("other" when they differ or are unknown)."""
    ids = {next((hub_id for pattern, hub_id in _LICENSE_IDS if re.match(pattern, t.strip(), re.I)), "other")
           for t in texts}
    return ids.pop() if len(ids) == 1 else "other"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if value else "none"
    return str(value)


def _metric_rows(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Scalar (and short list) entries of a metrics document, flattened: the card's metrics table."""
    rows = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _metric_rows(value, f"{name}.")
        elif isinstance(value, (int, float, str, bool)) or value is None:
            rows.append((name, _fmt(value)))
        elif isinstance(value, (list, tuple)) and len(value) <= 10 and all(
                isinstance(v, (int, float, str)) for v in value):
            rows.append((name, _fmt(value)))
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    cells = lambda row: "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"  # noqa: E731
    return "\n".join([cells(header), "|" + "---|" * len(header), *map(cells, rows)])


def _run_section(bundle: Path, part: Path, level: str, video_note: str | None) -> str:
    """Card body for one run: what was run, pictures (relative links), metrics, dataset, config, files."""
    rel = "" if part == bundle else part.relative_to(bundle).as_posix() + "/"
    doc = _read_json(part / "metrics.json")
    config_text = (part / "config.yaml").read_text()
    cfg = yaml.safe_load(config_text) or {}
    ds, method, smp, sch = (doc.get(k, cfg.get(k, {})) or {} for k in ("dataset", "denoiser", "sampler", "schedule"))
    shape = "x".join(str(s) for s in ds.get("shape", [])) or "?"
    lines = [
        f"{cfg.get('n', '?')} samples from the **{method.get('name', '?')}** denoiser fitted on **{ds.get('name', '?')}** "
        f"({ds.get('n', '?')} items of shape {shape}), drawn with the **{smp.get('name', '?')}** sampler in "
        f"{smp.get('steps', '?')} steps ({smp.get('spacing', '?')} spacing) on the {sch.get('name', '?')} noise "
        f"schedule, seed {cfg.get('seed', '?')}.",
        "",
        f"Made {doc.get('created', '?')} with Analytic Diffusion Studio "
        f"{doc.get('studio_version', '?')}. Reproduce it: `python -m studio sample --config {rel}config.yaml "
        "--out my-run`.",
        "",
    ]
    pictures = [("samples.png", "Final samples"), ("trajectory.png", "Trajectory: x_t above x0, step by step"),
                ("trajectory.gif", "Animation of the sampling steps")]
    for name, caption in pictures:
        if (part / name).is_file():
            lines += [f"{level}# {caption}", "", f"![{caption}]({rel}{name})", ""]
    if (part / VIDEO).is_file():
        lines += [f"Video: [{rel}{VIDEO}]({rel}{VIDEO})", ""]
    elif video_note and (part / "trajectory.gif").is_file():
        lines += [f"_({video_note}.)_", ""]
    metric_doc = {k: doc[k] for k in ("summary", "timings") if isinstance(doc.get(k), dict)}
    if metric_doc:
        lines += [f"{level}# Metrics", "", _table(("metric", "value"), _metric_rows(metric_doc)), "",
                  f"Per-step metrics are in [{rel}metrics.json]({rel}metrics.json).", ""]
    options = ", ".join(f"{k}={_fmt(v)}" for k, v in (ds.get("options") or {}).items())
    lines += [f"{level}# Dataset", "",
              f"- **{ds.get('name', '?')}**: {ds.get('n', '?')} items, shape {shape}, fingerprint "
              f"`{ds.get('fingerprint', '?')}`" + (f", options {options}" if options else ""),
              f"- Source: {ds.get('source') or 'not recorded'}",
              f"- License: {ds.get('license') or 'not recorded'}", "",
              f"{level}# Config", "", "```yaml", config_text.rstrip(), "```", ""]
    return "\n".join(lines)


def _files_table(bundle: Path) -> str:
    rows = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle).as_posix()
        rows.append((f"[{rel}]({rel})", f"{path.stat().st_size:,}", _FILE_ROLES.get(path.name, "")))
    return _table(("file", "bytes", "contents"), rows)


def card(bundle: str | Path, name: str | None = None, video_note: str | None = None) -> str:
    """README.md text (YAML metadata + body) for an exported run or comparison folder named `name`."""
    bundle = Path(bundle)
    info = describe(bundle, name)
    runs = info["runs"]
    kinds = {r["kind"] for r in runs}
    metadata = DatasetCardData(
        license=hub_license([r["license"] for r in runs]),
        pretty_name=f"Analytic Diffusion Studio {info['kind']} {info['id']}",
        task_categories=["unconditional-image-generation"] if kinds == {"image"} else ["other"],
        tags=sorted({"analytic-diffusion-studio", "diffusion", "synthetic"} | {r["denoiser"] for r in runs}
                    | {r["sampler"] for r in runs}),
    )
    body = [f"# {'Run' if info['kind'] == 'run' else 'Comparison'} `{info['id']}`", ""]
    if info["kind"] == "run":
        body.append(_run_section(bundle, bundle, "#", video_note))
    else:
        body += [f"A comparison of {len(runs)} runs made with Analytic Diffusion Studio {__version__}.", "",
                 _table(("run", "dataset", "denoiser", "sampler", "steps"),
                        [(f"[{r['path']}]({r['path']}/)", r["dataset"], r["denoiser"], r["sampler"], r["steps"])
                         for r in runs]), ""]
        compare = _read_json(bundle / "metrics.json")
        if compare:
            body += ["## Comparison metrics", "", _table(("metric", "value"), _metric_rows(compare)), ""]
        for part, r in zip(run_parts(bundle), runs):
            body += [f"## {r['path']}", "", _run_section(bundle, part, "##", video_note)]
    body += ["## Files", "", _files_table(bundle), ""]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(body)


def video_encoder_available() -> bool:
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def gif_to_mp4(gif: Path, mp4: Path) -> None:
    """Re-encode the trajectory GIF as H.264 MP4 (frames padded to even sides, the GIF's frame rate)."""
    import imageio.v2 as imageio
    import numpy as np
    from PIL import Image, ImageSequence

    with Image.open(gif) as img:
        frames = [(np.asarray(f.convert("RGB")), f.info.get("duration") or 80) for f in ImageSequence.Iterator(img)]
    ms = max(20, min(d for _, d in frames))  # one video frame per shortest GIF frame; longer ones repeat
    h, w = frames[0][0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    with imageio.get_writer(str(mp4), format="FFMPEG", mode="I", fps=1000.0 / ms, codec="libx264",
                            macro_block_size=2, pixelformat="yuv420p") as writer:
        for frame, duration in frames:
            for _ in range(max(1, round(duration / ms))):
                writer.append_data(np.pad(frame, pad, mode="edge"))


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy the regular files (no symlinks, no hidden files, no old card) byte for byte."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts) or path.is_symlink() or not path.is_file():
            continue
        if rel.as_posix() == CARD:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def export_folder(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the bundle folder `out_dir/<id>/` (files + MP4 when possible + README.md card); returns it."""
    run_dir = Path(run_dir)
    parts = run_parts(run_dir)
    name = bundle_id(run_dir)
    target = Path(out_dir) / name
    if target.resolve() == run_dir.resolve() or run_dir.resolve() in target.resolve().parents:
        raise ValueError(f"out_dir: {out_dir} must be outside the run folder {run_dir}")

    def write(tmp: Path) -> None:
        _copy_tree(run_dir, tmp)
        note = None
        if video_encoder_available():
            for part in parts:
                gif = tmp / part.relative_to(run_dir) / "trajectory.gif"
                if gif.is_file() and not gif.with_name(VIDEO).exists():
                    gif_to_mp4(gif, gif.with_name(VIDEO))
        else:
            note = NO_VIDEO
            log.warning("export %s: %s", run_dir.name, NO_VIDEO)
        (tmp / CARD).write_text(card(tmp, name, note))

    atomic_dir(target, write)
    return target


def export_run(run_dir: str | Path, out_dir: str | Path, zip: bool = True) -> Path:  # noqa: A002 - public name
    """Export a run (or comparison) folder to `out_dir/<id>/` and, with `zip`, `out_dir/<id>.zip`.

    Returns the .zip path when `zip` is true, else the folder. The run folder itself is never modified.
    """
    folder = export_folder(run_dir, out_dir)
    if not zip:
        return folder
    archive = folder.with_name(folder.name + ".zip")

    def write(tmp: Path) -> None:
        tmp.chmod(0o644)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")

    atomic_write(archive, write)
    return archive
