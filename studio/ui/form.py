"""The run form: every control of a RunConfig (dataset, denoiser, sampler, schedule, run settings), generated from
the registries' declared parameters; `read` turns the widget values into a validated RunConfig and `fill`
shows a RunConfig (a preset, an imported YAML) in the widgets."""

from __future__ import annotations

import html
import random
from typing import Any, Sequence

import gradio as gr

from studio.config import DEVICES, RunConfig
from studio.data.registry import dataset_names, get_entry, load_dataset
from studio.denoisers.registry import denoiser_class, denoiser_names
from studio.diffusion.samplers import SAMPLERS
from studio.diffusion.schedules import SCHEDULES
from studio.diffusion.spacing import SPACINGS
from studio.limits import Limits
from studio.serving.policy import check_dataset, check_loaded
from studio.ui import explain, messages, pictures
from studio.ui.controls import ParamPanel

MAX_SEED = 2**31 - 1  # what "New seed" draws (any seed the config accepts can be typed)


def dataset_title(name: str, entry) -> str:
    """The dropdown's text for a dataset; those not bundled say that the first use downloads them."""
    mark = "" if entry.bundled or not entry.memoise else " · ⬇ downloads on first use"  # not: a user's folder
    return f"{name} — {entry.summary}{mark}"


def check_run_numbers(n: Any, seed: Any, limits: Limits) -> None:
    """n and seed against this instance's limits, with readable numbers (before the config's own checks)."""
    for what, value, low, high in (("n (number of samples)", n, 1, limits.max_samples),
                                   ("seed", seed, 0, 2**62)):
        if isinstance(value, (int, float)) and not low <= value <= high:
            raise ValueError(f"{what}: {value:,.0f} is outside {low:,} … {high:,} on this instance")


def denoisers_for(kind: str) -> list[str]:
    return [n for n in denoiser_names() if kind in denoiser_class(n).kinds]


class MethodPanels:
    """Denoiser and sampler choices with their parameters and explanations: one side of a run."""

    def __init__(self, cfg: RunConfig, owner: str, explain_text: bool = True) -> None:
        kind = get_entry(cfg.dataset.name).kind
        self.denoiser = ParamPanel("Denoiser", {n: denoiser_class(n).params for n in denoiser_names()},
                                   cfg.denoiser.name, f"{owner}-denoiser", offered=denoisers_for(kind))
        self.denoiser.render_params()
        self.denoiser_md = gr.Markdown(self._den_md(cfg.denoiser.name), latex_delimiters=explain.LATEX,
                                       elem_classes=["studio-explain"], visible=explain_text)
        with gr.Row():
            self.sampler = ParamPanel("Sampler", {n: c.params for n, c in SAMPLERS.items()}, cfg.sampler.name,
                                      f"{owner}-sampler")
            self.steps = gr.Number(value=cfg.sampler.steps, precision=0, label="Steps K",
                                   elem_id=f"{owner}-steps", min_width=90)
        self.sampler.render_params()
        self.sampler_md = gr.Markdown(self._samp_md(cfg.sampler.name), latex_delimiters=explain.LATEX,
                                      elem_classes=["studio-explain"], visible=explain_text)

    @staticmethod
    def _den_md(name: str) -> str:
        return explain.denoiser_text(name, denoiser_class(name).summary) if name in denoiser_names() else ""

    @staticmethod
    def _samp_md(name: str) -> str:
        return explain.sampler_text(name, SAMPLERS[name].summary) if name in SAMPLERS else ""

    @property
    def inputs(self) -> list:
        return [*self.denoiser.inputs, *self.sampler.inputs, self.steps]

    @property
    def outputs(self) -> list:
        return [*self.denoiser.outputs, *self.sampler.outputs, self.steps]

    def read(self, values: Sequence[Any]) -> dict[str, Any]:
        """{"denoiser": {...}, "sampler": {...}} sections (YAML shape) from the values of `inputs`."""
        nd = len(self.denoiser.inputs)
        ns = len(self.sampler.inputs)
        denoiser_name, denoiser_params = self.denoiser.read(values[:nd])
        samp, samp_params = self.sampler.read(values[nd:nd + ns])
        return {"denoiser": {"name": denoiser_name, **denoiser_params},
                "sampler": {"name": samp, "steps": values[nd + ns], **samp_params}}

    def fill(self, cfg: RunConfig) -> list:
        denoiser_values = self.denoiser.fill(cfg.denoiser.name, cfg.denoiser.params)
        denoiser_values[0] = self.kind_changed(get_entry(cfg.dataset.name).kind, cfg.denoiser.name)
        return [*denoiser_values,
                *self.sampler.fill(cfg.sampler.name, cfg.sampler.params), cfg.sampler.steps]

    def wire(self) -> None:
        self.denoiser.on_change()
        self.sampler.on_change()
        self.denoiser.dropdown.change(self._den_md, self.denoiser.dropdown, self.denoiser_md, queue=False,
                                      show_progress="hidden", api_visibility="private")
        self.sampler.dropdown.change(self._samp_md, self.sampler.dropdown, self.sampler_md, queue=False,
                                     show_progress="hidden", api_visibility="private")

    def kind_changed(self, kind: str, current: str) -> dict:
        """Offer only the denoisers that work on this kind of data."""
        names = denoisers_for(kind)
        return gr.update(choices=[(n, n) for n in names], value=current if current in names else names[0])


