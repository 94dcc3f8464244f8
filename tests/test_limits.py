import pytest

from studio.limits import LimitError, Limits


def test_defaults_and_environment(monkeypatch):
    assert Limits.from_env().max_samples == 64
    monkeypatch.setenv("STUDIO_MAX_SAMPLES", "8")
    monkeypatch.setenv("STUDIO_QUEUE_LENGTH", "3")
    lim = Limits.from_env()
    assert lim.max_samples == 8 and lim.queue_length == 3


@pytest.mark.parametrize("kwargs,message", [
    ({"n": 9, "steps": 10}, r"n \(number of samples\): 9 is over this instance's limit of 8 \(set STUDIO_MAX_SAMPLES"),
    ({"n": 2, "steps": 51}, r"sampler.steps: 51 is over this instance's limit of 50 \(set STUDIO_MAX_STEPS"),
    ({"n": 2, "steps": 5, "dataset_size": 1001}, r"dataset size: 1,001 is over this instance's limit of 1,000"),
])
def test_each_run_limit_has_its_message(monkeypatch, kwargs, message):
    monkeypatch.setenv("STUDIO_MAX_SAMPLES", "8")
    monkeypatch.setenv("STUDIO_MAX_STEPS", "50")
    monkeypatch.setenv("STUDIO_MAX_DATASET", "1000")
    lim = Limits.from_env()
    with pytest.raises(LimitError, match=message):
        lim.check_run(**kwargs)
    lim.check_run(n=8, steps=50, dataset_size=1000)


def test_upload_and_queue_limits_have_messages(monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_BYTES", "1000")
    lim = Limits.from_env()
    with pytest.raises(LimitError, match=r"upload: 2,000 is over this instance's limit of 1,000 \(set STUDIO_MAX_UPLOAD_BYTES"):
        lim.check("max_upload_bytes", 2000, "upload")
    with pytest.raises(LimitError, match="STUDIO_QUEUE_LENGTH"):
        lim.check("queue_length", 33, "queued jobs")


def test_bad_environment_value(monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_STEPS", "lots")
    with pytest.raises(LimitError, match="STUDIO_MAX_STEPS: expected a positive whole number"):
        Limits.from_env()
