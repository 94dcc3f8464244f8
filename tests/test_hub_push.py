"""push_run / pull_run / CLI through the real huggingface_hub client against the local fake Hub."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import tempfile
import time
import uuid

import pytest
from huggingface_hub import close_session

import studio.hub.export as export
import studio.data.hub_client as hub_client
from studio.cli import main
from studio.hub.share import INDEX, README, START, pull_run, push_run
from studio.data.hub_client import (
    HubAuthError,
    HubNetworkError,
    HubPermissionError,
    HubRateLimitError,
    HubRepoIdError,
    RetryPolicy,
)
from studio.runs import load_run

from fake_hub import FakeHub
from sample_runs import make_run, tree_bytes

REPO = "alice/diffusion-runs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("hub-runs")
    return make_run(base / "a", seed=1), make_run(base / "b", seed=2)


@pytest.fixture(autouse=True)
def _fast_and_clean(monkeypatch, tmp_path):
    """Short retry waits; push scratch space inside tmp_path (scanned for secrets); no saved login."""
    monkeypatch.setattr(hub_client, "RETRY", RetryPolicy(attempts=3, base_s=0.01, max_s=0.05))
    monkeypatch.setattr(hub_client, "get_token", lambda: None)
    monkeypatch.setattr(export, "video_encoder_available", lambda: False)
    scratch = tmp_path / "system-tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))


def run_id_of(folder) -> str:
    return json.loads((folder / "metrics.json").read_text())["run_id"]


def test_push_is_one_commit_of_identical_files_and_a_second_push_keeps_the_first(fake_hub, runs):
    a, b = runs
    result = push_run(a, REPO, token=fake_hub.token, private=True, endpoint=fake_hub.url)
    ida = run_id_of(a)
    assert result.run_id == ida
    assert result.url == f"{fake_hub.url}/datasets/{REPO}/tree/main/runs/{ida}"
    commits = fake_hub.commits("dataset", REPO)
    assert len(commits) == 2  # the repository's creation, then exactly one commit for the run
    assert result.commit_url.endswith(commits[-1].sha)
    assert commits[-1].message.startswith(f"Add run {ida}: optimal on digits, ddim (3 steps)")
    assert fake_hub.is_private("dataset", REPO)

    remote = fake_hub.files("dataset", REPO)
    local = tree_bytes(a)
    pushed = {k[len(f"runs/{ida}/"):]: v for k, v in remote.items() if k.startswith(f"runs/{ida}/")}
    assert set(commits[-1].added) == {f"runs/{ida}/{k}" for k in pushed} | {INDEX, README}
    assert pushed.pop(README).decode().startswith("---\nlicense: cc-by-4.0")
    assert pushed == local  # byte-identical, under runs/<run-id>/

    push_run(b, REPO, token=fake_hub.token, endpoint=fake_hub.url)
    idb = run_id_of(b)
    commits = fake_hub.commits("dataset", REPO)
    assert len(commits) == 3 and not any(p.startswith(f"runs/{ida}/") for p in commits[-1].added)
    after = fake_hub.files("dataset", REPO)
    assert {k: v for k, v in after.items() if k.startswith(f"runs/{ida}/")} == \
        {k: v for k, v in remote.items() if k.startswith(f"runs/{ida}/")}
    readme = after[README].decode()
    assert f"[{ida}](runs/{ida}/README.md)" in readme and f"[{idb}](runs/{idb}/README.md)" in readme
    assert f"](runs/{idb}/samples.png)" in readme
    assert [e["run_id"] for e in json.loads(after[INDEX])] == [ida, idb]


def test_pull_restores_the_tensors_and_works_offline_afterwards(fake_hub, runs):
    a, b = runs
    for run in runs:
        push_run(run, REPO, token=fake_hub.token, endpoint=fake_hub.url)
    latest = pull_run(REPO, endpoint=fake_hub.url)  # no run id: the last pushed
    assert latest.name == run_id_of(b)
    folder = pull_run(REPO, run_id=run_id_of(a), endpoint=fake_hub.url)
    original, pulled = load_run(a), load_run(folder)
    assert pulled.run_id == original.run_id
    for name in ("samples", "x_t", "x0", "timesteps", "alpha_bar"):
        assert getattr(pulled.trajectory, name).equal(getattr(original.trajectory, name))
    assert pulled.config.to_dict() == original.config.to_dict()
    assert str(folder).startswith(os.environ["STUDIO_CACHE"])

    fake_hub.stop()
    assert pull_run(REPO, run_id=run_id_of(a), endpoint=fake_hub.url) == folder
    assert pull_run(REPO, endpoint=fake_hub.url) == latest  # the last listing, from the local cache


def test_pull_offline_without_a_listing_names_the_pulled_runs(fake_hub, runs):
    push_run(runs[0], REPO, token=fake_hub.token, endpoint=fake_hub.url)
    folder = pull_run(REPO, run_id=run_id_of(runs[0]), endpoint=fake_hub.url)
    fake_hub.stop()
    with pytest.raises(HubNetworkError, match=f"cannot reach.*Pulled runs available offline: {folder.name}"):
        pull_run(REPO, endpoint=fake_hub.url)


def test_user_readme_is_kept_and_only_the_runs_block_changes(fake_hub, runs):
    fake_hub.add_file("dataset", REPO, README, b"---\nlicense: mit\n---\n# My notes\n\nHand-written text.\n")
    for run in runs:
        push_run(run, REPO, token=fake_hub.token, endpoint=fake_hub.url)
    readme = fake_hub.files("dataset", REPO)[README].decode()
    assert readme.startswith("---\nlicense: mit\n---\n# My notes\n\nHand-written text.\n")
    assert readme.count(START) == 1 and readme.count("Hand-written text.") == 1
    assert all(run_id_of(r) in readme for r in runs)


def test_token_never_reaches_files_logs_or_errors(runs, tmp_path, tmp_path_factory, caplog, capsys, monkeypatch):
    secret = "hf_" + uuid.uuid4().hex + "Secret"
    hub = FakeHub.start(token=secret)
    try:
        caplog.set_level(logging.DEBUG)
        messages = []
        monkeypatch.setenv("HF_TOKEN", secret)  # the env route, as the CLI would use it
        push_run(runs[0], REPO, endpoint=hub.url)
        assert main(["push", str(runs[1]), "--repo", REPO, "--endpoint", hub.url]) == 0
        pull_run(REPO, endpoint=hub.url, token=secret)
        hub.rate_limit(1)
        push_run(runs[0], REPO, token=secret, endpoint=hub.url)
        for bad in ({"repo_id": "bob/elsewhere"}, {"repo_id": REPO, "token": secret[:-1] + "X"}):
            with pytest.raises(Exception) as info:
                push_run(runs[0], bad["repo_id"], token=bad.get("token", secret), endpoint=hub.url)
            messages += [str(info.value), repr(info.value)]
        hub.stop()
        with pytest.raises(HubNetworkError) as info:
            push_run(runs[0], REPO, token=secret, endpoint=hub.url)
        messages += [str(info.value), repr(info.value)]
        assert main(["push", str(runs[0]), "--repo", REPO, "--endpoint", hub.url]) == 1
    finally:
        hub.stop()
    out, err = capsys.readouterr()
    assert "pushed run" in out and "error:" in err
    for text in (caplog.text, out, err, *messages):
        assert secret not in text and secret[3:] not in text
    written = [p for p in tmp_path_factory.getbasetemp().rglob("*") if p.is_file() and not p.is_symlink()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]
    assert all(secret.encode() not in data for data in hub.files("dataset", REPO).values())


def test_wrong_or_missing_token(fake_hub, runs, monkeypatch):
    before = tree_bytes(runs[0])
    with pytest.raises(HubAuthError, match="401") as info:
        push_run(runs[0], REPO, token="hf_definitelyNotValid123", endpoint=fake_hub.url)
    assert "hf_definitelyNotValid123" not in str(info.value)
    with pytest.raises(HubAuthError, match="no Hugging Face token"):
        push_run(runs[0], REPO, endpoint=fake_hub.url)
    assert not fake_hub.has_repo("dataset", REPO)
    assert tree_bytes(runs[0]) == before  # a failed push leaves the run alone ...
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    assert push_run(runs[0], REPO, endpoint=fake_hub.url).run_id == run_id_of(runs[0])  # ... and can be retried
    with pytest.raises(HubAuthError):  # the explicit token comes first, even with a valid HF_TOKEN
        push_run(runs[0], REPO, token="hf_definitelyNotValid123", endpoint=fake_hub.url)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(hub_client, "get_token", lambda: fake_hub.token)  # the saved `hf auth login`
    assert push_run(runs[1], REPO, endpoint=fake_hub.url).run_id == run_id_of(runs[1])


def test_no_write_access(fake_hub, runs):
    with pytest.raises(HubPermissionError, match=r"may not write to bob/runs \(403 forbidden\)"):
        push_run(runs[0], "bob/runs", token=fake_hub.token, endpoint=fake_hub.url)
    fake_hub.add_file("dataset", "bob/public-runs", "README.md", b"# Bob's\n")  # exists, but is not Alice's
    with pytest.raises(HubPermissionError, match="403"):
        push_run(runs[0], "bob/public-runs", token=fake_hub.token, endpoint=fake_hub.url)
    assert len(fake_hub.commits("dataset", "bob/public-runs")) == 2
    with pytest.raises(HubPermissionError, match="read-only"):
        push_run(runs[0], REPO, token=fake_hub.read_token, endpoint=fake_hub.url)


@pytest.mark.parametrize("bad", ["runs", "a/b/c", "alice//runs", "-alice/runs", "alice/runs..x", "alice/ru ns", ""])
def test_malformed_repository_id(fake_hub, runs, bad):
    with pytest.raises(HubRepoIdError, match="namespace/name|letters, digits") as info:
        push_run(runs[0], bad, token=fake_hub.token, endpoint=fake_hub.url)
    assert isinstance(info.value, ValueError)
    with pytest.raises(HubRepoIdError):
        pull_run(bad, endpoint=fake_hub.url)
    assert fake_hub.requests == []  # rejected before any request


def test_rate_limited_requests_are_retried_then_succeed(fake_hub, runs, caplog):
    fake_hub.rate_limit(2)
    result = push_run(runs[0], REPO, token=fake_hub.token, endpoint=fake_hub.url)
    assert result.run_id == run_id_of(runs[0])
    assert [r.path for r in fake_hub.requests[:3]] == ["/api/whoami-v2"] * 3
    assert caplog.text.count("answered 429; retrying") == 2


def test_persistent_rate_limit_gives_the_rate_limit_message(fake_hub, runs):
    fake_hub.rate_limit(1000)
    start = time.monotonic()
    with pytest.raises(HubRateLimitError, match="rate limiting.*429.*after retrying"):
        push_run(runs[0], REPO, token=fake_hub.token, endpoint=fake_hub.url)
    assert time.monotonic() - start < 3
    assert len(fake_hub.requests) == 3  # the policy's attempts, then the message
    assert not fake_hub.has_repo("dataset", REPO)


def test_server_down_gives_the_network_message_quickly(fake_hub, runs):
    fake_hub.stop()
    start = time.monotonic()
    with pytest.raises(HubNetworkError, match="cannot reach"):
        push_run(runs[0], REPO, token=fake_hub.token, endpoint=fake_hub.url)
    with pytest.raises(HubNetworkError, match="cannot reach"):
        pull_run(REPO, endpoint=fake_hub.url)
    assert time.monotonic() - start < 3


def test_a_silent_server_times_out_with_the_network_message(fake_hub, runs, monkeypatch):
    monkeypatch.setattr(hub_client, "READ_TIMEOUT_S", 0.5)
    hub_client.ensure_timeouts()
    close_session()  # the next request builds the shared client with the short timeout
    fake_hub.delay = 3
    try:
        start = time.monotonic()
        with pytest.raises(HubNetworkError, match="did not answer in time"):
            push_run(runs[0], REPO, token=fake_hub.token, endpoint=fake_hub.url)
        assert time.monotonic() - start < 2.5
    finally:
        fake_hub.delay = 0
        monkeypatch.undo()
        close_session()


def test_cli_push_pull_and_bad_input(fake_hub, runs, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MY_HUB_TOKEN", fake_hub.token)
    assert main(["push", str(runs[0]), "--repo", REPO, "--token-env", "MY_HUB_TOKEN", "--endpoint", fake_hub.url,
                 "--private"]) == 0
    out = capsys.readouterr().out
    assert f"pushed run {run_id_of(runs[0])}" in out and fake_hub.is_private("dataset", REPO)
    assert main(["pull", REPO, "--endpoint", fake_hub.url]) == 1  # private: anonymous pulls see nothing
    assert f"repository {REPO} not found" in capsys.readouterr().err
    assert main(["pull", REPO, "--endpoint", fake_hub.url, "--token-env", "MY_HUB_TOKEN"]) == 0
    folder = capsys.readouterr().out.strip()
    assert load_run(folder).run_id == run_id_of(runs[0])
    assert main(["push", str(runs[0]), "--repo", "not-a-repo", "--endpoint", fake_hub.url]) == 2
    assert "namespace/name" in capsys.readouterr().err
    assert main(["push", str(runs[0]), "--repo", REPO, "--token-env", "UNSET_VAR_X", "--endpoint", fake_hub.url]) == 2
    assert "UNSET_VAR_X is not set" in capsys.readouterr().err
    assert main(["export", str(runs[0]), "--out", str(tmp_path / "exp")]) == 0
    assert capsys.readouterr().out.strip().endswith(".zip")


def test_a_comparison_folder_pushes_and_pulls_like_a_run(fake_hub, tmp_path):
    comparison = tmp_path / "cmp"
    make_run(comparison / "ddim-3", seed=3, steps=3)
    make_run(comparison / "ddim-5", seed=3, steps=5)
    (comparison / "metrics.json").write_text(json.dumps({"comparison_id": "steps-3-vs-5", "rms_ratio": 0.5}))
    result = push_run(comparison, REPO, token=fake_hub.token, endpoint=fake_hub.url)
    assert result.run_id == "steps-3-vs-5"
    remote = fake_hub.files("dataset", REPO)
    prefix = "runs/steps-3-vs-5/"
    assert {k[len(prefix):]: v for k, v in remote.items() if k.startswith(prefix) and not k.endswith(README)} == \
        tree_bytes(comparison)
    entry = json.loads(remote[INDEX])[-1]
    assert entry["kind"] == "comparison" and entry["sampler"] == "ddim (3 steps), ddim (5 steps)"
    assert f"]({prefix}ddim-3/samples.png)" in remote[README].decode()
    folder = pull_run(REPO, endpoint=fake_hub.url)
    assert load_run(folder / "ddim-5").samples.equal(load_run(comparison / "ddim-5").samples)


def _front_matter(readme: str) -> dict:
    import yaml

    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---", 2)[1])


def test_pushed_readme_declares_a_samples_config_the_dataset_viewer_reads(fake_hub, runs):
    """configs: in the shape the Hub documents (config_name, data_files of split/path), every path present, and
    the table readable the way the viewer's JSON builder falls back for a JSON list (pandas.read_json)."""
    import io

    import pandas as pd

    for run in runs:
        push_run(run, REPO, token=fake_hub.token, endpoint=fake_hub.url)
    remote = fake_hub.files("dataset", REPO)
    meta = _front_matter(remote[README].decode())
    assert "analytic-diffusion-studio" in meta["tags"]
    (config,) = [c for c in meta["configs"] if c["config_name"] == "samples"]
    assert set(config) == {"config_name", "data_files"}
    for files in config["data_files"]:
        assert set(files) == {"split", "path"} and re.fullmatch(r"\w+", files["split"])
        assert files["path"] in remote
    table = pd.read_json(io.BytesIO(remote[INDEX]))
    assert table["run_id"].tolist() == [run_id_of(r) for r in runs]
    assert all(path in remote and remote[path].startswith(b"\x89PNG") for path in table["samples_file"])
    (pictures,) = [c for c in meta["configs"] if c["config_name"] == "pictures"]
    matched = {path for files in pictures["data_files"] for pattern in files["path"] for path in remote
               if fnmatch.fnmatchcase(path, pattern) and path.count("/") == pattern.count("/")}
    assert set(table["samples_file"]) <= matched and all(remote[p].startswith(b"\x89PNG") for p in matched)


def test_an_older_studio_readme_gains_the_config_and_a_user_one_is_left_alone():
    from studio.hub.share import top_readme, with_samples_config

    fresh = top_readme(None, REPO, [])
    older = re.sub(r"configs:\n(?:[- ] .*\n)+", "", fresh)
    assert "configs" not in _front_matter(older) and "configs" in _front_matter(fresh)
    assert _front_matter(top_readme(older, REPO, []))["configs"] == _front_matter(fresh)["configs"]
    mine = "---\nlicense: mit\nconfigs:\n- config_name: mine\n  data_files: data.csv\n---\n# Notes\n"
    assert with_samples_config(mine) == mine
    tagged = mine.replace("license: mit\n", "license: mit\ntags:\n- analytic-diffusion-studio\n")
    names = [c["config_name"] for c in _front_matter(with_samples_config(tagged))["configs"]]
    assert names == ["samples", "pictures", "mine"]
