"""Nothing of the user's is lost to `--out`: existing files, FIFOs and foreign folders are refused, a studio run
folder is replaced only with --overwrite, and what a killed save left behind is cleaned up by the next save."""

import os

import pytest

from studio.cache import atomic_dir, sweep_leftovers
from studio.cli import main

QUICK = ["--dataset", "digits", "--denoiser", "optimal", "--steps", "2", "--n", "2", "--device", "cpu",
         "--set", "dataset.size=50"]


def sample(out, *extra: str) -> int:
    return main(["sample", *QUICK, "--out", str(out), *extra])


def one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0]
    return err[0]


def test_a_folder_with_user_files_survives(tmp_path, capsys):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    assert sample(folder) == 2
    one_error_line(capsys, "--out", str(folder), "not a studio run")
    assert sample(folder, "--overwrite") == 2  # --overwrite never replaces a foreign folder
    assert (folder / "chapter1.tex").read_text() == "precious" and len(list(folder.iterdir())) == 1


def test_a_plain_file_and_a_fifo_survive(tmp_path, capsys):
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    assert sample(plain, "--overwrite") == 2
    one_error_line(capsys, str(plain), "not a folder")
    assert plain.read_text() == "keep me"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert sample(fifo) == 2
    one_error_line(capsys, str(fifo))
    assert fifo.exists() and not fifo.is_dir()


def test_a_run_folder_is_replaced_only_with_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert sample(run) == 0
    first = (run / "metrics.json").read_text()
    capsys.readouterr()
    assert sample(run) == 2
    one_error_line(capsys, str(run), "--overwrite")
    assert (run / "metrics.json").read_text() == first
    assert sample(run, "--overwrite") == 0
    assert (run / "metrics.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_compare_out_onto_a_file_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert sample(run) == 0
    capsys.readouterr()
    target = run / "metrics.json"
    before = target.read_text()
    assert main(["compare", *QUICK, "--reference", "nearest", "--out", str(target)]) == 2
    one_error_line(capsys, str(target))
    assert target.is_file() and target.read_text() == before


def test_sample_out_dot_leaves_no_hidden_folders(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert sample(".") == 0
    monkeypatch.chdir(tmp_path / "work")
    assert sample(".", "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert not [p.name for p in (tmp_path / "work").iterdir() if p.name.startswith(".")]
    assert (tmp_path / "work" / "metrics.json").is_file()


def test_leftovers_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    dead = tmp_path / ".run-1.studio-999999999-abcd1234.tmp"
    (dead / "sub").mkdir(parents=True)
    dead_file = tmp_path / ".cfg.studio-999999999-zz9.tmp"
    dead_file.write_text("half")
    live = tmp_path / f".run-2.studio-{os.getpid()}-abcd1234.tmp"  # a save still running in this process
    live.mkdir()
    users = tmp_path / ".my.settings.tmp"  # not ours: never touched
    users.mkdir()
    atomic_dir(tmp_path / "run-3", lambda tmp: (tmp / "a.txt").write_text("x"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["run-3", live.name, users.name])
    assert sweep_leftovers(tmp_path) == []


def test_atomic_dir_never_replaces_a_file(tmp_path):
    plain = tmp_path / "x"
    plain.write_text("keep")
    with pytest.raises(ValueError, match="not a folder"):
        atomic_dir(plain, lambda tmp: None)
    assert plain.read_text() == "keep"


def test_train_out_file_and_resume_without_state_are_one_line(tmp_path, capsys):
    plain = tmp_path / "model"
    plain.write_text("keep")
    assert main(["train", "--dataset", "moons", "--out", str(plain), "--steps", "1", "--samples", "0"]) == 2
    one_error_line(capsys, "--out", str(plain))
    assert plain.read_text() == "keep"
    assert main(["train", "--dataset", "moons", "--out", str(tmp_path / "fresh"), "--steps", "1", "--samples", "0",
                 "--resume"]) == 2
    one_error_line(capsys, "--resume")


def test_cache_leftovers_are_removed_when_a_process_first_uses_the_namespace(tmp_path, monkeypatch):
    from studio import cache

    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "_SWEPT", set())
    folder = tmp_path / "masks"
    folder.mkdir()
    killed = folder / ".abc.safetensors.studio-999999999-x1y2z3.tmp"
    killed.write_bytes(b"half")
    assert cache.entry_path("masks", "abc") == folder / "abc.safetensors"
    assert not killed.exists()
