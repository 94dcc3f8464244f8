"""Compare tab: two configurations from the same starting noise, side by side, with one step slider for both and
a per-step chart of the distance between the two trajectories. Default pair: DDPM vs DDIM, same denoiser."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import gradio as gr
import torch

from studio.serving import zerogpu
from studio.config import RunConfig
from studio.data.registry import get_entry, load_dataset
from studio.presets import compare_pair
from studio.runs import load_run, stamped_id
from studio.ui import charts, explain, hubshare, messages, pictures, results
from studio.ui.form import MethodPanels, RunForm
from studio.ui.hubshare import HubPanel
from studio.ui.session import Result, Session, progress_html, run_folder
from studio.ui.study import StudyPanel

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
    def __init__(self, session: gr.State, form: RunForm, cfg: RunConfig) -> None:
        self.session = session
        self.form = form
        pair = compare_pair(cfg)
        gr.Markdown(explain.COMPARE, latex_delimiters=explain.LATEX, elem_classes=["studio-explain"])
        gr.Markdown("Both sides use the **Sample** tab's dataset, schedule, spacing, number of samples and seed.",
                    elem_classes=["studio-small"])
        self.sides: list[MethodPanels] = []
        with gr.Row(equal_height=False):
            for name, side_cfg in zip(SIDES, pair):
                with gr.Column(min_width=300, elem_classes=["studio-controls"]):
                    gr.Markdown(f"### Side {name.upper()}", elem_classes=["studio-side"])
                    self.sides.append(MethodPanels(side_cfg, f"cmp-{name}", explain_text=False))
        with gr.Row():
            self.run_btn = gr.Button("▶  Run both", variant="primary", elem_id="cmp-run", scale=2)
            self.cancel_btn = gr.Button("■  Cancel", variant="stop", elem_id="cmp-cancel", scale=1)
        self.progress = gr.HTML(progress_html("idle", text=EMPTY), elem_id="cmp-progress")
        self.message = messages.area("cmp-message")
        self.live: list[tuple[gr.Image, gr.Image]] = []
        self.pairs: list[gr.Image] = []
        with gr.Row(equal_height=False):
            for name in SIDES:
                with gr.Column(min_width=300):
                    with gr.Row():
                        self.live.append((self._image(f"{name.upper()}: x_t", f"cmp-{name}-xt"),
                                          self._image(f"{name.upper()}: x̂0", f"cmp-{name}-x0")))
        with gr.Column(visible=False, elem_id="cmp-results") as self.results:
            self.stale = gr.HTML("", elem_id="cmp-stale-banner", js_on_load=None)
            self.step = gr.Slider(1, 2, value=2, step=1, label="step (both sides)", elem_id="cmp-step")
            with gr.Row(equal_height=False):
                for name in SIDES:
                    self.pairs.append(self._image(f"{name.upper()}: x_t | x̂0 at this step", f"cmp-{name}-pairs"))
            self.chart = gr.Plot(label="distance between the two trajectories", show_label=False, elem_id="cmp-chart")
            self.table = gr.Markdown(elem_id="cmp-table", elem_classes=["studio-summary"])
            self.download = gr.DownloadButton("⬇ Download comparison (.zip)", elem_id="cmp-download", size="sm")
        self.hub = HubPanel("compare")
        self.study = StudyPanel(form)

    @staticmethod
    def _image(label: str, elem_id: str) -> gr.Image:
        return gr.Image(label=label, format="png", type="pil", interactive=False, elem_id=elem_id,
                        elem_classes=["studio-pixels"], buttons=["download", "fullscreen"])

    @property
    def inputs(self) -> list:
        return [self.session, *self.form.inputs, *(c for side in self.sides for c in side.inputs)]

    @property
    def fill_outputs(self) -> list:
        return [c for side in self.sides for c in side.outputs]

    @property
    def result_outputs(self) -> list:
        return [self.progress, self.results, self.step, *self.pairs, self.chart, self.table, self.download,
                *(img for pair in self.live for img in pair), self.message, self.stale]

    def fill(self, a: RunConfig, b: RunConfig) -> list:
        return [*self.sides[0].fill(a), *self.sides[1].fill(b)]

    def configs(self, values: Sequence[Any]) -> tuple[RunConfig, RunConfig]:
        nf = len(self.form.inputs)
        base = self.form.read(values[:nf])
        rest = values[nf:]
        na = len(self.sides[0].inputs)
        return (side_config(base, self.sides[0].read(rest[:na])), side_config(base, self.sides[1].read(rest[na:])))

    def show(self, session: Session, text: str) -> dict:
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
            self.download: results.zipped(session.compare_folder),
        }
        for side, result, (xt, x0) in zip(self.pairs, pair, self.live):
            traj = result.run.trajectory
            out[side] = results.step_pairs(result, len(traj.timesteps))
            out[xt] = pictures.view(traj.x_t[-1], results.background(result))
            out[x0] = pictures.view(traj.x0[-1], results.background(result))
        return out

    def show_step(self, session: Session, k: float) -> list:
        pair = session.compare
        if len(pair) != 2:
            return [gr.skip(), gr.skip()]
        ks = [len(r.run.trajectory.timesteps) for r in pair]
        return [results.step_pairs(r, aligned(K, max(ks))[min(int(k), max(ks)) - 1] + 1) for r, K in zip(pair, ks)]

    def run(self, session: Session, *values: Any) -> Iterator[dict]:
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
                    xt, x0 = self.live[event.part]
                    bg = backgrounds.get(event.part)
                    yield {self.progress: progress_html("running", k_sum, K_sum, " · ".join(
                               f"{SIDES[p].upper()}: step {k}/{K}" for p, (k, K) in progress.items())),
                           xt: pictures.view(event.step.x_t, bg), x0: pictures.view(event.step.x0, bg)}
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

    def refuse(self, text: str) -> Iterator[dict]:
        headline, details = messages.short(text)
        yield {self.progress: progress_html("error", 0, 0, headline), self.message: messages.show(headline, details)}
        raise messages.refuse(text)

    def pull(self, session: Session, repo: str, run_id: str, token: str, oauth: gr.OAuthToken | None = None) -> dict:
        try:
            folder = hubshare.pull(repo, run_id, token, hubshare.oauth_value(oauth))
            parts = sorted(p for p in Path(folder).iterdir() if p.is_dir() and (p / "config.yaml").is_file())
            if len(parts) != 2:
                raise ValueError(f"{Path(folder).name} is not a comparison of two runs; pull it on the Sample tab")
            pair = []
            for part in parts:
                run = load_run(part)
                pair.append(Result(run, load_dataset(run.config.dataset.name, **run.config.dataset.options), part))
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        session.compare, session.compare_folder = pair, Path(folder)
        out = self.show(session, f"pulled {Path(folder).name} from {repo.strip()}")
        out[self.hub.status] = f"✅ Pulled `{Path(folder).name}`"
        out[self.hub.token] = ""
        return out

    def wire(self) -> None:
        for side in self.sides:
            side.wire()
        self.study.wire()
        self.form.dataset.dropdown.change(
            lambda name, *dens: [side.kind_changed(_kind(name), d) for side, d in zip(self.sides, dens)],
            [self.form.dataset.dropdown, *(side.denoiser.dropdown for side in self.sides)],
            [side.denoiser.dropdown for side in self.sides], queue=False, show_progress="hidden",
            api_visibility="private")
        self.run_btn.click(self.run, self.inputs, self.result_outputs, api_name="compare",
                           api_visibility="undocumented", concurrency_limit=None, trigger_mode="once",
                           show_progress="hidden")
        self.cancel_btn.click(_stop, self.session, None, queue=False, api_visibility="private")
        self.step.input(self.show_step, [self.session, self.step], self.pairs, trigger_mode="always_last",
                        show_progress="hidden", api_visibility="private")
        self.hub.wire_share(lambda s: s.compare_folder, self.session)
        self.hub.pull.click(self.pull, [self.session, self.hub.repo, self.hub.run_id, self.hub.token],
                            [*self.result_outputs, self.hub.status, self.hub.token], api_visibility="private")


def _kind(dataset_name: str) -> str:
    return get_entry(dataset_name).kind


def _stop(session: Session) -> None:
    session.cancel()
