"""The studio's page parts without a server: generated controls, the form round trip, the tab handlers' numbers.
Handlers take the page's values by component and give updates by component, as the page does."""

import base64
import copy
import importlib.util
import io
import math
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from studio import engine
from studio.analysis.locality import locality_view
from studio.analysis.neighbours import nearest
from studio.config import RunConfig
from studio.data.registry import dataset_names, get_entry, load_dataset
from studio.denoisers.registry import denoiser_class, denoiser_names
from studio.diffusion.samplers import SAMPLERS
from studio.diffusion.schedules import Schedule
from studio.presets import compare_pair, list_presets
from studio.ui import compare, controls, forward, neighbours, pictures
from studio.ui.catalog import current
from studio.ui.form import RunForm
from studio.ui.locality import LocalityTab
from studio.ui.session import Result, Session, progress_html
from studio.serving.worker import Job


def page_values(components) -> dict:
    """What the page holds in these components when it opens."""
    return {c: c.value for c in components}


def applied(values: dict, updates: dict) -> dict:
    """What the components of `values` hold after a handler returned `updates` (by component)."""
    out = dict(values)
    for component, update in updates.items():
        if component not in out:
            continue
        if isinstance(update, dict) and update.get("__type__") == "update":
            out[component] = update.get("value", out[component])
        else:
            out[component] = update
    return out


def all_params():
    for name in dataset_names():
        yield from get_entry(name).params
    for name in denoiser_names():
        yield from denoiser_class(name).params
    for cls in SAMPLERS.values():
        yield from cls.params


def test_every_declared_parameter_gets_a_widget_that_round_trips_its_default():
    with gr.Blocks():
        for p in all_params():
            widget = controls.component_for(p, "t")
            assert widget.label.startswith(p.name) and widget.info == (p.help or None)
            value = controls.from_widget(p, controls.to_widget(p, p.default))
            assert p.coerce(value, "t") == p.default or (value is None and p.default is None), p
            if p.kind is bool:
                assert isinstance(widget, gr.Checkbox)
            elif p.choices:
                assert isinstance(widget, gr.Dropdown) and list(widget.choices) == [(str(c), c) for c in p.choices]
            elif p.default is None and p.kind in (int, float):
                assert isinstance(widget, gr.Textbox) and widget.placeholder == "auto"


def test_the_form_shows_and_reads_back_every_preset():
    presets, problems = list_presets()
    assert not problems
    with gr.Blocks():
        form = RunForm(current())
    defaults = page_values(form.inputs)
    assert form.read(defaults).to_dict() == RunConfig().validate().to_dict()
    shown = defaults
    for preset in presets:  # one after the other, as a visitor clicks through them
        shown = applied(shown, form.fill(preset.config.to_dict()))
        assert form.read(shown).to_dict() == preset.config.to_dict(), preset.name


def test_entries_share_parameter_widgets_and_a_choice_shows_its_own():
    with gr.Blocks():
        form = RunForm(current())
    panel = form.dataset
    assert len(panel.slots) < sum(len(params) for params in panel.options.values()) / 5
    for name, params in panel.options.items():  # every parameter of every entry has a widget of its kind
        assert [type(w) for _, w in panel.widgets(name)] == [type(controls.component_for(p, "x")) for p in params]
    shown = panel.show("moons")
    visible = [w for w in panel.slots if shown[w].get("visible")]
    assert [shown[w]["label"] for w in visible] == ["size", "seed", "noise"]
    assert shown[visible[2]]["maximum"] == 1.0 and shown[visible[0]]["value"] == 1000
    values = applied(page_values(form.inputs), {form.dataset.dropdown: "moons", **shown})
    assert form.read(values).dataset.name == "moons"


def test_the_form_names_the_field_of_a_bad_value():
    with gr.Blocks():
        form = RunForm(current())
    values = page_values(form.inputs)
    values[form.method.steps] = 0
    with pytest.raises(ValueError, match=r"sampler\.steps: 0 is out of range \[1, 1000\]"):
        form.read(values)


