"""`python -m studio datasets`: the table and the one-dataset view."""

from __future__ import annotations

import re

import pytest

from studio.cli import main
from studio.data import registry


pytestmark = pytest.mark.usefixtures("offline_fresh")


def _rows(text: str) -> dict[str, list[str]]:
    """name -> cells split on runs of two or more spaces."""
    lines = text.strip().splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["name", "N", "shape", "classes", "source", "license", "cached"]
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}


def test_table_lists_every_dataset_with_size_provenance_and_cache_state(capsys):
    assert main(["datasets"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert set(rows) == set(registry.dataset_names())
    assert rows["digits"][1:4] == ["1797", "1x8x8", "10"] and rows["digits"][-1] == "no, built now"
    assert rows["digits"][5].startswith("CC BY 4.0")
    assert rows["faces"][1:4] == ["100", "1x25x25", "-"]
    assert rows["patches"][1:4] == ["20000", "3x16x16", "10"]
    assert rows["textures"][1:4] == ["6000", "1x16x16", "3"]
    assert rows["folder"][1] == "not built" and rows["folder"][-1] == "-"
    assert rows["moons"][1:3] == ["1000", "2"]
    for name, entry in ((n, registry.get_entry(n)) for n in rows):
        if not entry.bundled and entry.cached is not None:
            assert rows[name][1] == "not built" and rows[name][-1] == "no", name

    registry._MEMO.clear()
    assert main(["datasets"]) == 0
    again = _rows(capsys.readouterr().out)
    assert again["digits"][-1] == "yes" and again["patches"][-1] == "yes"


def test_one_dataset_in_full(capsys):
    assert main(["datasets", "patches"]) == 0
    out = capsys.readouterr().out
    assert "N=20000  shape=3x16x16  classes=10" in out
    assert "resolution=16 (int in [4, 64])" in out and "size=20000 (int in [1, 200000])" in out
    assert "skimage/data/retina.jpg" in out and "sklearn/datasets/images/china.jpg" in out
    assert "china: CC BY 2.0" in out and "coffee: CC0" in out


def test_unknown_dataset_is_a_one_line_error(capsys):
    assert main(["datasets", "lena"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'lena'" in err and len(err.strip().splitlines()) == 1
