"""Controls generated from declared `Param`s: a dropdown of registered choices (datasets, denoisers, samplers)
and, for each choice, its own parameters, shown only while it is selected. A new registered denoiser,
sampler or dataset appears here without any UI code."""

from __future__ import annotations

from typing import Any, Sequence

import gradio as gr

from studio.params import Param

_SLIDER_SPAN = 10.0  # bounded floats narrower than this get a slider; everything else a number box


def _label(p: Param) -> str:
    auto = " (empty = auto)" if p.default is None else ""
    return f"{p.name}{auto}"


def component_for(p: Param, owner: str) -> gr.components.Component:
    """The widget that fits a declared parameter (validation stays with Param.coerce, which names the field)."""
    common = dict(label=_label(p), info=p.help or None, elem_classes=["studio-param"],
                  elem_id=f"param-{owner}-{p.name}", min_width=150)
    if p.kind is bool:
        return gr.Checkbox(value=bool(p.default), **common)
    if p.choices:
        return gr.Dropdown(choices=list(p.choices), value=p.default, **common)
    if p.default is None and p.kind is not list:
        return gr.Textbox(value="", placeholder="auto", **common)
    if p.kind is float and p.low is not None and p.high is not None and p.high - p.low <= _SLIDER_SPAN:
        return gr.Slider(p.low, p.high, value=p.default, step=(p.high - p.low) / 100, **common)
    if p.kind in (int, float):
        return gr.Number(value=p.default, precision=0 if p.kind is int else None, **common)
    if p.kind is list:
        return gr.Textbox(value=", ".join(map(str, p.default or [])), placeholder="comma-separated", **common)
    return gr.Textbox(value=str(p.default), **common)


def to_widget(p: Param, value: Any) -> Any:
    """A config value as its widget shows it."""
    if p.kind is list:
        return ", ".join(map(str, value or []))
    if value is None:
        return ""  # only text boxes hold "auto"
    if (p.kind is str and not p.choices) or (p.default is None and p.kind in (int, float)):
        return str(value)
    return value


def from_widget(p: Param, value: Any) -> Any:
    """A widget's value as config input: an empty box means "auto" where the default is auto."""
    if isinstance(value, str) and not value.strip() and (p.default is None or p.kind is list):
        return [] if p.kind is list else None
    if isinstance(value, str) and p.kind is not str:
        return value.strip()
    return value


class ParamPanel:
    """A dropdown of named choices and every choice's declared parameters in its own group."""

    def __init__(self, label: str, options: dict[str, Sequence[Param]], value: str, owner: str,
                 titles: dict[str, str] | None = None, offered: Sequence[str] | None = None) -> None:
        self.owner = owner
        self.value = value
        self.options = {name: tuple(params) for name, params in options.items()}
        titles = titles or {}
        offered = list(offered) if offered is not None else list(self.options)
        self.dropdown = gr.Dropdown(choices=[(titles.get(n, n), n) for n in offered], value=value, label=label,
                                    elem_id=f"choice-{owner}")
        self.groups: dict[str, gr.Group] = {}
        self.fields: list[tuple[str, Param, gr.components.Component]] = []

    def render_params(self) -> None:
        """Place every choice's parameter group here (call once, where the parameters should appear)."""
        for name, params in self.options.items():
            if not params:
                continue
            with gr.Group(visible=name == self.value, elem_classes=["studio-params"]) as group:
                with gr.Row():
                    for p in params:
                        self.fields.append((name, p, component_for(p, f"{self.owner}-{name}")))
            self.groups[name] = group

    @property
    def inputs(self) -> list[gr.components.Component]:
        """The dropdown, then every parameter widget (the order `read` expects)."""
        return [self.dropdown, *(c for _, _, c in self.fields)]

    @property
    def outputs(self) -> list[gr.components.Component | gr.Group]:
        """What `fill` updates: the inputs, then the groups."""
        return [*self.inputs, *self.groups.values()]

    def read(self, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        """(chosen name, its parameters) from the values of `inputs`; untouched defaults are left out."""
        name, rest = values[0], values[1:]
        params = {}
        for (owner, p, _), value in zip(self.fields, rest):
            if owner == name:
                value = from_widget(p, value)
                if value != p.default:
                    params[p.name] = value
        return name, params

    def visibility(self, name: str) -> list[dict]:
        return [gr.update(visible=n == name) for n in self.groups]

    def fill(self, name: str, params: dict[str, Any]) -> list[Any]:
        """Updates for `outputs` that show `name` with `params` (others keep their values)."""
        values = []
        for owner, p, _ in self.fields:
            if owner == name:
                values.append(to_widget(p, params.get(p.name, p.default)))
            else:
                values.append(gr.skip())
        return [name, *values, *self.visibility(name)]

    def on_change(self) -> None:
        """Show the chosen entry's parameters when the dropdown changes."""
        if self.groups:
            self.dropdown.change(self.visibility, self.dropdown, list(self.groups.values()), queue=False,
                                 show_progress="hidden", api_visibility="private")