def test_compare_sides_share_data_and_seed_and_distances_are_rms():
    base = RunConfig.from_dict({"dataset": {"name": "digits", "size": 100}, "n": 3, "seed": 7,
                                "sampler": {"steps": 4, "clip_x0": True}})
    side = compare.side_config(base, {"denoiser": {"name": "wiener"}, "sampler": {"name": "ddpm", "steps": 6}})
    assert (side.dataset.options, side.seed, side.n) == (base.dataset.options, 7, 3)
    assert (side.denoiser.name, side.sampler.name, side.sampler.steps, side.sampler.clip_x0) == ("wiener", "ddpm",
                                                                                               6, True)
    assert compare.aligned(3, 5) == [0, 0, 1, 2, 2] and compare.aligned(5, 3) == [0, 1, 2, 3, 4]
    a, b = compare_pair(base)
    ra, rb = engine.execute(a), engine.execute(b)
    got = compare.trajectory_distances(ra, rb)
    k = 2
    diff = (ra.trajectory.x_t[k] - rb.trajectory.x_t[k]).reshape(3, -1)
    assert math.isclose(got["x_t"][k], float(diff.pow(2).mean(1).sqrt().mean()), rel_tol=1e-6)
    assert got["x_t"][0] == 0.0  # same seed: the same starting noise
    assert "Same seed (7)" in compare.compare_table([Result(ra, None), Result(rb, None)])


def test_neighbour_table_matches_the_faiss_search():
    cfg = RunConfig.from_dict({"dataset": {"name": "digits", "size": 300}, "denoiser": {"name": "optimal"},
                               "sampler": {"steps": 10}, "n": 5})
    run = engine.execute(cfg)
    dataset = load_dataset("digits", size=300)
    session = Session(sample=Result(run, dataset))
    text, picture, rows, plot = neighbours.neighbour_table(session, 10, 3)
    nb = nearest(dataset, run.samples, k=3)
    assert [r[1] for r in rows] == nb.indices[:, 0].tolist()
    assert [r[6] for r in rows] == ["yes" if m else "no" for m in nb.memorised.tolist()]
    assert text.startswith(f"**{int(nb.memorised.sum())} of 5** final samples")
    assert plot is None and picture.height > 5 * 8
    text, _, rows, _ = neighbours.neighbour_table(session, 1, 3)
    assert "x̂0 at step 1/10" in text and len(rows) == 5


def test_locality_tab_shows_the_analysis_mask_and_wiener_row():
    cfg = RunConfig.from_dict({"dataset": {"name": "digits", "size": 300}, "denoiser": {"name": "pca_locality"},
                               "sampler": {"steps": 6}, "n": 2})
    run = engine.execute(cfg)
    dataset = load_dataset("digits", size=300)
    with gr.Blocks():
        tab = LocalityTab(gr.State())
    out = tab.update(Session(sample=Result(run, dataset)), 2, 3, 5, "R", 4)
    body, picture, info, row_fig, mask_fig, note, strip_fig, patch = (out[c] for c in tab.outputs)
    view = locality_view(dataset, (5, 3), int(run.trajectory.timesteps[3]), float(run.trajectory.alpha_bar[3]),
                         mask_threshold=cfg.denoiser.params["mask_threshold"])
    assert "pixel (x=3, y=5) of sample 2 · step 4/6" in info
    assert f"**{int(view.mask.sum())} of 64**" in note and "the mask this run's denoiser used" in note
    assert np.allclose(np.array(row_fig.data[0].z), view.wiener_row[0].numpy())
    assert np.array_equal(np.array(mask_fig.data[0].z), view.mask[0].numpy().astype(float))
    assert len(strip_fig.data) == 6 and patch["visible"] is False and body["visible"] is True
    assert picture.size == (8 * 36, 8 * 36)


