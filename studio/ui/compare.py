"""Compare tab: two configurations from the same starting noise, side by side, with one step slider for both and
a per-step chart of the distance between the two trajectories. Default pair: DDPM vs DDIM, same denoiser."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import gradio as gr

from studio.serving import zerogpu
from studio.ui import charts, explain, loader, messages
from studio.ui.catalog import Catalog
from studio.ui.form import RunForm, Updates, Values
from studio.ui.session import Result, Session, progress_html, run_folder
from studio.ui.side import SidePanel
from studio.ui.study import StudyPanel

if TYPE_CHECKING:
    import torch

    from studio.config import RunConfig

SIDES = ("a", "b")
FRAME_S = 0.15
EMPTY = "Press Run both: the two runs stream here side by side."


def aligned(K: int, K_other: int) -> list[int]:
    """For each step of the longer run, the matching (0-based) step of a run with K steps."""
    total = max(K, K_other)
    if total == 1:
        return [0]
    return [round(k * (K - 1) / (total - 1)) for k in range(total)]


def trajectory_distances(a, b) -> dict[str, list[float]]:
    """Per aligned step, the RMS distance between the two runs' x_t and between their x̂0 (mean over samples)."""
    ta, tb = a.trajectory, b.trajectory
    ka, kb = aligned(len(ta.timesteps), len(tb.timesteps)), aligned(len(tb.timesteps), len(ta.timesteps))

    def rms(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x - y).reshape(x.shape[0], -1).pow(2).mean(1).sqrt().mean())

    return {"x_t": [rms(ta.x_t[i], tb.x_t[j]) for i, j in zip(ka, kb)],
            "x̂0": [rms(ta.x0[i], tb.x0[j]) for i, j in zip(ka, kb)]}


def side_config(base: RunConfig, sections: dict[str, Any]) -> RunConfig:
    """`base` (data, schedule, samples, seed, device) with one side's denoiser and sampler."""
    from studio.config import RunConfig

    data = base.to_dict()
    data["denoiser"] = sections["denoiser"]
    data["sampler"] = {**sections["sampler"], "spacing": base.sampler.spacing, "clip_x0": base.sampler.clip_x0}
    return RunConfig.from_dict(data)


def compare_table(pair: Sequence[Result]) -> str:
    rows = [("denoiser", lambda r: r.run.config.denoiser.name), ("sampler", lambda r: _sampler(r.run.config)),
            ("steps", lambda r: str(len(r.run.trajectory.timesteps))),
            ("ms / step", lambda r: f"{r.run.metrics['timings']['ms_per_step']:.1f}"),
            ("final → nearest training item (RMS)", lambda r: f"{r.run.metrics['summary']['final_nn_rms']:.3f}"),
            ("memorised", lambda r: _rate(r.run.metrics["summary"].get("memorisation_rate")))]
    a, b = pair
    lines = ["| | A | B |", "|---|---|---|"] + [f"| {name} | {get(a)} | {get(b)} |" for name, get in rows]
    final = float((a.run.samples - b.run.samples).reshape(a.run.samples.shape[0], -1).pow(2).mean(1).sqrt().mean())
    seed = a.run.config.seed
    return "\n".join(lines) + f"\n\nSame seed ({seed}), same starting noise · final samples differ by RMS {final:.3f}"


def _sampler(cfg: RunConfig) -> str:
    params = ", ".join(f"{k}={v}" for k, v in cfg.sampler.params.items())
    return f"{cfg.sampler.name} ({params})" if params else cfg.sampler.name


def _rate(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.0f}%"


