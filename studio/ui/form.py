"""The run form: every control of a RunConfig (dataset, denoiser, sampler, schedule, run settings), generated from
the catalog of the registries' declared parameters. Handlers get the form's values by component (`inputs` is a
set), `read` turns them into a validated RunConfig and `fill` shows a config (YAML shape: a preset, an imported
YAML) as updates by component."""

from __future__ import annotations

import html
import random
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import gradio as gr

from studio.limits import Limits
from studio.ui import explain, loader, messages, player
from studio.ui.catalog import Catalog
from studio.ui.controls import ParamPanel, wire_choices

if TYPE_CHECKING:
    from studio.config import RunConfig

MAX_SEED = 2**31 - 1  # what "New seed" draws (any seed the config accepts can be typed)
Values = Mapping[gr.components.Component, Any]
Updates = dict[gr.blocks.Block, Any]


def check_run_numbers(n: Any, seed: Any, limits: Limits) -> None:
    """n and seed against this instance's limits, with readable numbers (before the config's own checks)."""
    for what, value, low, high in (("n (number of samples)", n, 1, limits.max_samples),
                                   ("seed", seed, 0, 2**62)):
        if isinstance(value, (int, float)) and not low <= value <= high:
            raise ValueError(f"{what}: {value:,.0f} is outside {low:,} … {high:,} on this instance")


def own_params(section: Mapping[str, Any], *shared: str) -> dict[str, Any]:
    """A config section's own parameters: everything but its name and the `shared` fields."""
    return {k: v for k, v in section.items() if k not in ("name", *shared)}


SAMPLER_FIELDS = ("steps", "spacing", "clip_x0")


class OffersDenoisers(Protocol):
    """Anything that offers denoisers for the form's dataset (the form's own panel, the Compare tab's sides)."""

    kind_inputs: set[gr.components.Component]
    kind_outputs: list[gr.blocks.Block]

    def kind_changed(self, kind: str, values: Values) -> Updates: ...


class MethodPanels:
    """The Sample form's denoiser and sampler: choices, their parameters and their explanations."""

    def __init__(self, catalog: Catalog, cfg: Mapping[str, Any], owner: str) -> None:
        self.catalog = catalog
        kind = catalog.datasets[cfg["dataset"]["name"]].kinds[0]
        denoiser, sampler = cfg["denoiser"], cfg["sampler"]
        self.denoiser = ParamPanel("Denoiser", {n: c.params for n, c in catalog.denoisers.items()},
                                   denoiser["name"], f"{owner}-denoiser", offered=catalog.denoisers_for(kind))
        self.denoiser.render_params(own_params(denoiser))
        self.denoiser_md = self._explanation(self.denoiser_text(denoiser["name"]))
        with gr.Row():
            self.sampler = ParamPanel("Sampler", {n: c.params for n, c in catalog.samplers.items()}, sampler["name"],
                                      f"{owner}-sampler")
            self.steps = gr.Number(value=sampler["steps"], precision=0, label="Steps K", elem_id=f"{owner}-steps",
                                   min_width=90)
        self.sampler.render_params(own_params(sampler, *SAMPLER_FIELDS))
        self.sampler_md = self._explanation(self.sampler_text(sampler["name"]))

    @staticmethod
    def _explanation(text: str) -> gr.Markdown:
        return gr.Markdown(text, latex_delimiters=explain.LATEX, elem_classes=["studio-explain"])

    def denoiser_text(self, name: str) -> str:
        choice = self.catalog.denoisers.get(name)
        return "" if choice is None else explain.denoiser_text(name, choice.summary)

    def sampler_text(self, name: str) -> str:
        choice = self.catalog.samplers.get(name)
        return "" if choice is None else explain.sampler_text(name, choice.summary)

    @property
    def inputs(self) -> set[gr.components.Component]:
        return self.denoiser.inputs | self.sampler.inputs | {self.steps}

    @property
    def outputs(self) -> list[gr.blocks.Block]:
        return [*self.denoiser.outputs, *self.sampler.outputs, self.steps]

    def read(self, values: Values) -> dict[str, Any]:
        """{"denoiser": {...}, "sampler": {...}} sections (YAML shape) from the widgets' values."""
        denoiser, denoiser_params = self.denoiser.read(values)
        sampler, sampler_params = self.sampler.read(values)
        return {"denoiser": {"name": denoiser, **denoiser_params},
                "sampler": {"name": sampler, "steps": values[self.steps], **sampler_params}}

    def fill(self, cfg: Mapping[str, Any]) -> Updates:
        """Updates that show the denoiser and sampler of `cfg` (YAML shape)."""
        kind = self.catalog.datasets[cfg["dataset"]["name"]].kinds[0]
        denoiser, sampler = cfg["denoiser"], cfg["sampler"]
        return {self.denoiser.dropdown: self.offer(kind, denoiser["name"]),
                **self.denoiser.show(denoiser["name"], own_params(denoiser)),
                **self.sampler.fill(sampler["name"], own_params(sampler, *SAMPLER_FIELDS)),
                self.steps: sampler["steps"]}

    def offer(self, kind: str, current: str) -> dict[str, Any]:
        """The denoiser dropdown offering only the denoisers that work on this kind of data."""
        names = self.catalog.denoisers_for(kind)
        return gr.update(choices=[(n, n) for n in names], value=current if current in names else names[0])

    @property
    def kind_inputs(self) -> set[gr.components.Component]:
        return {self.denoiser.dropdown}

    @property
    def kind_outputs(self) -> list[gr.blocks.Block]:
        return self.denoiser.outputs

    def kind_changed(self, kind: str, values: Values) -> Updates:
        """A new dataset: offer its kind's denoisers; one that does not fit is replaced by the first that does."""
        current = values[self.denoiser.dropdown]
        offered = self.offer(kind, current)
        shown = {} if offered["value"] == current else self.denoiser.show(offered["value"])
        return {self.denoiser.dropdown: offered, **shown}

    def wire(self) -> None:
        """The explanations follow the chosen denoiser and sampler."""
        shown = {self.denoiser.dropdown: (self.denoiser_md, self.denoiser_text),
                 self.sampler.dropdown: (self.sampler_md, self.sampler_text)}

        def explanation(values: Values, evt: gr.EventData) -> Updates:
            markdown, text = shown[evt.target]
            return {markdown: text(values[evt.target])}

        gr.on([dropdown.change for dropdown in shown], explanation, set(shown), [self.denoiser_md, self.sampler_md],
              queue=False, show_progress="hidden", api_visibility="private")


