"""The study panel of the Compare tab: several denoisers against a reference (the trained UNet by default) from
the same noise, repeated with fresh noise; the table and the r²-against-t chart are read back from the saved study
folder, so the page shows exactly what is on disk (studio.studies.study)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from studio.limits import Limits
from studio.presets import MAX_STUDY_REPEATS as MAX_REPEATS
from studio.ui import loader
from studio.ui.catalog import Catalog
from studio.ui.form import RunForm, Updates, Values
from studio.ui.session import run_folder

DEFAULT = ("optimal", "wiener", "pca_locality", "ls")
EXPLAIN = (
    "Which training-free denoiser behaves like a trained network? Every chosen denoiser starts from the same "
    "noise as the reference, with the **Sample** tab's dataset, sampler, steps, samples and seed. The table "
    "gives r² against the reference (median over samples; pooled; **centred**, with each image's own mean "
    "removed so that brightness alone cannot score), MSE, the share of samples that copy a training image, and "
    "ms/step; with several repeats (fresh noise each), mean ± spread. The chart shows r² of x̂0 at every noise level."
)


def curves_figure(curves: dict[str, dict[str, list[float]]], title: str) -> Any:
    """Plotly lines: r² against t per denoiser, noisy levels on the left."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, curve in curves.items():
        fig.add_trace(go.Scatter(x=curve["t"], y=curve["r2"], mode="lines+markers", name=name))
    fig.update_layout(title=title, height=380, template="plotly_white", margin=dict(l=48, r=16, t=48, b=90),
                      xaxis=dict(title="t", autorange="reversed"), yaxis=dict(title="r² vs reference", range=[-1, 1.02]),
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return fig


class StudyPanel:
    """Controls, table and chart of one study, and the tab's `download`; reads the run settings from the Sample
    tab's form."""

    def __init__(self, form: RunForm, catalog: Catalog, download: gr.DownloadButton) -> None:
        self.form = form
        self.download = download
        with gr.Accordion("Which denoiser behaves like a trained network?", open=False,
                          elem_id="study") as self.accordion:
            gr.Markdown(EXPLAIN, elem_classes=["studio-small"])
            with gr.Row():
                self.denoisers = gr.CheckboxGroup(list(catalog.study_denoisers), value=list(DEFAULT), label="denoisers",
                                                  elem_id="study-denoisers")
                self.reference = gr.Dropdown(list(catalog.denoisers), value="unet", label="reference",
                                             elem_id="study-reference")
                self.repeats = gr.Slider(1, MAX_REPEATS, value=1, step=1, label="repeats (fresh noise each)",
                                         elem_id="study-repeats")
            self.run_btn = gr.Button("▶  Run study", variant="primary", elem_id="study-run")
            self.table = gr.Markdown(elem_id="study-table", elem_classes=["studio-summary"])  # a status line, the table
            self.chart = gr.Plot(show_label=False, elem_id="study-chart")

    @property
    def inputs(self) -> set[gr.components.Component]:
        return {self.denoisers, self.reference, self.repeats, *self.form.inputs}

    @property
    def outputs(self) -> list:
        return [self.table, self.chart, self.download]

    @property
    def fill_outputs(self) -> list:
        return [self.accordion, self.denoisers, self.reference, self.repeats]

    def fill(self, study: dict[str, Any]) -> Updates:
        """A preset's study shown in the panel (opened): its denoisers, reference and repeats."""
        return {self.accordion: gr.Accordion(open=True), self.denoisers: study["denoisers"],
                self.reference: study["reference"], self.repeats: study["repeats"]}

    def run(self, values: Values) -> Updates:
        """Run, save, and show what was saved; one clear message for bad input."""
        loader.load()
        from studio.runs import stamped_id
        from studio.studies.study import run_study, save_study, table_markdown
        from studio.ui import results

        denoisers, reference = values[self.denoisers], values[self.reference]
        try:
            cfg = self.form.read(values)
            repeats = int(values[self.repeats])
            if not 1 <= repeats <= MAX_REPEATS:
                raise ValueError(f"repeats: {repeats} is out of range; choose 1 to {MAX_REPEATS}")
            if not denoisers:
                raise ValueError("denoisers: choose at least one")
            limits = Limits.from_env()
            limits.check_run(cfg.n, cfg.sampler.steps)
            limits.check("max_steps", cfg.sampler.steps * repeats * (len(denoisers) + 1),
                         "study: steps × repeats × (denoisers + reference)")
            study = run_study(cfg, list(denoisers), reference, None, repeats)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        folder = save_study(study, run_folder(stamped_id(f"study-{cfg.dataset.name}")))
        rows = json.loads((Path(folder) / "table.json").read_text())
        curves = json.loads((Path(folder) / "r2_curves.json").read_text())["r2_traj_median"]
        title = f"r² of x̂0 along the trajectory vs {reference} ({cfg.dataset.name}, {repeats} repeat(s))"
        return {self.table: f"done · {len(denoisers)} denoiser(s) × {repeats} repeat(s) against {reference}\n\n"
                            + table_markdown(rows),
                self.chart: curves_figure(curves, title),
                self.download: gr.update(value=results.zipped(Path(folder)), visible=True,
                                         label="⬇ Download study (.zip)")}

    def wire(self) -> None:
        self.run_btn.click(self.run, self.inputs, self.outputs,
                           api_visibility="private", concurrency_limit=1, concurrency_id="study",
                           trigger_mode="once")