def test_forward_noise_and_upload(tmp_path):
    x0 = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    ab = Schedule.build().ab(300)
    x_t, eps = forward.noised(x0, ab, seed=5)
    assert torch.equal(eps, torch.randn(x0.shape, generator=torch.Generator().manual_seed(5)))
    assert torch.allclose(x_t, math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps)
    picture = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3)))
    picture.save(tmp_path / "up.png")
    item = forward.upload_as_item(str(tmp_path / "up.png"), (1, 8, 8))
    want = np.asarray(picture.convert("L").resize((8, 8), Image.Resampling.LANCZOS), dtype=np.float32) / 127.5 - 1
    assert item.shape == (1, 8, 8) and np.allclose(item[0].numpy(), want)
    assert forward.upload_as_item(str(tmp_path / "up.png"), (3, 4, 4)).shape == (3, 4, 4)


def test_forward_tab_reports_alpha_bar_snr_and_a_faithful_inversion():
    with gr.Blocks():
        form = RunForm(current())
        tab = forward.ForwardTab(form)
    values = {**page_values(form.inputs), tab.source: "training image", tab.index: 3, tab.upload: None,
              tab.t: 250, tab.seed: 0, tab.steps: 20, tab.inv_denoiser: forward.SAMPLE_TABS}
    out = tab.noise(values)
    picture, info = out[tab.picture], out[tab.info]
    ab = Schedule.build().ab(250)
    assert f"ā_t = {ab:.5f}" in info and f"SNR = ā/(1-ā) = {ab / (1 - ab):.4g}" in info
    assert picture.size[0] > 3 * picture.size[1] / 2
    inv = tab.invert(values)[tab.inv_info]
    assert "optimal, DDIM η = 0, 20 steps" in inv and "RMS 0.0000" in inv
    with pytest.raises(gr.Error, match=r"training image #: 5000 is out of range \[0, 1796\]"):
        tab.noise({**values, tab.index: 5000})


def test_forward_inversion_by_default_uses_the_datasets_network_and_refines_each_step():
    with gr.Blocks():
        form = RunForm(current())
        tab = forward.ForwardTab(form)
    values = {**page_values(form.inputs), tab.source: "training image", tab.index: 3, tab.upload: None,
              tab.t: 250, tab.seed: 0, tab.steps: 20, tab.inv_denoiser: tab.inv_denoiser.value}
    assert values[tab.inv_denoiser] == forward.AUTO
    info = tab.invert(values)[tab.inv_info]
    assert info.startswith(f"unet, DDIM η = 0, 20 steps (trailing), up to {forward.REFINE} fixed-point refinements")
    std = float(re.search(r"x_T std ([\d.]+)", info).group(1))
    corr = float(re.search(r"correlation with x0 (-?[\d.]+)", info).group(1))
    config = form.read(values).to_dict()
    plain = forward.invert(config, "training image", 3, None, 20, forward.AUTO, refine=0)[1]
    rms = [float(re.search(r"RMS ([\d.]+)", text).group(1)) for text in (info, plain)]
    assert 0.7 < std < 1.4 and corr < 0.5 and rms[0] < rms[1] / 2, (info, plain)
    textures = applied(values, {form.dataset.dropdown: "textures", **form.dataset.show("textures")})  # no network
    assert tab.invert(textures)[tab.inv_info].startswith("wiener")
    with pytest.raises(gr.Error, match=r"refinements per step: 21 is out of range \[0, 20\]"):
        forward.invert(config, "training image", 3, None, 20, forward.AUTO, refine=21)


def test_pairs_picture_and_progress_bar():
    x = torch.zeros(9, 1, 8, 8)
    picture = pictures.pairs(x, x)
    assert picture.width > picture.height  # three rows of three x_t | x̂0 pairs
    html = progress_html("running", 3, 12, "step <3>")
    assert 'data-state="running" data-k="3" data-total="12"' in html and "width:25.0%" in html
    assert "step &lt;3&gt;" in html


