"""The studio page: header, presets, and one tab per module (sample, neighbours, locality, compare, forward).

Building the page reads only the registries (names and declared parameters); datasets are loaded when a
page asks for them, and `warm_up` prepares the default run in the background after the server starts.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from studio import resource_dir
from studio.config import RunConfig
from studio.presets import Preset, compare_pair, list_presets
from studio.ui.compare import CompareTab
from studio.ui.forward import ForwardTab
from studio.ui.locality import LocalityTab
from studio.ui.neighbours import NeighboursTab
from studio.ui.sample import SampleTab
from studio.ui.session import Session, outputs_root

log = logging.getLogger("studio.ui")

CSS_FILE = resource_dir("assets") / "studio.css"
PLAYER_JS = CSS_FILE.with_name("player.js")  # the run player and classroom mode
TITLE = "Analytic Diffusion Studio"
NO_PRESET = "(your own settings)"


def analytics_enabled() -> bool:
    """Gradio's usage analytics stay off unless GRADIO_ANALYTICS_ENABLED turns them on."""
    return os.environ.get("GRADIO_ANALYTICS_ENABLED", "False").strip().lower() in ("1", "true", "yes")


def build_app(presets_folder: str | Path | None = None) -> gr.Blocks:
    presets, problems = list_presets(presets_folder)
    by_title = {p.title: p for p in presets}
    cfg = RunConfig().validate()
    with gr.Blocks(title=TITLE, fill_width=True, analytics_enabled=analytics_enabled()) as demo:
        session = gr.State(Session(), delete_callback=lambda s: s.cancel())
        with gr.Row(elem_id="studio-header", equal_height=True):
            gr.Markdown(f"## {TITLE}\nTraining-free diffusion denoisers: watch a sample form, see which training "
                        "images it copies and why local denoisers generalise.", elem_id="studio-title")
            with gr.Column(scale=1, min_width=320):
                preset = gr.Dropdown([NO_PRESET, *by_title], value=NO_PRESET, label="Preset (one click per lesson)",
                                     elem_id="preset", info="fills every control, runs it and opens the tab "
                                                            "where its point is seen")
                gr.Checkbox(False, label="Classroom mode (large text and pictures; also ?classroom=1)",
                            elem_id="classroom", container=False)
        preset_text = gr.Markdown(elem_id="preset-description", elem_classes=["studio-preset"])
        if problems:
            gr.Markdown("⚠️ Presets not loaded: " + "; ".join(problems), elem_classes=["studio-small"])
        with gr.Tabs(elem_id="studio-tabs") as tabs:
            with gr.Tab("Sample", id="sample"):
                sample = SampleTab(session, cfg)
            with gr.Tab("Neighbours", id="neighbours", elem_id="tab-neighbours"):
                neighbours = NeighboursTab(session)
            with gr.Tab("Locality", id="locality", elem_id="tab-locality"):
                locality = LocalityTab(session)
            with gr.Tab("Compare", id="compare"):
                compare = CompareTab(session, sample.form, cfg)
            with gr.Tab("Forward process", id="forward") as forward_tab:
                forward = ForwardTab(sample.form)

        result_events = sample.wire()
        filled, preset_runs = wire_presets(by_title, preset, preset_text, tabs, session, sample, compare)
        result_events.append(preset_runs)
        neighbours.wire(result_events)
        locality.wire(result_events)
        compare.wire()
        forward.wire(forward_tab)

        form = sample.form
        demo.load(form.preview, form.dataset.inputs, [form.dataset_view, form.dataset_info],
                  api_visibility="private", show_progress="hidden")
    return demo


