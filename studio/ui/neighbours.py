"""Neighbours tab: the k nearest training items of every sample (or of x̂0 at any step), their distances and
the memorisation score (nearest / second-nearest distance; below 1/3 = a copy)."""

from __future__ import annotations

import html
from typing import Any, Sequence

import gradio as gr

from studio.ui import charts, explain, loader
from studio.ui.form import Updates
from studio.ui.session import Session

HEADERS = ["sample", "nearest #", "class", "distance", "2nd distance", "score (d1/d2)", "memorised"]
EMPTY = "Run something on the Sample tab: its samples' nearest training images appear here."


def table_html(rows: Sequence[Sequence[Any]]) -> str:
    """The rows under HEADERS as a table; a memorised sample's row is marked (red, like its frame; new: green)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join(
        f'<tr class="studio-{"copy" if row[-1] == "yes" else "new"}">'
        + "".join(f"<td>{html.escape('' if cell is None else str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows)
    return f'<table class="studio-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def neighbour_table(session: Session, step: int, k: int) -> tuple[str, Any, list[list], Any]:
    """(summary, picture, table rows, 2-D plot or None) for x̂0 at 1-based `step` of the session's run."""
    from studio.analysis.neighbours import MEMORISED_RATIO, nearest
    from studio.ui import pictures

    result = session.sample
    traj, dataset = result.run.trajectory, result.dataset
    K = len(traj.timesteps)
    step = min(max(int(step), 1), K)
    queries = traj.x0[step - 1]
    nb = nearest(dataset, queries, k=max(int(k), 2))
    shown = nb.indices[:, :int(k)]
    names = dataset.class_names
    rows = []
    for i in range(len(queries)):
        idx = int(nb.indices[i, 0])
        label = names[int(dataset.labels[idx])] if names is not None and dataset.labels is not None else ""
        d = nb.distances[i]
        rows.append([i, idx, label, _sig(d[0]), _sig(d[1]) if len(d) > 1 else None, _sig(nb.ratio[i]),
                     "yes" if bool(nb.memorised[i]) else "no"])
    count = int(nb.memorised.sum())
    which = "final samples" if step == K else f"x̂0 at step {step}/{K} (t = {int(traj.timesteps[step - 1])})"
    text = (f"**{count} of {len(queries)}** {which} are flagged memorised (score < {MEMORISED_RATIO:.3g}); "
            f"mean score {float(nb.ratio.mean()):.3f}. Frame: red = memorised, green = new.")
    if result.run.is_image:
        return text, pictures.neighbour_rows(queries, dataset.x, shown, nb.memorised), rows, None
    return text, None, rows, charts.neighbour_lines(queries, dataset.x, shown)


def _sig(value) -> float:
    """Four significant digits, so tiny distances of near-copies stay visible."""
    return float(f"{float(value):.4g}")


class NeighboursTab:
    def __init__(self, session: gr.State) -> None:
        self.session = session
        gr.Markdown(explain.NEIGHBOURS, latex_delimiters=explain.LATEX, elem_classes=["studio-explain"])
        with gr.Row():
            self.step = gr.Slider(1, 2, value=2, step=1, label="x̂0 at step (the last step = final samples)",
                                  elem_id="nb-step", scale=3)
            self.k = gr.Slider(1, 10, value=5, step=1, label="neighbours k", elem_id="nb-k", scale=1)
        self.summary = gr.Markdown(EMPTY, elem_id="nb-summary", elem_classes=["studio-summary"])
        with gr.Row(equal_height=False):
            self.picture = gr.Image(label="each sample (framed) and its nearest training images", format="png",
                                    type="pil", interactive=False, elem_id="nb-picture",
                                    elem_classes=["studio-pixels"])
            self.plot = gr.Plot(visible=False, show_label=False, elem_id="nb-plot")
            self.table = gr.HTML(table_html([]), elem_id="nb-table", js_on_load=None)

    @property
    def outputs(self) -> list:
        return [self.summary, self.picture, self.plot, self.table]

    def update(self, session: Session, step: float, k: float) -> Updates:
        if session.sample is None:
            return {self.summary: EMPTY, self.picture: None, self.plot: gr.update(visible=False),
                    self.table: table_html([])}
        loader.load()
        text, picture, rows, plot = neighbour_table(session, int(step), int(k))
        return {self.summary: text, self.picture: gr.update(value=picture, visible=picture is not None),
                self.plot: gr.update(value=plot, visible=plot is not None), self.table: table_html(rows)}

    def after_run(self, session: Session, k: float) -> Updates:
        """Jump to the final step of the new run."""
        if session.sample is None:
            return self.update(session, 1, k)
        K = len(session.sample.run.trajectory.timesteps)
        return {self.step: gr.update(minimum=1, maximum=max(K, 2), value=K, interactive=K > 1),
                **self.update(session, K, k)}

    def wire(self, shown: gr.State) -> None:
        """The sliders redraw; a new result (`shown` changes) jumps to its final step."""
        gr.on([self.step.input, self.k.input], self.update, [self.session, self.step, self.k], self.outputs,
              api_visibility="private", trigger_mode="always_last", show_progress="minimal")
        shown.change(self.after_run, [self.session, self.k], [self.step, *self.outputs], api_visibility="private",
                     show_progress="hidden")
