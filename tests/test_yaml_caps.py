"""A config's YAML is capped before parsing (size, nesting, aliases); errors are one line naming the field; a new
dataset/denoiser/sampler name drops the old one's parameters."""

import time

import pytest

from studio.cli import main
from studio.config import RunConfig
from studio.presets import presets_dir
from studio.limits import safe_yaml

BOMB = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(8))


def test_an_alias_bomb_is_refused_at_once():
    assert len(BOMB) < 600
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^config: YAML anchors and aliases") as info:
        RunConfig.from_yaml(BOMB)
    assert time.perf_counter() - start < 1.0 and len(str(info.value)) < 200


def test_size_and_nesting_are_capped(monkeypatch):
    big = "n: 1\n" + "# padding\n" * 10_000
    with pytest.raises(ValueError, match=r"config \(YAML bytes\): .* over .*STUDIO_MAX_YAML_BYTES"):
        RunConfig.from_yaml(big)
    monkeypatch.setenv("STUDIO_MAX_YAML_BYTES", "200000")
    assert RunConfig.from_yaml(big).n == 1
    deep = "x: " + "[" * 5000 + "]" * 5000
    with pytest.raises(ValueError, match="nested deeper than 20") as info:
        safe_yaml(deep, "config")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^config: not valid YAML \(line 2, column"):
        RunConfig.from_yaml("n: 1\n  - ]: [\n")


def test_cli_yaml_errors_are_one_line(tmp_path, capsys):
    cases = {"bomb.yaml": BOMB, "deep.yaml": "n: " + "[" * 3000 + "]" * 3000, "bad.yaml": "dataset: {name: [\n",
             "big.yaml": "n: 1\n" + "#" * 70_000 + "\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["sample", "--config", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --config"), (name, err)


def test_a_new_denoiser_name_drops_the_old_ones_parameters(tmp_path):
    preset = (presets_dir() / "locality_patches.yaml").read_text()
    cfg = RunConfig.from_yaml(preset)
    assert "mask_threshold" in cfg.denoiser.params
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert main(["sample", "--config", str(tmp_path / "c.yaml"), "--set", "denoiser.name=optimal", "--set",
                 "dataset.size=50", "--steps", "2", "--n", "2", "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    again = RunConfig.load(tmp_path / "o" / "config.yaml")
    assert again.denoiser.name == "optimal" and "mask_threshold" not in again.denoiser.params
    # inside one section the order of keys does not matter: name is applied first
    flipped = RunConfig.from_dict({"denoiser": {"mask_threshold": 0.2, "name": "pca_locality"},
                                   "dataset": {"name": "patches", "size": 100}})
    assert flipped.denoiser.params["mask_threshold"] == 0.2
