"""The studio page: header, presets, and one tab per module (sample, neighbours, locality, compare, forward).

The first screen is built from the catalog (studio.ui.catalog: the registries' declarations and the presets as
plain data), so building and serving it imports neither torch nor the engine; `serve` then starts loading the
engine in the background (studio.ui.loader) and the handlers that compute wait for it. Handlers get their inputs
and give their outputs by component, never by position."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import gradio as gr

from studio import resource_dir
from studio.ui import loader
from studio.ui.catalog import PresetEntry, current
from studio.ui.compare import CompareTab
from studio.ui.form import Updates, Values
from studio.ui.forward import ForwardTab
from studio.ui.gradio_startup import launch_builds_the_app
from studio.ui.hubshare import HubPanel, is_comparison
from studio.ui.locality import LocalityTab
from studio.ui.neighbours import NeighboursTab
from studio.ui.sample import SampleTab
from studio.ui.session import Session, outputs_root

CSS_FILE = resource_dir("assets") / "studio.css"
PLAYER_JS = CSS_FILE.with_name("player.js")  # the run player and classroom mode
TITLE = "Analytic Diffusion Studio"
NO_PRESET = "(your own settings)"
CONCURRENCY = "4"  # events of one listener running at once, unless GRADIO_DEFAULT_CONCURRENCY_LIMIT says otherwise


def analytics_enabled() -> bool:
    """Gradio's usage analytics stay off unless GRADIO_ANALYTICS_ENABLED turns them on."""
    return os.environ.get("GRADIO_ANALYTICS_ENABLED", "False").strip().lower() in ("1", "true", "yes")


def build_app(presets_folder: str | Path | None = None) -> gr.Blocks:
    """The page, wired (no torch: the engine is loaded when `serve` starts the server)."""
    catalog = current(presets_folder)
    by_title = {p.title: p for p in catalog.presets}
    os.environ.setdefault("GRADIO_DEFAULT_CONCURRENCY_LIMIT", CONCURRENCY)  # read as the page's queue is made
    with launch_builds_the_app(), gr.Blocks(title=TITLE, fill_width=True,
                                            analytics_enabled=analytics_enabled()) as demo:
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
        if catalog.problems:
            gr.Markdown("⚠️ Presets not loaded: " + "; ".join(catalog.problems), elem_classes=["studio-small"])
        with gr.Tabs(elem_id="studio-tabs") as tabs:
            with gr.Tab("Sample", id="sample"):
                sample = SampleTab(session, catalog)
            with gr.Tab("Neighbours", id="neighbours", elem_id="tab-neighbours"):
                neighbours = NeighboursTab(session)
            with gr.Tab("Locality", id="locality", elem_id="tab-locality"):
                locality = LocalityTab(session)
            with gr.Tab("Compare", id="compare"):
                compare = CompareTab(session, sample.form, catalog)
            with gr.Tab("Forward process", id="forward", elem_id="tab-forward") as forward_tab:
                forward = ForwardTab(sample.form)
        hub = HubPanel({"share": "Share the last run", "share_compare": "Share the last comparison"})

        sample.wire(demo)
        wire_presets(by_title, preset, preset_text, tabs, session, sample, compare)
        neighbours.wire(sample.shown)
        locality.wire(sample.shown)
        compare.wire()
        forward.wire(forward_tab)
        wire_hub(hub, session, tabs, sample, compare)
        show_after_first_screen(demo, [sample.yaml, *(side.params for side in compare.sides)])
    return demo


def show_after_first_screen(demo: gr.Blocks, late: list[gr.components.Component]) -> None:
    """The `late` components, built hidden, are shown once the first screen is up: the browser loads a component's
    code for every visible one in the page, wherever it sits, and the YAML boxes' editor (CodeMirror, 0.4 MB of
    script) would be parsed and run before the Run button shows, though they sit in a closed accordion and on
    the Compare tab."""
    demo.load(lambda: {component: gr.update(visible=True) for component in late}, None, late, queue=False,
              show_progress="hidden", api_visibility="private")


def wire_hub(hub: HubPanel, session: gr.State, tabs: gr.Tabs, sample: SampleTab, compare: CompareTab) -> None:
    """Share the last run or comparison; a pulled one is shown on its tab."""
    hub.wire_share("share", lambda s: s.sample.folder if s.sample else None, session)
    hub.wire_share("share_compare", lambda s: s.compare_folder, session)

    def show(state: Session, folder: Path, repo: str) -> Updates:
        if is_comparison(folder):
            return {**compare.show_pulled(state, folder, repo), tabs: gr.Tabs(selected="compare")}
        return {**sample.show_pulled(state, folder, repo), tabs: gr.Tabs(selected="sample")}

    hub.wire_pull(session, show, [*sample.result_outputs, *compare.result_outputs, tabs])


