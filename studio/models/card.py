"""Model cards: README.md with Hub metadata (written through huggingface_hub's ModelCard/ModelCardData) and a
`studio:` block that records how a network was trained (data, schedule, prediction type, steps, loss, command),
so a loader can check a run against it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from studio.cache import atomic_write

CARD = "README.md"
STUDIO_TAG = "analytic-diffusion-studio"
LICENSE = "mit"  # the weights are the project's own (the code's license); data licenses sit in the body


def write_card(folder: Path, studio: dict[str, Any], body: str, tags: tuple[str, ...] = (),
               pipeline_tag: str | None = None, datasets: tuple[str, ...] = ()) -> None:
    """Write README.md through huggingface_hub's ModelCard: license, library, pipeline tag, Hub dataset ids,
    tags and the `studio` block, then a readable body."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(license=LICENSE, library_name="diffusers", pipeline_tag=pipeline_tag,
                         datasets=list(datasets) or None, tags=[STUDIO_TAG, *tags], studio=studio)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")
    atomic_write(Path(folder) / CARD, lambda p: card.save(p))


def read_meta(folder: Path) -> tuple[dict[str, Any], str]:
    """The whole front matter of folder/README.md and its body ({} and "" when there is no card)."""
    path = Path(folder) / CARD
    if not path.is_file():
        return {}, ""
    text = path.read_text(errors="replace")
    front, sep, body = text[3:].partition("\n---") if text.startswith("---") else ("", "", text)
    try:
        meta = yaml.safe_load(front) if sep else {}
    except yaml.YAMLError:
        meta = {}
    return (meta if isinstance(meta, dict) else {}), body.lstrip("-").lstrip("\n")


def read_card(folder: Path) -> dict[str, Any]:
    """The `studio` block of folder/README.md, or {} when there is no card or it has no such block."""
    block = read_meta(folder)[0].get("studio")
    return block if isinstance(block, dict) else {}
