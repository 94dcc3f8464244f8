import json

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from studio.cli import main
from studio.config import RunConfig


def test_sample_writes_the_documented_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["sample", "--dataset", "digits", "--denoiser", "optimal", "--sampler", "ddim", "--steps", "10",
               "--n", "6", "--seed", "2", "--eta", "0.5", "--schedule", "cosine", "--spacing", "leading",
               "--device", "cpu", "--set", "denoiser.temperature=0.5", "--set", "dataset.size=100", "--out", str(out)])
    assert rc == 0
    t = load_file(str(out / "tensors.safetensors"))
    assert t["samples"].shape == (6, 1, 8, 8) and t["x_t"].shape == (10, 6, 1, 8, 8) and t["x0"].shape == (10, 6, 1, 8, 8)
    assert t["timesteps"].dtype == torch.int64 and t["timesteps"].tolist() == list(range(900, -1, -100))
    assert t["alpha_bar"].dtype == torch.float64 and t["alpha_bar"].shape == (10,)
    assert torch.equal(t["samples"], t["x0"][-1])
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["denoiser"] == {"name": "optimal", "temperature": 0.5, "chunk_size": None, "top_k": 8, "storage": "auto"}
    assert cfg["dataset"]["size"] == 100 and cfg["sampler"]["eta"] == 0.5 and cfg["schedule"]["name"] == "cosine"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["timings"]["sampling_s"] > 0 and len(metrics["per_step"]) == 10
    assert metrics["dataset"]["n"] == 100
    strip = Image.open(out / "trajectory.png")
    assert strip.height > strip.width / 10  # 2 rows per sample
    gif = Image.open(out / "trajectory.gif")
    assert gif.n_frames == 10
    assert Image.open(out / "samples.png").size[0] > 0


def test_config_file_is_reproducible(tmp_path):
    first = tmp_path / "a"
    assert main(["sample", "--dataset", "moons", "--denoiser", "wiener", "--sampler", "ddpm", "--steps", "8",
                 "--n", "5", "--seed", "7", "--device", "cpu", "--out", str(first)]) == 0
    second = tmp_path / "b"
    assert main(["sample", "--config", str(first / "config.yaml"), "--out", str(second)]) == 0
    a, b = (load_file(str(p / "tensors.safetensors")) for p in (first, second))
    assert torch.equal(a["samples"], b["samples"])


@pytest.mark.parametrize("args,field", [
    (["--steps", "0"], "sampler.steps"),
    (["--steps", "5000"], "sampler.steps"),
    (["--eta", "1.5"], "sampler.eta"),
    (["--eta", "-0.1"], "sampler.eta"),
    (["--denoiser", "magic"], "denoiser.name"),
    (["--dataset", "imagenet"], "dataset.name"),
    (["--sampler", "leapfrog"], "sampler.name"),
    (["--schedule", "quadratic"], "schedule.name"),
    (["--spacing", "random"], "sampler.spacing"),
    (["--n", "0"], "n"),
    (["--device", "tpu"], "device"),
    (["--set", "denoiser.tau=1"], "denoiser.tau"),
    (["--set", "nonsense"], "--set"),
    (["--steps", "ten"], "--steps"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, field):
    rc = main(["sample", "--dataset", "digits", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and field in err
    assert not (tmp_path / "x").exists()


def test_bad_names_list_the_allowed_values(capsys, tmp_path):
    main(["sample", "--dataset", "digits", "--denoiser", "magic", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert "optimal" in err and "wiener" in err and "nearest" in err


def test_list_shows_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("digits", "swissroll", "moons", "gaussians8", "checkerboard", "optimal", "wiener", "nearest",
                 "ddpm", "ddim", "generalized", "dpmpp_2m", "euler", "heun", "unipc", "cosine", "trailing",
                 "temperature"):
        assert word in out


def test_config_rejects_unknown_keys_and_bad_yaml():
    with pytest.raises(ValueError, match="colour: unknown config key"):
        RunConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="config: not valid YAML"):
        RunConfig.from_yaml("a: [1, 2")
    with pytest.raises(ValueError, match="schedule.beta_end"):
        RunConfig.from_dict({"schedule": {"beta_start": 0.1, "beta_end": 0.01}})


def test_bench_prints_table_with_reference(capsys, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--n-data", "300", "--shape", "1x6x6", "--levels", "3",
                 "--repeats", "1", "--only", "optimal,wiener", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ref ms" in text and "max rel err" in text
    rows = json.loads(out.read_text())["rows"]
    assert {r["case"] for r in rows} == {"optimal", "wiener"}
    assert all(r["max_rel_err"] < 1e-4 and r["ref_ms_per_step"] > 0 for r in rows)


def test_bench_times_els_against_its_previous_release(capsys, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--n-data", "200", "--shape", "3x8x8", "--levels", "4", "--repeats", "1",
                 "--only", "els (ref: previous fp32)", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]  # levels with 7 x 7 windows and with the whole image
    assert row["n_data"] == 200 and row["ref_ms_per_step"] > 0 and row["max_rel_err"] < 1e-5