def wire_presets(by_title: dict[str, PresetEntry], preset: gr.Dropdown, preset_text: gr.Markdown, tabs: gr.Tabs,
                 session: gr.State, sample: SampleTab, compare: CompareTab) -> None:
    """One click per lesson: choosing a preset fills every control it sets, runs it (both sides for a comparison,
    or its study) and opens the tab where its point is seen."""
    form, study = sample.form, compare.study

    def apply_preset(title: str) -> Updates:
        chosen = by_title.get(title)
        if chosen is None:
            return {preset_text: ""}
        shown = study.fill(chosen.study) if chosen.study else {}
        first = "compare" if chosen.opens == "compare" else "sample"  # the run streams there
        return {**form.fill(chosen.config), **compare.fill(*chosen.pair), **shown, tabs: gr.Tabs(selected=first),
                preset_text: chosen.description}

    def chosen_for(values: Values, opens_compare: bool) -> PresetEntry | None:
        chosen = by_title.get(values[preset])
        return chosen if chosen is not None and (chosen.opens == "compare") == opens_compare else None

    def run_sample(values: Values) -> Iterator[Updates]:
        chosen = chosen_for(values, opens_compare=False)
        if chosen:
            yield from sample.run(values)
            yield {tabs: gr.Tabs(selected=chosen.opens)}  # the run went through: where its point is seen

    def run_compare(values: Values) -> Iterator[Updates]:
        chosen = chosen_for(values, opens_compare=True)
        if chosen and not chosen.study:
            yield from compare.run(values)

    def run_study(values: Values) -> Updates:
        chosen = by_title.get(values[preset])
        return study.run(values) if chosen is not None and chosen.study else {}

    filled = preset.change(apply_preset, preset, [*form.outputs, *compare.fill_outputs, *study.fill_outputs, tabs,
                                                  preset_text], api_name="preset", show_progress="hidden")
    filled.then(run_sample, {preset, session, *form.inputs}, [*sample.result_outputs, tabs],
                api_visibility="private", show_progress="hidden", concurrency_limit=None)
    filled.then(run_compare, {preset, *compare.inputs}, compare.result_outputs, api_visibility="private",
                show_progress="hidden", concurrency_limit=None)
    filled.then(run_study, {preset, *study.inputs}, study.outputs, api_visibility="private",
                concurrency_limit=1, concurrency_id="study")


def studio_css() -> str | None:
    """The studio's stylesheet for the page config, without its comments (Gradio scopes it to the page)."""
    if not CSS_FILE.is_file():
        return None
    return re.sub(r"\s+", " ", re.sub(r"/\*.*?\*/", "", CSS_FILE.read_text(), flags=re.S)).strip()


def player_script() -> tuple[str, list[str]]:
    """The page head's link to the player script, and that file: served as a file that browsers cache (the link
    names its content's hash), not as text inside the page config."""
    if not PLAYER_JS.is_file():
        return "", []
    version = hashlib.sha256(PLAYER_JS.read_bytes()).hexdigest()[:12]
    return f'<script src="gradio_api/file={quote(str(PLAYER_JS))}?v={version}"></script>', [str(PLAYER_JS)]


def launch_options() -> dict[str, Any]:
    """Theme, stylesheet, player script and file access for `demo.launch`."""
    from studio.serving.launch import launch_limits

    # the visitor's own fonts: the theme's web fonts are files the first screen waits for (browser phase of start-up,
    # 6 interleaved runs each: median 1.16 s against 1.42 s with them)
    theme = gr.themes.Soft(primary_hue="indigo", secondary_hue="orange", neutral_hue="slate",
                           font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    root = outputs_root()
    root.mkdir(parents=True, exist_ok=True)
    head, script = player_script()
    return dict(theme=theme, css=studio_css(), head=head, allowed_paths=[str(root), *script],
                footer_links=["api", "gradio", "settings"], run_history=False, ssr_mode=False, **launch_limits())


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          quiet: bool = False, warm_up: bool = False, on_loaded: Callable[[], None] | None = None) -> gr.Blocks:
    """Serve the page in the background (`demo.local_url` says where, `demo.close()` stops it), then load the
    engine in the background; `warm_up` also prepares the default run."""
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=quiet,
                **launch_options())
    loader.start(warm_up, on_loaded)
    return demo


def start(host: str = "127.0.0.1", port: int | None = None, share: bool = False, quiet: bool = False,
          presets_folder: str | Path | None = None, warm_up: bool = False) -> gr.Blocks:
    """Build the page and serve it (`serve`)."""
    return serve(build_app(presets_folder), host, port, share, quiet, warm_up)
