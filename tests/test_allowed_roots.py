"""With SPACE_ID set and STUDIO_DATA_ROOTS limited, one policy gate (studio.serving.policy) refuses server files
outside the roots (patch schedules, unet model folders, folder datasets and symlinks leading out of them) and the
instance limits, on every path (worker, dataset preview, Forward), before any work; errors never echo a file."""

from types import SimpleNamespace

import pytest
from PIL import Image

import studio.serving.worker as worker
from studio.config import RunConfig
from studio.limits import LimitError, Limits
from studio.serving import policy
from studio.ui.form import RunForm
from studio.ui.forward import training_item

SECRET = "root:x:0:0:SECRET-LINE"


@pytest.fixture
def space(tmp_path, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "passwd").write_text(SECRET + "\n")
    (outside / "model").mkdir()
    Image.new("L", (8, 8), 200).save(outside / "secret.png")
    monkeypatch.setenv("SPACE_ID", "alice/studio")
    monkeypatch.setenv("STUDIO_DATA_ROOTS", str(root))
    return SimpleNamespace(root=root, outside=outside)


def gate(cfg: RunConfig) -> None:
    policy.check_config(Limits.from_env(), cfg)


def cfg(**sections) -> RunConfig:
    return RunConfig.from_dict({"dataset": {"name": "digits", "size": 50}, "n": 2,
                                "sampler": {"name": "ddim", "steps": 2}, **sections})


def test_patch_schedule_outside_the_roots(space):
    bad = cfg(denoiser={"name": "ls", "patch_schedule": str(space.outside / "passwd")})
    with pytest.raises(LimitError, match=r"^denoiser.patch_schedule: .*STUDIO_DATA_ROOTS") as info:
        gate(bad)
    assert "SECRET" not in str(info.value)
    (space.root / "s.yaml").write_text("entries: []\n")
    gate(cfg(denoiser={"name": "ls", "patch_schedule": str(space.root / "s.yaml")}))


def test_model_folders_outside_the_roots_and_existence_is_not_revealed(space):
    messages = []
    for model in (str(space.outside / "model"), str(space.outside / "no-such-folder"), "../../etc"):
        with pytest.raises(LimitError, match=r"^denoiser.model: ") as info:
            gate(cfg(dataset={"name": "moons", "size": 50}, denoiser={"name": "unet", "model": model}))
        messages.append(str(info.value))
    assert len(set(messages)) == 1
    gate(cfg(dataset={"name": "moons", "size": 50}, denoiser={"name": "unet", "model": "owner/name"}))


def test_a_symlink_inside_a_root_leading_out_is_refused(space):
    folder = space.root / "pictures"
    folder.mkdir()
    Image.new("L", (8, 8), 10).save(folder / "mine.png")
    (folder / "theirs.png").symlink_to(space.outside / "secret.png")
    with pytest.raises(LimitError, match=r"dataset.path: theirs.png is a link that leads outside"):
        gate(cfg(dataset={"name": "folder", "path": str(folder)}))
    (space.root / "escape").symlink_to(space.outside)
    with pytest.raises(LimitError, match="dataset.path: this instance reads folder datasets only from"):
        gate(cfg(dataset={"name": "folder", "path": str(space.root / "escape")}))
    (folder / "theirs.png").unlink()
    gate(cfg(dataset={"name": "folder", "path": str(folder)}))


@pytest.fixture
def no_loading(monkeypatch):
    """Any dataset load is a failure: the gate must refuse first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a dataset was loaded before the policy gate refused the request")

    import studio.data.registry as registry

    monkeypatch.setattr(registry, "load_dataset", refuse)  # the page's handlers import it from here as they run


def test_every_path_calls_the_gate_first(space, monkeypatch, no_loading):
    monkeypatch.setenv("STUDIO_MAX_DATASET", "500")
    full_digits = RunConfig.from_dict({"dataset": {"name": "digits"}, "n": 2})  # 1,797 items
    events = list(worker.stream([full_digits], inline=True))
    assert [e.kind for e in events] == ["error"] and "STUDIO_MAX_DATASET" in events[0].message
    form = SimpleNamespace(dataset=SimpleNamespace(read=lambda values: ("digits", {})), dataset_info="info")
    info = RunForm.preview(form, {})["info"]
    assert "<img" not in info and "STUDIO_MAX_DATASET" in info
    with pytest.raises(LimitError, match="STUDIO_MAX_DATASET"):
        training_item(full_digits, "training image", 0, None)
    outside = cfg(dataset={"name": "folder", "path": str(space.outside)})
    with pytest.raises(LimitError, match="dataset.path"):
        training_item(outside, "upload", 0, None)