def test_session_runs_one_job_at_a_time_and_new_sessions_start_empty():
    session = Session()
    first, second = Job([]), Job([])
    session.start(first)
    session.start(second)
    assert first.cancelled and not second.cancelled
    assert session.cancel() and second.cancelled
    session.sample = Result(None, None)
    assert copy.deepcopy(session).sample is None


def test_analytics_are_off_unless_asked_for(monkeypatch):
    from studio.ui.app import analytics_enabled

    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    assert analytics_enabled() is False
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    assert analytics_enabled() is True


def test_app_flags_and_space_environment(monkeypatch):
    spec = importlib.util.spec_from_file_location("studio_app", Path(__file__).resolve().parents[1] / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    for var in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "GRADIO_SHARE", "SPACE_ID"):
        monkeypatch.delenv(var, raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    assert app.parse_args([]).host == "0.0.0.0"
    monkeypatch.setenv("GRADIO_SERVER_NAME", "10.0.0.2")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8000")
    args = app.parse_args(["--share"])
    assert (args.host, args.port, args.share) == ("10.0.0.2", 8000, True)
    assert app.parse_args(["--host", "0.0.0.0", "--port", "9000"]).port == 9000


def test_share_and_pull_through_the_page_functions(fake_hub, monkeypatch, tmp_path):
    from studio.runs import save_run
    from studio.ui import hubshare

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    run = engine.execute(RunConfig.from_dict({"dataset": {"name": "digits", "size": 50}, "n": 2,
                                              "sampler": {"steps": 2}}))
    folder = save_run(run, tmp_path / run.run_id)
    status = hubshare.share(folder, "alice/runs", fake_hub.token, False)
    assert status.startswith(f"✅ Shared as run `{run.run_id}`") and fake_hub.token not in status
    wrong = "hf_notTheRightToken0000000000000"
    refused = hubshare.share(folder, "alice/runs", wrong, False)
    assert refused.startswith("❌") and wrong not in refused
    assert hubshare.share(None, "alice/runs", "", False).startswith("Nothing to share yet")
    pulled = hubshare.pull("alice/runs", "", fake_hub.token)
    assert (pulled / "config.yaml").read_text() == (folder / "config.yaml").read_text()
    with pytest.raises(ValueError, match="not in alice/runs"):
        hubshare.pull("alice/runs", "no-such-run", fake_hub.token)


def test_locality_tab_charts_the_patch_size_of_local_score_runs():
    cfg = RunConfig.from_dict({"dataset": {"name": "digits", "size": 300}, "denoiser": {"name": "ls"},
                               "sampler": {"steps": 5}, "n": 2})
    run = engine.execute(cfg)
    with gr.Blocks():
        tab = LocalityTab(gr.State())
    out = tab.update(Session(sample=Result(run, load_dataset("digits", size=300))), 1, 4, 4, "R", 1)
    patch = out[tab.patch]
    assert patch["visible"] is True
    assert list(patch["value"].data[0].y) == [float(s["patch_size"]) for s in run.trajectory.shared]
    assert "the mask pca_locality would use here" in out[tab.mask_note]


def test_exported_config_runs_with_the_cli(tmp_path):
    from studio.cli import main
    from studio.ui.sample import SampleTab

    preset = next(p for p in list_presets()[0] if p.name == "wiener_blurs")
    with gr.Blocks():
        tab = SampleTab(gr.State(), current())
    values = applied(page_values(tab.form.inputs), tab.form.fill(preset.config.to_dict()))
    text = tab.export(values)[tab.yaml]
    assert RunConfig.from_yaml(text).to_dict() == preset.config.to_dict()
    (tmp_path / "config.yaml").write_text(text)
    assert main(["sample", "--config", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run"),
                 "--steps", "3", "--n", "2"]) == 0
    assert (tmp_path / "run" / "samples.png").is_file()
    shown = applied(page_values(tab.form.inputs), tab.import_yaml(text))
    assert tab.form.read(shown).to_dict() == preset.config.to_dict()
    with pytest.raises(gr.Error, match=r"n: 0 is out of range"):
        tab.import_yaml(text.replace("n: 16", "n: 0"))


def test_dataset_preview_shows_a_strip_and_the_facts_or_the_problem():
    with gr.Blocks():
        form = RunForm(current())
    values = page_values(form.dataset.inputs)
    shown = form.preview(values)[form.dataset_info]
    assert "<b>N = 1,797</b> · shape 1×8×8 · 10 classes" in shown and "license: CC BY 4.0" in shown
    assert "<summary>source and license</summary>scikit-learn load_digits" in shown
    strip = Image.open(io.BytesIO(base64.b64decode(shown.split('src="data:image/png;base64,')[1].split('"')[0])))
    assert strip.size == (16 * 9 * 4 + 4, 9 * 4 + 4)  # 16 digits in a row, 1 px pad, upscaled x4
    size = next(w for p, w in form.dataset.widgets("digits") if p.name == "size")
    shown = form.preview({**values, size: 5000})[form.dataset_info]
    assert "<img" not in shown and shown.startswith("<p>⚠️ dataset.size: 5000 is out of range")


def test_a_pulled_comparison_is_told_from_a_run_and_shown_on_the_compare_tab(tmp_path):
    from studio.runs import save_run
    from studio.ui.hubshare import is_comparison

    base = RunConfig.from_dict({"dataset": {"name": "digits", "size": 100}, "n": 2, "sampler": {"steps": 3}})
    a, b = (engine.execute(cfg) for cfg in compare_pair(base))
    save_run(a, tmp_path / "pair" / "a")
    save_run(b, tmp_path / "pair" / "b")
    single = save_run(a, tmp_path / "single")
    assert is_comparison(tmp_path / "pair") and not is_comparison(single)
    with gr.Blocks():
        form = RunForm(current())
        tab = compare.CompareTab(gr.State(), form, current())
    session = Session()
    shown = tab.show_pulled(session, tmp_path / "pair", "alice/runs ")
    assert [r.run.config.sampler.name for r in session.compare] == ["ddpm", "ddim"]
    assert "Same seed (0)" in shown[tab.table] and shown[tab.download]["value"].endswith(".zip")
    assert "pulled pair from alice/runs" in shown[tab.progress]


def test_colour_gifs_keep_every_frame_and_stay_faithful():
    """The run's animation: every frame kept with its duration, colours within a few levels of the frames (fast
    octree per frame; PIL's default median cut took ~0.4 s a frame at 64 px), the x_t and x̂0 grids on white."""
    import io

    from PIL import Image, ImageSequence

    from studio import images

    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(1, 4, 3, 16, 16, generator=g) * 2 - 1).expand(6, -1, -1, -1, -1)
    ab = torch.linspace(0.05, 1, 6).view(6, 1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(6, 4, 3, 16, 16, generator=g)
    frames = images.trajectory_frames(x_t, x0)
    gif = Image.open(io.BytesIO(images.gif_bytes(frames, ms_per_frame=70, hold_last_ms=900)))
    durations, decoded = [], []
    for frame in ImageSequence.Iterator(gif):
        durations.append(frame.info["duration"])
        decoded.append(frame.convert("RGB"))
    assert len(decoded) == len(frames) and durations == [70] * (len(frames) - 1) + [900]
    for got, want in zip(decoded, frames):
        err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
        assert err.mean() < 12 and got.size == want.size
    a = images.grid(x_t[0])
    gap = np.asarray(frames[0])[:, a.width:a.width + max(4, a.width // 40)]
    assert (gap == 255).all()  # the gap between the two grids is white, not (255, 0, 0)
