"""One side of a comparison: denoiser, sampler and steps, and their parameters as a short YAML in the config's shape
(`denoiser: {...}` and `sampler: {...}`), so the two sides fit side by side with every parameter in view. Choosing
another denoiser or sampler shows its parameters at their defaults."""

from __future__ import annotations

from typing import Any, Mapping

import gradio as gr
import yaml

from studio.limits import safe_yaml
from studio.ui.catalog import Catalog
from studio.ui.form import SAMPLER_FIELDS, Updates, Values, own_params

SECTIONS = ("denoiser", "sampler")


def params_yaml(params: Mapping[str, Mapping[str, Any]]) -> str:
    """{"denoiser": {...}, "sampler": {...}} as two lines of flow-style YAML."""
    return yaml.safe_dump({s: dict(params.get(s) or {}) for s in SECTIONS}, default_flow_style=None,
                          sort_keys=False, allow_unicode=True)


class SidePanel:
    """The choices and parameters of one side ("a" or "b") of a comparison."""

    def __init__(self, catalog: Catalog, cfg: Mapping[str, Any], name: str) -> None:
        self.catalog = catalog
        self.name = name
        kind = catalog.datasets[cfg["dataset"]["name"]].kinds[0]
        with gr.Row():
            self.denoiser = gr.Dropdown(catalog.denoisers_for(kind), value=cfg["denoiser"]["name"], label="Denoiser",
                                        elem_id=f"choice-cmp-{name}-denoiser", min_width=130)
            self.sampler = gr.Dropdown(list(catalog.samplers), value=cfg["sampler"]["name"], label="Sampler",
                                       elem_id=f"choice-cmp-{name}-sampler", min_width=130)
            self.steps = gr.Number(value=cfg["sampler"]["steps"], precision=0, label="Steps K",
                                   elem_id=f"cmp-{name}-steps", min_width=80)
        self.params = gr.Code(params_yaml(self.own(cfg)), language="yaml", interactive=True, lines=2,
                              wrap_lines=True, label="parameters (YAML; null = auto)", elem_id=f"cmp-{name}-params",
                              visible=False)  # shown after the first screen (app.show_after_first_screen)

    @staticmethod
    def own(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The denoiser's and the sampler's own parameters of a config (YAML shape)."""
        return {"denoiser": own_params(cfg["denoiser"]), "sampler": own_params(cfg["sampler"], *SAMPLER_FIELDS)}

    def defaults(self, section: str, name: str) -> dict[str, Any]:
        choices = self.catalog.denoisers if section == "denoiser" else self.catalog.samplers
        return {p.name: p.default for p in choices[name].params} if name in choices else {}

    def parsed(self, text: str | None) -> dict[str, dict[str, Any]]:
        """The parameters box as {"denoiser": {...}, "sampler": {...}}; ValueError names the side."""
        what = f"side {self.name.upper()} parameters"
        data = safe_yaml(text or "", what) or {}
        if not isinstance(data, dict) or set(data) - set(SECTIONS) or not all(
                isinstance(v, dict) or v is None for v in data.values()):
            raise ValueError(f"{what}: expected `denoiser: {{name: value, ...}}` and `sampler: {{name: value, ...}}`")
        return {s: dict(data.get(s) or {}) for s in SECTIONS}

    @property
    def inputs(self) -> set[gr.components.Component]:
        return {self.denoiser, self.sampler, self.steps, self.params}

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.denoiser, self.sampler, self.steps, self.params]

    def read(self, values: Values) -> dict[str, Any]:
        """{"denoiser": {...}, "sampler": {...}} sections (YAML shape) of this side."""
        params = self.parsed(values[self.params])
        return {"denoiser": {**params["denoiser"], "name": values[self.denoiser]},
                "sampler": {**params["sampler"], "name": values[self.sampler], "steps": values[self.steps]}}

    def fill(self, cfg: Mapping[str, Any]) -> Updates:
        """Updates that show this side of `cfg` (YAML shape)."""
        kind = self.catalog.datasets[cfg["dataset"]["name"]].kinds[0]
        return {self.denoiser: gr.update(choices=self.catalog.denoisers_for(kind), value=cfg["denoiser"]["name"]),
                self.sampler: cfg["sampler"]["name"], self.steps: cfg["sampler"]["steps"],
                self.params: params_yaml(self.own(cfg))}

    def chosen(self, values: Values, evt: gr.EventData) -> Updates:
        """A denoiser or sampler chosen on the page: its parameters at their defaults (the other section stays)."""
        section = "denoiser" if evt.target is self.denoiser else "sampler"
        try:
            params = self.parsed(values[self.params])
        except ValueError:
            params = {s: self.defaults(s, values[getattr(self, s)]) for s in SECTIONS}
        params[section] = self.defaults(section, values[getattr(self, section)])
        return {self.params: params_yaml(params)}

    @property
    def kind_inputs(self) -> set[gr.components.Component]:
        return {self.denoiser, self.params}

    @property
    def kind_outputs(self) -> list[gr.components.Component]:
        return [self.denoiser, self.params]

    def kind_changed(self, kind: str, values: Values) -> Updates:
        """A new dataset: offer its kind's denoisers; one that does not fit is replaced by the first that does."""
        names = self.catalog.denoisers_for(kind)
        current = values[self.denoiser]
        out: Updates = {self.denoiser: gr.update(choices=names, value=current if current in names else names[0])}
        if current not in names:
            try:
                params = self.parsed(values[self.params])
            except ValueError:
                params = {"sampler": {}}
            out[self.params] = params_yaml({**params, "denoiser": self.defaults("denoiser", names[0])})
        return out

    def wire(self) -> None:
        gr.on([self.denoiser.input, self.sampler.input], self.chosen, {self.denoiser, self.sampler, self.params},
              self.params, queue=False, show_progress="hidden", api_visibility="private")
