"""Model cards: README.md with YAML front matter whose `studio:` block records how a network was trained
(data, schedule, prediction type, steps, loss, command), so a loader can check a run against it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from studio.cache import atomic_write

CARD = "README.md"


def write_card(folder: Path, studio: dict[str, Any], body: str, tags: tuple[str, ...] = ()) -> None:
    """Write README.md: Hub-style metadata (library, tags) plus the `studio` block, then a readable body."""
    meta = {"library_name": "diffusers", "tags": ["analytic-diffusion-studio", *tags], "studio": studio}
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    text = f"---\n{front}---\n\n{body.strip()}\n"
    atomic_write(Path(folder) / CARD, lambda p: p.write_text(text))


def read_card(folder: Path) -> dict[str, Any]:
    """The `studio` block of folder/README.md, or {} when there is no card or it has no such block."""
    path = Path(folder) / CARD
    if not path.is_file():
        return {}
    text = path.read_text(errors="replace")
    if not text.startswith("---"):
        return {}
    front, sep, _ = text[3:].partition("\n---")
    if not sep:
        return {}
    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError:
        return {}
    block = meta.get("studio") if isinstance(meta, dict) else None
    return block if isinstance(block, dict) else {}
