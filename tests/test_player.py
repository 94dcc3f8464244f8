"""The run player's feed (studio/ui/player.py): every step of a run, append-only while it streams, labelled."""

import re

import torch

from studio import engine
from studio.config import RunConfig
from studio.ui import player


def frames_of(html: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'data-([a-z0-9]+)="([^"]*)"', f)) for f in re.findall(r"<i [^>]*></i>", html)]


def test_the_feed_of_a_run_holds_every_step_labelled_and_only_grows():
    run = engine.execute(RunConfig.from_dict({"sampler": {"steps": 7}, "n": 3, "device": "cpu"}))
    traj = run.trajectory
    feed = player.Feed(7)
    shown = []
    for k in (1, 2, 5):  # a coalesced stream: some steps never arrive as events
        feed.add(k, int(traj.timesteps[k - 1]), float(traj.alpha_bar[k - 1]), traj.x_t[k - 1], traj.x0[k - 1])
        shown.append(feed.html())
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:]))  # the page gets only what is new
    feed.complete(traj)  # the finished run fills the gaps
    frames = frames_of(feed.html())
    assert [int(f["k"]) for f in frames] == list(range(1, 8))
    assert all(f["total"] == "7" for f in frames)
    assert [int(f["t"]) for f in frames] == traj.timesteps.tolist()
    assert [float(f["ab"]) for f in frames] == [float(f"{a:.5g}") for a in traj.alpha_bar.tolist()]
    assert frames[-1]["scale"] == "20"  # 8 px digits: 160 screen pixels per sample
    assert len({f["xt"] for f in frames}) == 7 and all(f["x0"].startswith("data:image/png;base64,") for f in frames)
    assert player.of_trajectory(traj).split('data-run="')[1][12:] == feed.html().split('data-run="')[1][12:]


def test_a_very_large_run_sends_one_step_in_n_and_says_so():
    feed = player.Feed(1000)
    for k in range(1, 1001):
        x = torch.rand(64, 3, 32, 32) * 2 - 1
        feed.add(k, 1000 - k, 0.5, x, x)
    assert feed.stride > 1 and 1 in feed.frames and 1000 in feed.frames
    assert len(feed.html()) < 1.2 * player.FEED_BYTES
    assert f"one step in {feed.stride}" in feed.html()
