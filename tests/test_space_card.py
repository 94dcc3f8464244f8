"""The README's front matter is a valid Space configuration for this repository and its installed Gradio."""

import sys
from pathlib import Path

import gradio
from huggingface_hub import SpaceCard

ROOT = Path(__file__).resolve().parents[1]
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}  # what the Hub accepts


def test_space_front_matter():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")  # the Hub reads only a block at the very top
    card = SpaceCard(text).data
    assert card.sdk == "gradio" and card.sdk_version == gradio.__version__
    assert (ROOT / card.app_file).is_file() and card.app_file == "app.py"
    assert card.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert card.colorFrom in COLORS and card.colorTo in COLORS
    assert card.title and card.emoji and card.license and card.tags
    assert 0 < len(card.short_description) <= 60