class RunForm:
    """All controls of a RunConfig, laid out in numbered sections."""

    def __init__(self, catalog: Catalog, cfg: Mapping[str, Any] | None = None) -> None:
        self.catalog = catalog
        self.limits = Limits.from_env()
        cfg = cfg or catalog.default
        dataset = cfg["dataset"]
        gr.Markdown("#### 1 · Training data", elem_classes=["studio-section"])
        self.dataset = ParamPanel("Dataset", {n: c.params for n, c in catalog.datasets.items()}, dataset["name"],
                                  "dataset", titles={n: catalog.dataset_title(n) for n in catalog.datasets})
        self.dataset_info = gr.HTML("<p>loading the training images…</p>", elem_classes=["studio-small"],
                                    elem_id="dataset-info", js_on_load=None)
        with gr.Accordion("Dataset options", open=False, elem_id="dataset-options"):
            self.dataset.render_params(own_params(dataset))
        gr.Markdown("#### 2 · Denoiser and sampler", elem_classes=["studio-section"])
        self.method = MethodPanels(catalog, cfg, "sample")
        self.panels: list[OffersDenoisers] = [self.method]  # each follows the kind of this form's dataset
        schedule, sampler = cfg["schedule"], cfg["sampler"]
        with gr.Accordion("Schedule, spacing, clipping", open=False):
            with gr.Row():
                self.schedule = gr.Dropdown(list(catalog.schedules), value=schedule["name"], label="Noise schedule",
                                            elem_id="schedule")
                self.spacing = gr.Dropdown(list(catalog.spacings), value=sampler["spacing"],
                                           label="Timestep spacing", elem_id="spacing")
            with gr.Row():
                self.T = gr.Number(value=schedule["T"], precision=0, label="T (training steps)")
                self.beta_start = gr.Number(value=schedule["beta_start"], label="β start")
                self.beta_end = gr.Number(value=schedule["beta_end"], label="β end")
            self.clip = gr.Checkbox(value=sampler["clip_x0"], label="Clip x̂0 to [-1, 1] at every step")
        gr.Markdown("#### 3 · Run", elem_classes=["studio-section"])
        with gr.Row(equal_height=True):
            self.n = gr.Number(value=cfg["n"], precision=0, label=f"Samples (1–{self.limits.max_samples})",
                               elem_id="n", min_width=80)
            self.seed = gr.Number(value=cfg["seed"], precision=0, label="Seed", elem_id="seed", min_width=100)
            self.device = gr.Dropdown(list(catalog.devices), value=cfg["device"], label="Device", elem_id="device",
                                      min_width=90)
            self.dice = gr.Button("New seed", size="sm", scale=0, min_width=70, elem_id="dice")
        self.batch_size = gr.State(cfg["batch_size"])  # not on the page; kept so a loaded config round-trips

    @property
    def fields(self) -> dict[str, gr.components.Component]:
        """The run settings outside the dataset, denoiser and sampler panels, by their place in the config."""
        return {"schedule.name": self.schedule, "schedule.T": self.T, "schedule.beta_start": self.beta_start,
                "schedule.beta_end": self.beta_end, "sampler.spacing": self.spacing, "sampler.clip_x0": self.clip,
                "n": self.n, "seed": self.seed, "device": self.device, "batch_size": self.batch_size}

    @property
    def inputs(self) -> set[gr.components.Component]:
        return self.dataset.inputs | self.method.inputs | set(self.fields.values())

    @property
    def outputs(self) -> list[gr.blocks.Block]:
        return [*self.dataset.outputs, *self.method.outputs, *self.fields.values()]

    def read(self, values: Values) -> RunConfig:
        """A validated RunConfig from the form's values (by component); ValueError names the field."""
        loader.load()
        from studio.config import RunConfig

        name, options = self.dataset.read(values)
        data: dict[str, Any] = {"dataset": {"name": name, **options}, **self.method.read(values), "schedule": {}}
        for path, component in self.fields.items():
            section, _, key = path.rpartition(".")
            (data[section] if section else data)[key] = values[component]
        check_run_numbers(data["n"], data["seed"], self.limits)
        return RunConfig.from_dict(data)

    def fill(self, cfg: Mapping[str, Any]) -> Updates:
        """Updates that show `cfg` (RunConfig YAML shape, every field present as `RunConfig.to_dict` gives it)."""
        dataset = cfg["dataset"]
        out = {**self.dataset.fill(dataset["name"], own_params(dataset)), **self.method.fill(cfg)}
        for path, component in self.fields.items():
            section, _, key = path.rpartition(".")
            out[component] = (cfg[section] if section else cfg)[key]
        return out

    def preview(self, values: Values) -> Updates:
        """A strip of the chosen dataset's training images and one line of facts (N, shape, source)."""
        loader.load()
        from studio.data.registry import load_dataset
        from studio.serving.policy import check_dataset, check_loaded
        from studio.ui import pictures

        name, options = self.dataset.read(values)
        try:
            check_dataset(name, options)  # the policy gate: limits and allowed folders, before loading
            ds = load_dataset(name, **options)
            check_loaded(ds.n)
        except (ValueError, OSError) as err:
            headline, details = messages.short(err, 120)
            more = f"<details class='studio-source'><summary>details</summary>{html.escape(details)}</details>"
            return {self.dataset_info: f"<p>⚠️ {html.escape(headline)}</p>" + (more if details else "")}
        shape = "×".join(map(str, ds.shape))
        classes = f" · {len(ds.class_names)} classes" if ds.class_names else ""
        strip = player.data_url(pictures.strip(ds.x))
        return {self.dataset_info: (
            f'<div id="dataset-strip" class="studio-strip studio-pixels"><img src="{strip}" alt="training images">'
            f"</div><p><b>N = {ds.n:,}</b> · shape {shape}{classes} · "
            f"{html.escape(self.catalog.datasets[name].summary)}</p><details class='studio-source'><summary>source "
            f"and license</summary>{html.escape(ds.source)}<br>license: {html.escape(ds.license)}</details>")}

    def kind_changed(self, values: Values) -> Updates:
        """A new dataset: every panel offers the denoisers of its kind of data."""
        kind = self.catalog.datasets[values[self.dataset.dropdown]].kinds[0]
        return {c: u for panel in self.panels for c, u in panel.kind_changed(kind, values).items()}

    def wire(self, demo: gr.Blocks) -> None:
        """The form's own events, and the dataset preview when the page loads."""
        wire_choices([self.dataset, self.method.denoiser, self.method.sampler])
        gr.on([self.dataset.dropdown.change, demo.load], self.preview, self.dataset.inputs, self.dataset_info,
              api_visibility="private", show_progress="minimal")
        self.method.wire()
        self.dataset.dropdown.change(
            self.kind_changed, {self.dataset.dropdown, *(c for panel in self.panels for c in panel.kind_inputs)},
            [c for panel in self.panels for c in panel.kind_outputs], queue=False, show_progress="hidden",
            api_visibility="private")
        self.dice.click(lambda: random.randint(0, MAX_SEED), None, self.seed, queue=False, show_progress="hidden",
                        api_visibility="private")