class RunForm:
    """All controls of a RunConfig, laid out in numbered sections."""

    def __init__(self, cfg: RunConfig) -> None:
        self.limits = Limits.from_env()
        entries = {n: get_entry(n) for n in dataset_names()}
        gr.Markdown("#### 1 · Training data", elem_classes=["studio-section"])
        self.dataset = ParamPanel(
            "Dataset", {n: e.params for n, e in entries.items()}, cfg.dataset.name, "dataset",
            titles={n: dataset_title(n, e) for n, e in entries.items()})
        self.dataset_view = gr.Image(label="Training images", show_label=False, format="png", type="pil",
                                     interactive=False, height=72, container=False, buttons=[],
                                     elem_classes=["studio-strip", "studio-pixels"], elem_id="dataset-strip")
        self.dataset_info = gr.Markdown(elem_classes=["studio-small"], elem_id="dataset-info")
        with gr.Accordion("Dataset options", open=False, elem_id="dataset-options"):
            self.dataset.render_params()
        gr.Markdown("#### 2 · Denoiser and sampler", elem_classes=["studio-section"])
        self.method = MethodPanels(cfg, "sample")
        with gr.Accordion("Schedule, spacing, clipping", open=False):
            with gr.Row():
                self.schedule = gr.Dropdown(list(SCHEDULES), value=cfg.schedule.name, label="Noise schedule",
                                            elem_id="schedule")
                self.spacing = gr.Dropdown(list(SPACINGS), value=cfg.sampler.spacing, label="Timestep spacing",
                                           elem_id="spacing")
            with gr.Row():
                self.T = gr.Number(value=cfg.schedule.T, precision=0, label="T (training steps)")
                self.beta_start = gr.Number(value=cfg.schedule.beta_start, label="β start")
                self.beta_end = gr.Number(value=cfg.schedule.beta_end, label="β end")
            self.clip = gr.Checkbox(value=cfg.sampler.clip_x0, label="Clip x̂0 to [-1, 1] at every step")
        gr.Markdown("#### 3 · Run", elem_classes=["studio-section"])
        with gr.Row(equal_height=True):
            self.n = gr.Number(value=cfg.n, precision=0, label=f"Samples (1–{self.limits.max_samples})", elem_id="n",
                               min_width=80)
            self.seed = gr.Number(value=cfg.seed, precision=0, label="Seed", elem_id="seed", min_width=100)
            self.dice = gr.Button("New seed", size="sm", scale=0, min_width=70, elem_id="dice")
            self.device = gr.Dropdown(list(DEVICES), value=cfg.device, label="Device", elem_id="device",
                                      min_width=90)
        self.batch_size = gr.Number(value=cfg.batch_size, precision=0, visible=False)

    @property
    def inputs(self) -> list:
        return [*self.dataset.inputs, *self.method.inputs, self.schedule, self.T, self.beta_start, self.beta_end,
                self.spacing, self.clip, self.n, self.seed, self.device, self.batch_size]

    @property
    def outputs(self) -> list:
        return [*self.dataset.outputs, *self.method.outputs, self.schedule, self.T, self.beta_start,
                self.beta_end, self.spacing, self.clip, self.n, self.seed, self.device, self.batch_size]

    def read(self, values: Sequence[Any]) -> RunConfig:
        """A validated RunConfig from the values of `inputs`; ValueError names the field."""
        nd, nm = len(self.dataset.inputs), len(self.method.inputs)
        name, options = self.dataset.read(values[:nd])
        sections = self.method.read(values[nd:nd + nm])
        schedule, T, b0, b1, spacing, clip, n, seed, device, batch = values[nd + nm:]
        sections["sampler"].update(spacing=spacing, clip_x0=clip)
        check_run_numbers(n, seed, self.limits)
        return RunConfig.from_dict({
            "dataset": {"name": name, **options}, **sections,
            "schedule": {"name": schedule, "T": T, "beta_start": b0, "beta_end": b1},
            "n": n, "seed": seed, "device": device, "batch_size": batch,
        })

    def fill(self, cfg: RunConfig) -> list:
        s = cfg.schedule
        return [*self.dataset.fill(cfg.dataset.name, cfg.dataset.options), *self.method.fill(cfg),
                s.name, s.T, s.beta_start, s.beta_end, cfg.sampler.spacing, cfg.sampler.clip_x0, cfg.n, cfg.seed,
                cfg.device, cfg.batch_size]

    def preview(self, *values: Any) -> tuple[Any, str]:
        """The strip of training images and one line of facts (N, shape, source) for the chosen dataset."""
        name, options = self.dataset.read(values)
        try:
            check_dataset(name, options)  # the policy gate: limits and allowed folders, before loading
            ds = load_dataset(name, **options)
            check_loaded(ds.n)
        except (ValueError, OSError) as err:
            return None, messages.markdown(err)
        shape = "×".join(map(str, ds.shape))
        classes = f" · {len(ds.class_names)} classes" if ds.class_names else ""
        return pictures.strip(ds.x), (
            f"**N = {ds.n:,}** · shape {shape}{classes} · {get_entry(name).summary}\n\n"
            f"<details class='studio-source'><summary>source and license</summary>{html.escape(ds.source)}<br>"
            f"license: {html.escape(ds.license)}</details>")

    def wire(self) -> None:
        self.dataset.on_change()
        self.dataset.dropdown.change(self.preview, self.dataset.inputs, [self.dataset_view, self.dataset_info],
                                     api_visibility="private", show_progress="minimal")
        self.method.wire()
        self.dataset.dropdown.change(
            lambda name, denoiser_values: self.method.kind_changed(get_entry(name).kind, denoiser_values),
            [self.dataset.dropdown, self.method.denoiser.dropdown], self.method.denoiser.dropdown,
            queue=False, show_progress="hidden", api_visibility="private")
        self.dice.click(lambda: random.randint(0, MAX_SEED), None, self.seed, queue=False, show_progress="hidden",
                        api_visibility="private")
