import json

import pytest

from studio.cli import main
from studio.config import RunConfig
from studio.presets import compare_pair, list_presets, override, parse_preset, preset_files

REQUIRED = {
    "DDPM vs DDIM on digits", "The optimal denoiser memorises", "Wiener blurs", "Locality generalises (patches)",
    "Swiss roll paths in 2-D", "Faces: memorisation",
}


def test_every_preset_validates_and_the_classroom_set_is_there():
    presets, problems = list_presets()
    assert problems == []
    assert len(presets) == len(preset_files()) >= 6
    assert REQUIRED <= {p.title for p in presets}
    for p in presets:
        assert p.description, p.name
        a, b = compare_pair(p.config, p.compare or None)
        assert a.seed == b.seed == p.config.seed and a.n == b.n


@pytest.mark.parametrize("path", preset_files(), ids=lambda p: p.stem)
def test_each_preset_runs_through_the_cli(path, tmp_path):
    out = tmp_path / "run"
    code = main(["sample", "--config", str(path), "--out", str(out), "--steps", "3", "--n", "2"])
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    preset = RunConfig.load(path)
    assert doc["dataset"]["name"] == preset.dataset.name and doc["denoiser"]["name"] == preset.denoiser.name
    assert len(doc["per_step"]) == 3 and (out / "samples.png").stat().st_size > 0
    # the saved config is a plain RunConfig: no preset metadata, runs again as it is
    assert "title" not in (out / "config.yaml").read_text()


def test_override_drops_the_parameters_of_a_replaced_sampler():
    cfg = RunConfig.from_dict({"sampler": {"name": "ddim", "eta": 0.5, "steps": 7, "clip_x0": True}})
    ddpm = override(cfg, {"sampler": {"name": "ddpm"}})
    assert ddpm.sampler.name == "ddpm" and ddpm.sampler.params == {"variance": "fixed_small"}
    assert ddpm.sampler.steps == 7 and ddpm.sampler.clip_x0 is True
    same = override(cfg, {"sampler": {"eta": 0.25}, "seed": 9})
    assert same.sampler.params == {"eta": 0.25} and same.seed == 9
    a, b = compare_pair(cfg)
    assert (a.sampler.name, b.sampler.name, b.sampler.params["eta"]) == ("ddpm", "ddim", 0.0)


@pytest.mark.parametrize("text, field", [
    ("compare: {c: {}}", "compare"),
    ("compare: [1]", "compare"),
    ("sampler: {name: nope}", "sampler.name"),
    ("compare: {a: {sampler: {eta: 5}}}", "sampler.eta"),
    ("dataset: [", "not valid YAML"),
])
def test_bad_presets_name_the_preset_and_the_field(text, field):
    with pytest.raises(ValueError, match=f"preset demo: .*{field}"):
        parse_preset(text, "demo")


def test_title_defaults_to_the_file_name():
    p = parse_preset("n: 3", "my_demo")
    assert p.title == "my demo" and p.config.n == 3 and p.compare == {}


@pytest.mark.parametrize("name, memorised", [("optimal_memorises", 1.0), ("wiener_blurs", 0.0)])
def test_the_presets_show_what_their_titles_say(name, memorised):
    from studio.engine import execute
    from studio.presets import load_preset, presets_dir

    cfg = load_preset(presets_dir() / f"{name}.yaml").config
    cfg.n = 8
    assert execute(cfg).metrics["summary"]["memorisation_rate"] == memorised
