"""A run's memory and time are estimated from n, steps, N, D and the denoiser and checked against
STUDIO_MAX_JOB_GIB / STUDIO_MAX_JOB_SECONDS before it is queued; a job past STUDIO_MAX_JOB_SECONDS is stopped."""

import time

import pytest

import studio.serving.worker as worker
from studio.config import RunConfig
from studio.limits import LimitError, Limits
from studio.serving.policy import check_config, estimate_cost


def test_the_issues_big_request_is_refused_before_it_runs():
    big = RunConfig.from_dict({"dataset": {"name": "faces", "resolution": 256, "channels": 3}, "n": 64,
                               "sampler": {"name": "ddim", "steps": 1000}})
    cost = estimate_cost(big)
    assert cost.gib > 90  # x_t and x̂0 of 1000 steps of 64 RGB 256² pictures: the 110 MB per step seen
    with pytest.raises(LimitError, match=r"^estimated memory in GiB of this run .* over this instance's limit of 4 "
                                         r"\(set STUDIO_MAX_JOB_GIB"):
        check_config(Limits.from_env(), big)
    check_config(Limits.from_env(), RunConfig().validate())  # the default run is far inside


def test_the_time_estimate_grows_with_the_denoisers_work(monkeypatch):
    optimal = estimate_cost(RunConfig().validate())
    els = estimate_cost(RunConfig.from_dict({"denoiser": {"name": "els"}}))
    assert els.seconds > 10 * optimal.seconds
    monkeypatch.setenv("STUDIO_MAX_JOB_SECONDS", "30")
    with pytest.raises(LimitError, match=r"estimated seconds .* els\).* STUDIO_MAX_JOB_SECONDS"):
        check_config(Limits.from_env(), RunConfig.from_dict({"denoiser": {"name": "els"}}))


def test_a_job_past_the_time_limit_is_stopped(monkeypatch, slow_wiener):
    slow_wiener(0.4)
    monkeypatch.setenv("STUDIO_MAX_JOB_SECONDS", "3")  # the estimate (about 2 s) lets it in
    cfg = RunConfig.from_dict({"dataset": {"name": "moons", "size": 50}, "denoiser": {"name": "wiener"}, "n": 2,
                               "sampler": {"name": "ddim", "steps": 40}, "device": "cpu"})
    start = time.monotonic()
    events = list(worker.stream([cfg], inline=True))
    assert time.monotonic() - start < 6  # 40 steps would take 16 s
    assert events[-1].kind == "error" and events[-1].message.startswith("job time: stopped after")
    assert "STUDIO_MAX_JOB_SECONDS" in events[-1].message and 2 <= sum(e.kind == "step" for e in events) < 12
