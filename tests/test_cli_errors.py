"""Every bad command line gives exactly one line `error: ...` naming the field, and exit status 2, before any
work: no traceback, nothing written, the Hub not contacted."""

import os

import pytest

from studio.cli import main

QUICK = ["--dataset", "moons", "--denoiser", "optimal", "--steps", "2", "--n", "2", "--device", "cpu"]


def case_args(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    deep = tmp_path / "deep.yaml"
    deep.write_text("n: " + "[" * 2000 + "]" * 2000 + "\n")
    empty_run = tmp_path / "not-a-run"
    empty_run.mkdir()
    return {
        "out under a file": (["sample", *QUICK, "--out", str(plain / "run")], "--out"),
        "out in /proc": (["sample", *QUICK, "--out", "/proc/studio-run"], "--out"),
        "out in /sys": (["sample", *QUICK, "--out", "/sys/studio-run"], "--out"),
        "out empty": (["sample", *QUICK, "--out", ""], "--out"),
        "out 300 chars": (["sample", *QUICK, "--out", str(tmp_path / ("r" * 300))], "--out"),
        "deep yaml": (["sample", "--config", str(deep), "--out", str(tmp_path / "o")], "--config"),
        "bench shape": (["bench", "--shape", "0x0x0", "--device", "cpu"], "--shape"),
        "bench n-data": (["bench", "--n-data", "-1", "--device", "cpu"], "--n-data"),
        "bench batch": (["bench", "--batch", "0", "--device", "cpu"], "--batch"),
        "compare no denoisers": (["compare", *QUICK, "--denoisers", ",,,", "--reference", "nearest",
                                  "--out", str(tmp_path / "c")], "--denoisers"),
        "train out file": (["train", "--dataset", "moons", "--out", str(plain), "--steps", "1"], "--out"),
        "train resume nothing": (["train", "--dataset", "moons", "--out", str(tmp_path / "t"), "--steps", "1",
                                  "--resume"], "--resume"),
        "pull bad run": (["pull", "alice/runs", "--run", "../../etc", "--endpoint", "http://127.0.0.1:9"], "run"),
        "push not a run": (["push", str(empty_run), "--repo", "alice/runs", "--endpoint", "http://127.0.0.1:9"],
                           "run_dir"),
        "scheduler without set_timesteps": (["sample", *QUICK, "--sampler", "diffusers", "--set",
                                             "sampler.scheduler=KarrasVeScheduler", "--out", str(tmp_path / "k")],
                                            "sampler.scheduler"),
        "flow-matching scheduler": (["sample", *QUICK, "--sampler", "diffusers", "--set",
                                     "sampler.scheduler=FlowMatchEulerDiscreteScheduler", "--out",
                                     str(tmp_path / "f")], "sampler.scheduler"),
    }


CASES = ["out under a file", "out in /proc", "out in /sys", "out empty", "out 300 chars", "deep yaml", "bench shape",
         "bench n-data", "bench batch", "compare no denoisers", "train out file", "train resume nothing",
         "pull bad run", "push not a run", "scheduler without set_timesteps", "flow-matching scheduler"]


@pytest.mark.parametrize("case", CASES)
def test_one_line_and_exit_2(case, tmp_path, capsys):
    argv, field = case_args(tmp_path)[case]
    before = sorted(os.listdir(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {field}"), err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written