def wire_presets(by_title: dict[str, Preset], preset: gr.Dropdown, preset_text: gr.Markdown, tabs: gr.Tabs,
                 session: gr.State, sample: SampleTab, compare: CompareTab) -> tuple[Any, Any]:
    """One click per lesson: choosing a preset fills every control, runs it (both sides for a comparison) and
    opens the tab where its point is seen. Returns (the fill event, the Sample run it starts)."""
    form = sample.form

    study = compare.study

    def apply_preset(title: str) -> list:
        chosen = by_title.get(title)
        if chosen is None:
            return [gr.skip()] * (len(form.outputs) + len(compare.fill_outputs) + len(study.fill_outputs) + 1) + [""]
        a, b = compare_pair(chosen.config, chosen.compare or None)
        first = "compare" if chosen.opens == "compare" else "sample"  # the run streams there
        shown = study.fill(chosen.study) if chosen.study else [gr.skip()] * len(study.fill_outputs)
        return [*form.fill(chosen.config), *compare.fill(a, b), *shown, gr.Tabs(selected=first), chosen.description]

    def run_sample(title: str, state: Session, *values: Any):
        chosen = by_title.get(title)
        if chosen is not None and chosen.opens != "compare":
            yield from sample.run(state, *values)

    def run_compare(title: str, state: Session, *values: Any):
        chosen = by_title.get(title)
        if chosen is not None and chosen.opens == "compare" and not chosen.study:
            yield from compare.run(state, *values)

    def run_study(title: str, *values: Any) -> list:
        chosen = by_title.get(title)
        if chosen is None or not chosen.study:
            return [gr.skip()] * len(study.outputs)
        return study.run(*values)

    def open_tab(title: str) -> Any:
        chosen = by_title.get(title)
        return gr.skip() if chosen is None or chosen.opens == "compare" else gr.Tabs(selected=chosen.opens)

    filled = preset.change(apply_preset, preset, [*form.outputs, *compare.fill_outputs, *study.fill_outputs, tabs,
                                                  preset_text], api_name="preset", show_progress="hidden")
    runs = filled.then(run_sample, [preset, session, *form.inputs], sample.result_outputs,
                       api_visibility="private", show_progress="hidden", concurrency_limit=None)
    runs.success(open_tab, preset, tabs, api_visibility="private", show_progress="hidden", queue=False)
    filled.then(run_compare, [preset, *compare.inputs], compare.result_outputs, api_visibility="private",
                show_progress="hidden", concurrency_limit=None)
    filled.then(run_study, [preset, *study.inputs], study.outputs, api_visibility="private",
                concurrency_limit=1, concurrency_id="study")
    return filled, runs


def launch_options() -> dict[str, Any]:
    """Theme, CSS and file access for `demo.launch`."""
    theme = gr.themes.Soft(primary_hue="indigo", secondary_hue="orange", neutral_hue="slate")
    root = outputs_root()
    root.mkdir(parents=True, exist_ok=True)
    from studio.serving.launch import launch_limits

    return dict(theme=theme, css_paths=[CSS_FILE] if CSS_FILE.is_file() else None, allowed_paths=[str(root)],
                js=PLAYER_JS.read_text() if PLAYER_JS.is_file() else None,
                footer_links=["api", "gradio", "settings"], run_history=False, ssr_mode=False, **launch_limits())


def start(host: str = "127.0.0.1", port: int | None = None, share: bool = False, quiet: bool = False,
          presets_folder: str | Path | None = None) -> gr.Blocks:
    """Build the page and serve it in the background; `demo.local_url` says where, `demo.close()` stops it."""
    demo = build_app(presets_folder)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=quiet,
                **launch_options())
    return demo


def warm_up(cfg: RunConfig | None = None) -> threading.Thread:
    """Load the default dataset, fit the default denoiser and build its neighbour index in the background,
    so the first Run streams at once."""

    def work() -> None:
        try:
            from studio import engine
            from studio.serving import zerogpu
            from studio.ui import charts  # noqa: F401  (imports plotly)

            # on ZeroGPU the GPU exists only inside spaces.GPU calls: warm the data and imports on the CPU
            device = "cpu" if zerogpu.enabled() else "auto"
            run = engine.execute(cfg or RunConfig.from_dict({"sampler": {"steps": 3}, "device": device}))
            charts.per_step(run.metrics["per_step"])
        except Exception:  # noqa: BLE001 - warming up is an optimisation; a real run reports real errors
            log.exception("warm-up failed")

    thread = threading.Thread(target=work, name="studio-warm-up", daemon=True)
    thread.start()
    return thread
