"""Sample tab: the run form, Run/Cancel, the live x_t | x̂0 stream with a step k/K bar, and the finished run
(trajectory viewer, final grid, animation, per-step charts, 2-D paths, download)."""

from __future__ import annotations

import html
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import gradio as gr

from studio.serving import zerogpu
from studio.ui import charts, explain, loader, messages, player
from studio.ui.catalog import Catalog
from studio.ui.form import RunForm, Updates, Values
from studio.ui.session import Result, Session, progress_html, run_folder

if TYPE_CHECKING:
    from studio.config import RunConfig

FRAME_S = 0.12  # at most about eight live frames a second reach the page; the last step always does
IDLE = "Pick a preset or set the controls, then press Run."


def _image(label: str, elem_id: str, **kw) -> gr.Image:
    return gr.Image(label=label, format="png", type="pil", interactive=False, elem_id=elem_id,
                    elem_classes=["studio-pixels"], buttons=["download", "fullscreen"], **kw)


class SampleTab:
    def __init__(self, session: gr.State, catalog: Catalog) -> None:
        self.session = session
        with gr.Row(equal_height=False, elem_classes=["studio-main"]):
            with gr.Column(scale=4, min_width=340, elem_classes=["studio-controls"]):
                self.form = RunForm(catalog)
                with gr.Accordion("Export / import config (YAML)", open=False, elem_id="config-accordion"):
                    with gr.Row():
                        self.export_btn = gr.Button("Export config", size="sm", elem_id="export-config")
                        self.import_btn = gr.Button("Load into the controls", size="sm", elem_id="import-config")
                        self.yaml_btn = gr.Button("Run this YAML", size="sm", elem_id="run-yaml")
                    self.yaml = gr.Code(language="yaml", interactive=True, lines=12, elem_id="config-yaml",
                                        label="config.yaml · python -m studio sample --config config.yaml --out DIR",
                                        visible=False)  # shown after the first screen (app.show_after_first_screen)
            with gr.Column(scale=7, min_width=420):
                with gr.Row():
                    self.run_btn = gr.Button("▶  Run", variant="primary", elem_id="run", scale=3)
                    self.cancel_btn = gr.Button("■  Cancel", variant="stop", elem_id="cancel", scale=1)
                self.progress = gr.HTML(progress_html("idle", text=IDLE), elem_id="progress")
                self.message = messages.area("sample-message")
                gr.HTML(player.SHELL, elem_id="player-box", js_on_load=None)
                self.feed = gr.HTML(player.EMPTY_FEED, elem_id="player-feed", js_on_load=None)
                with gr.Accordion("What am I looking at?", open=True, elem_id="intro") as self.intro:
                    gr.Markdown(explain.INTRO, latex_delimiters=explain.LATEX, elem_classes=["studio-explain"])
                with gr.Column(visible=False, elem_id="results") as self.results:
                    self.stale = gr.HTML("", elem_id="stale-banner", js_on_load=None)
                    self.summary = gr.Markdown(elem_id="run-summary", elem_classes=["studio-summary"])
                    with gr.Row(equal_height=False):
                        self.final = _image("Final samples", "final-grid")
                        self.anim = gr.Image(label="Animation (x_t | x̂0 over the steps)", interactive=False,
                                             elem_id="animation", elem_classes=["studio-pixels"])
                    self.step = gr.Slider(1, 2, value=2, step=1, label="Trajectory viewer: step",
                                          elem_id="traj-step")
                    self.pairs = _image("x_t | x̂0 for every sample at this step", "traj-pairs")
                    self.charts = gr.Plot(label="Per-step statistics", show_label=False, elem_id="step-charts")
                    self.paths = gr.Plot(label="Sample paths (2-D)", show_label=False, visible=False, elem_id="paths")
                    self.download = gr.DownloadButton("⬇ Download run (.zip)", elem_id="download", size="sm")
        self.shown = gr.State("")  # changes whenever a new result is shown: the other tabs follow it

    # ---- outputs -------------------------------------------------------------------------------------------
    @property
    def result_outputs(self) -> list:
        return [self.progress, self.results, self.summary, self.final, self.anim, self.step, self.pairs,
                self.charts, self.paths, self.download, self.feed, self.message, self.stale, self.intro, self.shown]

    def show_result(self, result: Result, text: str, feed: str | None = None) -> Updates:
        from studio.ui import results

        run = result.run
        K = len(run.trajectory.timesteps)
        bg = results.background(result)
        traj = run.trajectory
        return {
            self.progress: progress_html("done", K, K, text),
            self.message: "",
            self.stale: "",
            self.results: gr.update(visible=True),
            self.summary: results.summary(result),
            self.final: results.final_picture(result),
            self.anim: results.animation(result),
            self.step: gr.update(minimum=1, maximum=max(K, 2), value=K, interactive=K > 1),
            self.pairs: results.step_pairs(result, K),
            self.charts: charts.per_step(run.metrics.get("per_step", [])),
            self.paths: (gr.update(value=charts.paths(traj.x_t, traj.x0, bg), visible=True) if bg is not None
                         else gr.update(visible=False)),
            self.download: results.zipped(result.folder),
            self.feed: feed if feed is not None else player.of_trajectory(traj, bg),
            self.intro: gr.update(open=False),  # make room for the results; one click brings it back
            self.shown: uuid.uuid4().hex,
        }

    # ---- handlers ----------------------------------------------------------------------------------------------
    def previous(self, session: Session, note: str) -> Updates:
        """A banner over the previous run's results (which it greys out) while a new run streams or after it
        stopped; the results themselves stay as they were."""
        if session.sample is None:
            return {}
        return {self.stale: f'<div class="studio-stale-banner" role="status"><b>Previous run</b> '
                            f'({html.escape(session.sample.run.run_id)}) — {html.escape(note)}</div>'}

    def stream(self, session: Session, cfg: RunConfig) -> Iterator[Updates]:
        """Run `cfg` as this session's job and stream it to the page: every step goes to the player's feed."""
        K = cfg.sampler.steps
        yield {self.progress: progress_html("preparing", 0, K, "starting…"), self.message: "",
               **self.previous(session, "shown until the new run finishes.")}
        bg = None
        feed = player.Feed(K)
        last = 0.0
        for event in zerogpu.stream([cfg], save_to=lambda part, run: run_folder(run.run_id), on_job=session.start):
            if event.kind in ("queued", "preparing"):
                yield {self.progress: progress_html(event.kind, 0, K, event.message)}
            elif event.kind == "ready":
                bg = None if event.dataset.kind == "image" else event.dataset.x
            elif event.kind == "step":
                step = event.step
                feed.add(event.k, step.t, step.alpha_bar, step.x_t, step.x0, bg)
                now = time.perf_counter()
                if event.k == event.K or now - last >= FRAME_S:
                    last = now
                    yield {
                        self.progress: progress_html(
                            "running", event.k, event.K,
                            f"computing step {event.k}/{event.K} · t = {step.t} · ā = {step.alpha_bar:.4f} · "
                            f"{1000 * step.seconds:.1f} ms/step"),
                        self.feed: feed.html(),
                    }
            elif event.kind == "result":
                session.sample = Result(event.run, event.dataset, event.folder)
                feed.complete(event.run.trajectory, bg)
                yield self.show_result(session.sample, f"done · {K}/{K} steps · run {event.run.run_id}",
                                       feed.html())
            elif event.kind == "cancelled":
                text = f"cancelled at step {event.k} of {K}"
                yield {self.progress: progress_html("cancelled", event.k, K, f"{text} (the run was cancelled after "
                                                    f"{event.k} step(s)); the player shows the "
                                                    f"{len(feed.frames)} that reached the page"),
                       self.feed: feed.html(),
                       **self.previous(session, f"the new run was {text}.")}
            elif event.kind == "error":
                yield from self.refuse(event.message, self.previous(session, "the new run failed (see above)."))

    def refuse(self, text: str, also: Updates | None = None) -> Iterator[Updates]:
        """Show a problem in this tab's message area (and the bar), then end the event as failed for API clients."""
        headline, details = messages.short(text)
        yield {self.progress: progress_html("error", 0, 0, text), self.message: messages.show(headline, details),
               **(also or {})}
        raise messages.refuse(text)

    def run(self, values: Values) -> Iterator[Updates]:
        """Run the form's config as this session's job."""
        yield from loader.load_visibly(self.progress)
        try:
            cfg = self.form.read(values)
        except ValueError as err:
            yield from self.refuse(str(err))
            return
        yield from self.stream(values[self.session], cfg)

    def run_yaml(self, session: Session, text: str) -> Iterator[Updates]:
        """The same run from a config YAML (the API endpoint `/run_config`)."""
        yield from loader.load_visibly(self.progress)
        from studio.config import RunConfig

        try:
            cfg = RunConfig.from_yaml(text)
        except ValueError as err:
            yield from self.refuse(str(err))
            return
        yield from self.stream(session, cfg)

    @staticmethod
    def cancel(session: Session) -> Any:
        return gr.skip() if session.cancel() else progress_html("idle", text="Nothing is running.")

    def export(self, values: Values) -> Updates:
        """The form's config as YAML in the config box."""
        try:
            return {self.yaml: self.form.read(values).to_yaml()}
        except ValueError as err:
            raise messages.refuse(str(err)) from None

    def import_yaml(self, text: str) -> Updates:
        """A config YAML shown in the form's controls."""
        loader.load()
        from studio.config import RunConfig

        try:
            return self.form.fill(RunConfig.from_yaml(text).to_dict())
        except ValueError as err:
            raise messages.refuse(str(err)) from None

    def show_step(self, session: Session, k: float) -> Any:
        loader.load()
        from studio.ui import results

        return gr.skip() if session.sample is None else results.step_pairs(session.sample, int(k))

    def show_pulled(self, session: Session, folder: Path, repo: str) -> Updates:
        """A run pulled from the Hub, shown as this session's result."""
        from studio.data.registry import load_dataset
        from studio.runs import load_run

        run = load_run(folder)
        session.sample = Result(run, load_dataset(run.config.dataset.name, **run.config.dataset.options), folder)
        return self.show_result(session.sample, f"pulled run {run.run_id} from {repo.strip()}")

    def wire(self, demo: gr.Blocks) -> None:
        """Connect the handlers (the other tabs follow `shown` for new results)."""
        self.form.wire(demo)
        self.run_btn.click(self.run, {self.session, *self.form.inputs}, self.result_outputs,
                                       api_name="run", api_visibility="undocumented", concurrency_limit=None,
                                       trigger_mode="once", show_progress="hidden")
        self.yaml_btn.click(self.run_yaml, [self.session, self.yaml], self.result_outputs,
                                         api_name="run_config", concurrency_limit=None, trigger_mode="once",
                                         show_progress="hidden")
        self.cancel_btn.click(self.cancel, self.session, self.progress, queue=False, api_name="cancel",
                              show_progress="hidden")
        self.export_btn.click(messages.to_page(self.export, self.message, fail=False), self.form.inputs,
                              [self.yaml, self.message], api_name="export_config", api_visibility="undocumented",
                              show_progress="hidden")
        self.import_btn.click(messages.to_page(self.import_yaml, self.message, fail=False), self.yaml,
                              [*self.form.outputs, self.message], api_visibility="private", show_progress="hidden")
        self.step.input(self.show_step, [self.session, self.step], self.pairs, trigger_mode="always_last",
                        show_progress="hidden", api_visibility="private")