class CompareTab:
    def __init__(self, session: gr.State, form: RunForm, catalog: Catalog) -> None:
        self.session = session
        self.form = form
        pair = catalog.default_pair
        gr.Markdown(explain.COMPARE, latex_delimiters=explain.LATEX, elem_classes=["studio-explain"])
        self.sides: list[SidePanel] = []
        with gr.Row(equal_height=False):
            for name, side_cfg in zip(SIDES, pair):
                with gr.Column(min_width=300, elem_classes=["studio-controls"]):
                    gr.Markdown(f"### Side {name.upper()}", elem_classes=["studio-side"])
                    self.sides.append(SidePanel(catalog, side_cfg, name))
        form.panels.extend(self.sides)  # the sides follow the Sample tab's dataset
        with gr.Row():
            self.run_btn = gr.Button("▶  Run both", variant="primary", elem_id="cmp-run", scale=2)
            self.cancel_btn = gr.Button("■  Cancel", variant="stop", elem_id="cmp-cancel", scale=1)
        self.progress = gr.HTML(progress_html("idle", text=EMPTY), elem_id="cmp-progress")
        self.message = messages.area("cmp-message")
        with gr.Row(equal_height=False):  # each side's x_t | x̂0: live while the runs stream, then at the chosen step
            self.pairs = [gr.Image(label=f"{name.upper()}: x_t | x̂0", format="png", type="pil", interactive=False,
                                   elem_id=f"cmp-{name}-pairs", elem_classes=["studio-pixels"], min_width=300,
                                   buttons=["download", "fullscreen"]) for name in SIDES]
        with gr.Column(visible=False, elem_id="cmp-results") as self.results:
            self.stale = gr.HTML("", elem_id="cmp-stale-banner", js_on_load=None)
            self.step = gr.Slider(1, 2, value=2, step=1, label="step (both sides)", elem_id="cmp-step")
            self.chart = gr.Plot(label="distance between the two trajectories", show_label=False, elem_id="cmp-chart")
            self.table = gr.Markdown(elem_id="cmp-table", elem_classes=["studio-summary"])
        # one download below the comparison and the study: whichever finished last
        self.download = gr.DownloadButton("⬇ Download (.zip)", elem_id="cmp-download", size="sm", visible=False,
                                          render=False)
        self.study = StudyPanel(form, catalog, self.download)
        self.download.render()

    @property
    def inputs(self) -> set[gr.components.Component]:
        return {self.session, *self.form.inputs, *(c for side in self.sides for c in side.inputs)}

    @property
    def fill_outputs(self) -> list[gr.blocks.Block]:
        return [c for side in self.sides for c in side.outputs]

    @property
    def result_outputs(self) -> list:
        return [self.progress, self.results, self.step, *self.pairs, self.chart, self.table, self.download,
                self.message, self.stale]

    def fill(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> Updates:
        """Updates that show the two sides of a comparison (RunConfig YAML shape)."""
        return {**self.sides[0].fill(a), **self.sides[1].fill(b)}

    def configs(self, values: Values) -> tuple[RunConfig, RunConfig]:
        """The two runs: the Sample tab's form with each side's denoiser and sampler."""
        base = self.form.read(values)
        pair = []
        for side in self.sides:
            sections = side.read(values)
            try:
                pair.append(side_config(base, sections))
            except ValueError as err:
                raise ValueError(f"side {side.name.upper()}: {err}") from None
        return pair[0], pair[1]

    def show(self, session: Session, text: str) -> Updates:
        from studio.ui import results

        pair = session.compare
        ks = [len(r.run.trajectory.timesteps) for r in pair]
        total = max(ks)
        out = {
            self.progress: progress_html("done", total, total, text),
            self.message: "",
            self.stale: "",
            self.results: gr.update(visible=True),
            self.step: gr.update(maximum=max(total, 2), value=total, interactive=total > 1),
            self.chart: charts.distances(trajectory_distances(pair[0].run, pair[1].run), range(1, total + 1),
                                         "RMS distance between A and B at every step"),
            self.table: compare_table(pair),
            self.download: gr.update(value=results.zipped(session.compare_folder), visible=True,
                                     label="⬇ Download comparison (.zip)"),
        }
        for shown, result in zip(self.pairs, pair):
            out[shown] = results.step_pairs(result, len(result.run.trajectory.timesteps))
        return out

    def show_step(self, session: Session, k: float) -> Updates:
        """Both sides at the (aligned) step k."""
        pair = session.compare
        if len(pair) != 2:
            return {}
        from studio.ui import results

        ks = [len(r.run.trajectory.timesteps) for r in pair]
        return {shown: results.step_pairs(r, aligned(K, max(ks))[min(int(k), max(ks)) - 1] + 1)
                for shown, r, K in zip(self.pairs, pair, ks)}

    def run(self, values: Values) -> Iterator[Updates]:
        """Both runs as one job of this session, streamed side by side."""
        yield from loader.load_visibly(self.progress)
        from studio.runs import stamped_id
        from studio.ui import pictures

        session = values[self.session]
        try:
            a, b = self.configs(values)
        except ValueError as err:
            yield from self.refuse(str(err))
            return
        folder = run_folder(stamped_id(f"compare-{a.dataset.name}-{a.sampler.name}-vs-{b.sampler.name}"))
        done: dict[int, Result] = {}
        backgrounds: dict[int, Any] = {}
        progress = {0: (0, a.sampler.steps), 1: (0, b.sampler.steps)}
        last = 0.0
        stale = {self.stale: '<div class="studio-stale-banner" role="status"><b>Previous comparison</b> — '
                             'shown until the new one finishes.</div>'} if session.compare else {}
        yield {self.progress: progress_html("preparing", 0, 1, "starting…"), self.message: "", **stale}
        for event in zerogpu.stream([a, b], save_to=lambda part, run: folder / SIDES[part], on_job=session.start):
            if event.kind in ("queued", "preparing"):
                yield {self.progress: progress_html(event.kind, 0, 1, event.message)}
            elif event.kind == "ready":
                backgrounds[event.part] = None if event.dataset.kind == "image" else event.dataset.x
            elif event.kind == "step":
                progress[event.part] = (event.k, event.K)
                now = time.perf_counter()
                final = all(k == K for k, K in progress.values())
                if final or now - last >= FRAME_S:
                    last = now
                    k_sum, K_sum = (sum(v[i] for v in progress.values()) for i in (0, 1))
                    yield {self.progress: progress_html("running", k_sum, K_sum, " · ".join(
                               f"{SIDES[p].upper()}: step {k}/{K}" for p, (k, K) in progress.items())),
                           self.pairs[event.part]: pictures.pairs(event.step.x_t, event.step.x0,
                                                                  backgrounds.get(event.part))}
            elif event.kind == "result":
                done[event.part] = Result(event.run, event.dataset, event.folder)
            elif event.kind == "done":
                session.compare = [done[0], done[1]]
                session.compare_folder = folder
                yield self.show(session, f"done · both runs saved in {folder.name}")
            elif event.kind == "cancelled":
                K = max(a.sampler.steps, b.sampler.steps, 1)
                yield {self.progress: progress_html("cancelled", event.k, K, f"cancelled at step {event.k} of {K}"
                                                    + (" · below: the previous comparison" if session.compare else ""))}
            elif event.kind == "error":
                yield from self.refuse(event.message)

    def refuse(self, text: str) -> Iterator[Updates]:
        headline, details = messages.short(text)
        yield {self.progress: progress_html("error", 0, 0, headline), self.message: messages.show(headline, details)}
        raise messages.refuse(text)

    def show_pulled(self, session: Session, folder: Path, repo: str) -> Updates:
        """A comparison pulled from the Hub (two runs in part folders), shown as this session's comparison."""
        from studio.data.registry import load_dataset
        from studio.runs import load_run

        pair = []
        for part in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.yaml").is_file()):
            run = load_run(part)
            pair.append(Result(run, load_dataset(run.config.dataset.name, **run.config.dataset.options), part))
        session.compare, session.compare_folder = pair, folder
        return self.show(session, f"pulled {folder.name} from {repo.strip()}")

    def wire(self) -> None:
        for side in self.sides:
            side.wire()
        self.study.wire()
        self.run_btn.click(self.run, self.inputs, self.result_outputs, api_name="compare",
                           api_visibility="undocumented", concurrency_limit=None, trigger_mode="once",
                           show_progress="hidden")
        self.cancel_btn.click(_stop, self.session, None, queue=False, api_visibility="private")
        self.step.input(self.show_step, [self.session, self.step], self.pairs, trigger_mode="always_last",
                        show_progress="hidden", api_visibility="private")


def _stop(session: Session) -> None:
    session.cancel()
