"""On a Space a visitor's Hub actions use only the visitor's own token (typed or OAuth), never the server's
HF_TOKEN or saved login, even when the private share/pull events are reached through the queue API; every
message that could carry a token is scrubbed."""

import uuid

import pytest
from gradio_client import Client

import studio.hub.export as export
from fake_hub import FakeHub
from sample_runs import make_run
from space_app import Page, served
from studio.cli import main
from studio.data import hub_client
from studio.hub.share import push_run
from studio.serving.policy import visitor_token
from studio.ui import hubshare

PRIVATE = "alice/private-runs"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("token-runs") / "a", seed=1)


@pytest.fixture(autouse=True)
def _no_video(monkeypatch):
    monkeypatch.setattr(export, "video_encoder_available", lambda: False)


@pytest.fixture
def space(monkeypatch, fake_hub, run_folder):
    """A Space whose owner's write token is both HF_TOKEN and the saved login, and whose owner pushed a run
    to a private repository (and pulled it once, so a copy sits in the server's cache)."""
    push_run(run_folder, PRIVATE, token=fake_hub.token, private=True, endpoint=fake_hub.url)
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setattr(hub_client, "get_token", lambda: fake_hub.token)
    hubshare.pull(PRIVATE, "", "")  # the owner, locally: HF_TOKEN is used and the run is cached
    monkeypatch.setenv("SPACE_ID", "alice/studio")
    fake_hub.requests.clear()
    return fake_hub


def test_the_policy(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert visitor_token(" hf_typed123456 ") == "hf_typed123456" and visitor_token("") is None  # local: fallbacks
    monkeypatch.setenv("SPACE_ID", "a/b")
    assert visitor_token("hf_typed123456", "hf_oauth12345678") == "hf_typed123456"
    assert visitor_token("", None) is False
    assert visitor_token("", "hf_oauth12345678") is False  # Gradio's mocked sign-in off a real Space: refused
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client")
    assert visitor_token("", "hf_oauth12345678") == "hf_oauth12345678"


def test_a_visitor_without_a_token_never_uses_the_servers(space, run_folder):
    status = hubshare.share(run_folder, "alice/visitor-made", "", True)
    assert status.startswith("❌") and "sign in" in status
    assert not space.has_repo("dataset", "alice/visitor-made")
    with pytest.raises(ValueError):
        hubshare.pull(PRIVATE, "", "")  # the cached copy is not handed out: the Hub is asked, anonymously
    assert space.requests and {r.token for r in space.requests} == {None}


def test_a_visitor_acts_with_their_own_token(space, run_folder):
    status = hubshare.share(run_folder, "alice/visitor-made", space.read_token, False)
    assert "read-only" in status and space.read_token not in status
    assert {r.token for r in space.requests} == {space.read_token}


def test_private_events_through_the_queue_api_use_no_server_token(space, tmp_path):
    with served(tmp_path / "outputs") as app:
        with pytest.raises(Exception):
            Client(app.url, verbose=False).predict(None, "alice/x", "", False, api_name="/share")
        page = Page(app)
        done = page.call("run_config", None, "dataset: {name: moons, size: 50}\ndenoiser: {name: wiener}\n"
                                       "sampler: {name: ddim, steps: 2}\nn: 2\ndevice: cpu\n")
        assert done["success"], done
        shared = page.call("share", None, "alice/visitor-made", "", False)
        assert "sign in" in str(shared["output"]["data"][0])
        pulled = page.call("pull", None, PRIVATE, "", "")
        assert not pulled["success"]
    assert not space.has_repo("dataset", "alice/visitor-made")
    assert space.token not in {r.token for r in space.requests}


def test_read_only_message_and_echoed_tokens_are_scrubbed(run_folder, capsys, monkeypatch):
    secret = "hf_" + uuid.uuid4().hex + "Echo"
    hub = FakeHub.start(user=secret, read_token=secret)  # a Hub that echoes the token as the user's name
    try:
        with pytest.raises(hub_client.HubPermissionError) as info:
            push_run(run_folder, "someone/runs", token=secret, endpoint=hub.url)
        assert "read-only" in str(info.value) and secret not in str(info.value)
        monkeypatch.setenv("VISITOR", secret)
        assert main(["push", str(run_folder), "--repo", "someone/runs", "--token-env", "VISITOR",
                     "--endpoint", hub.url]) == 1
    finally:
        hub.stop()
    err = capsys.readouterr().err
    assert "read-only" in err and secret not in err and secret[3:] not in err


def test_push_checks_the_folder_before_the_hub(fake_hub, tmp_path, capsys):
    assert main(["push", str(tmp_path), "--repo", "alice/runs", "--endpoint", fake_hub.url]) == 2
    assert "run_dir" in capsys.readouterr().err and fake_hub.requests == []


def test_a_signed_in_visitor_shares_with_their_oauth_token(run_folder, monkeypatch):
    visitor = "hf_" + uuid.uuid4().hex + "OAuth"
    hub = FakeHub.start(token=visitor, user="bob")
    try:
        monkeypatch.setenv("SPACE_ID", "alice/studio")
        monkeypatch.setenv("SYSTEM", "spaces")
        monkeypatch.setenv("OAUTH_CLIENT_ID", "client")
        monkeypatch.setenv("HF_TOKEN", "hf_serverTokenOfAlice0123456789")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        status = hubshare.share(run_folder, "bob/runs", "", False, None, oauth=visitor)
        assert status.startswith("✅") and visitor not in status
        assert hub.has_repo("dataset", "bob/runs") and {r.token for r in hub.requests} == {visitor}
    finally:
        hub.stop()
