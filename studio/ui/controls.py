"""Controls generated from declared `Param`s: a dropdown of registered choices (datasets, denoisers, samplers) and
the chosen entry's parameters. The entries of a dropdown share one row of parameter widgets, as many of each kind
as one entry needs at most (the 15 datasets declare 91 parameters; 12 widgets show any one of them): choosing an
entry relabels the widgets with its parameters, bounds and defaults and hides the rest. A new registered denoiser,
sampler or dataset appears here without any UI code."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import gradio as gr

from studio.params import Param

_SLIDER_SPAN = 10.0  # bounded floats narrower than this get a slider; everything else a number box
WIDGETS = {"checkbox": gr.Checkbox, "dropdown": gr.Dropdown, "auto": gr.Textbox, "slider": gr.Slider,
           "int": gr.Number, "float": gr.Number, "list": gr.Textbox, "text": gr.Textbox}


def widget_kind(p: Param) -> str:
    """Which widget fits a declared parameter (validation stays with Param.coerce, which names the field)."""
    if p.kind is bool:
        return "checkbox"
    if p.choices:
        return "dropdown"
    if p.default is None and p.kind is not list:
        return "auto"
    if p.kind is float and p.low is not None and p.high is not None and p.high - p.low <= _SLIDER_SPAN:
        return "slider"
    if p.kind in (int, float):
        return p.kind.__name__
    return "list" if p.kind is list else "text"


def widget_props(p: Param) -> dict[str, Any]:
    """What a widget shows of one parameter: label, help, and its choices, bounds or placeholder."""
    kind = widget_kind(p)
    props: dict[str, Any] = {"label": f"{p.name} (empty = auto)" if p.default is None else p.name,
                             "info": p.help or None}
    if kind == "dropdown":
        props["choices"] = list(p.choices)
    elif kind == "slider":
        props.update(minimum=p.low, maximum=p.high, step=(p.high - p.low) / 100)
    elif kind in ("auto", "list"):
        props["placeholder"] = "auto" if kind == "auto" else "comma-separated"
    return props


def component_for(p: Param, elem_id: str, value: Any = None, visible: bool = True) -> gr.components.Component:
    """The widget of a declared parameter, showing `value` (default: the parameter's default); a hidden one
    carries only its kind until an entry shows its parameter in it (`ParamPanel.show`)."""
    kind = widget_kind(p)
    extra = {"precision": 0 if kind == "int" else None} if kind in ("int", "float") else {}
    if visible:
        extra.update(widget_props(p), value=to_widget(p, p.default if value is None else value))
    return WIDGETS[kind](visible=visible, elem_id=elem_id, min_width=150, **extra)


def to_widget(p: Param, value: Any) -> Any:
    """A config value as its widget shows it."""
    if p.kind is bool:
        return bool(value)
    if p.kind is list:
        return ", ".join(map(str, value or []))
    if value is None:
        return None if p.choices else ""  # text boxes hold "auto" as an empty box
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


def shared_slots(entries: Mapping[str, Sequence[Param]]) -> tuple[list[str], dict[str, list[int]]]:
    """The widget kind of each shared slot and, for each entry, the slots of its parameters. There are as many slots
    of a kind as one entry needs at most; kinds are ordered by where the entries declare them on average, and an
    entry's parameters of one kind take its slots in declared order."""
    need: Counter[str] = Counter()
    where: dict[str, list[float]] = {}
    for params in entries.values():
        need |= Counter(widget_kind(p) for p in params)
        for i, p in enumerate(params):
            where.setdefault(widget_kind(p), []).append(i / len(params))
    kinds = [k for k in sorted(need, key=lambda k: sum(where[k]) / len(where[k])) for _ in range(need[k])]
    placed = {}
    for name, params in entries.items():
        used: Counter[str] = Counter()
        placed[name] = []
        for p in params:
            kind = widget_kind(p)
            placed[name].append(kinds.index(kind) + used[kind])
            used[kind] += 1
    return kinds, placed


class ParamPanel:
    """A dropdown of named choices and one row of shared parameter widgets, showing the chosen entry's parameters."""

    def __init__(self, label: str, options: Mapping[str, Sequence[Param]], value: str, owner: str,
                 titles: Mapping[str, str] | None = None, offered: Sequence[str] | None = None) -> None:
        self.owner = owner
        self.value = value
        self.options = {name: tuple(params) for name, params in options.items()}
        self.kinds, self.placed = shared_slots(self.options)
        titles = titles or {}
        offered = list(offered) if offered is not None else list(self.options)
        self.dropdown = gr.Dropdown(choices=[(titles.get(n, n), n) for n in offered], value=value, label=label,
                                    elem_id=f"choice-{owner}")
        self.row: gr.Row | None = None  # the parameter widgets
        self.slots: list[gr.components.Component] = []

    def render_params(self, values: Mapping[str, Any] | None = None) -> None:
        """Place the parameter widgets here (call once), showing the chosen entry with `values` (else defaults)."""
        if not self.kinds:
            return
        chosen = dict(zip(self.placed.get(self.value, ()), self.options.get(self.value, ())))
        first: dict[int, Param] = {}
        for name, params in self.options.items():
            for i, p in zip(self.placed[name], params):
                first.setdefault(i, p)
        with gr.Row(visible=bool(chosen), variant="panel", elem_classes=["studio-params"]) as self.row:
            for i in range(len(self.kinds)):
                p = chosen.get(i)
                value = None if p is None else (values or {}).get(p.name)
                self.slots.append(component_for(p or first[i], f"param-{self.owner}-{i + 1}", value,
                                                visible=p is not None))

    @property
    def inputs(self) -> set[gr.components.Component]:
        """The dropdown and every parameter widget (what `read` reads)."""
        return {self.dropdown, *self.slots}

    @property
    def outputs(self) -> list[gr.blocks.Block]:
        """What `fill` updates: the dropdown, the parameters' row and widgets."""
        return [self.dropdown, *self.shown_outputs]

    @property
    def shown_outputs(self) -> list[gr.blocks.Block]:
        """What `show` updates: the parameters' row and widgets."""
        return [] if self.row is None else [self.row, *self.slots]

    def widgets(self, name: str) -> list[tuple[Param, gr.components.Component]]:
        """Entry `name`'s parameters with the widgets that show them (none for an unknown name)."""
        return [(p, self.slots[i]) for p, i in zip(self.options.get(name, ()), self.placed.get(name, ()))]

    def read(self, values: Mapping[gr.components.Component, Any]) -> tuple[str, dict[str, Any]]:
        """(chosen name, its parameters) from the widgets' values; untouched defaults are left out."""
        name = values[self.dropdown]
        params = {}
        for p, widget in self.widgets(name):
            value = from_widget(p, values[widget])
            if value != p.default:
                params[p.name] = value
        return name, params

    def show(self, name: str, params: Mapping[str, Any] | None = None) -> dict[gr.blocks.Block, Any]:
        """Updates that show entry `name`'s parameters with `params` (else its defaults) and hide the others."""
        if self.row is None:
            return {}
        shown = self.widgets(name)
        out: dict[gr.blocks.Block, Any] = {self.row: gr.update(visible=bool(shown))}
        out.update({widget: gr.update(visible=False) for widget in self.slots})
        for p, widget in shown:
            out[widget] = gr.update(visible=True, value=to_widget(p, (params or {}).get(p.name, p.default)),
                                    **widget_props(p))
        return out

    def fill(self, name: str, params: Mapping[str, Any]) -> dict[gr.blocks.Block, Any]:
        """Updates that choose `name` and show it with `params`."""
        return {self.dropdown: name, **self.show(name, params)}


def wire_choices(panels: Sequence[ParamPanel]) -> None:
    """A choice made on the page, in any of `panels`, shows that entry's parameters at their defaults (a changed
    name drops the old entry's parameters, as in a config); one event for all panels, told apart by the dropdown
    that fired. Fills (presets, imported YAML) choose and show in one update instead."""
    by_dropdown = {panel.dropdown: panel for panel in panels if panel.row is not None}

    def show_choice(values: Mapping[gr.components.Component, Any], evt: gr.EventData) -> dict[gr.blocks.Block, Any]:
        panel = by_dropdown[evt.target]
        return panel.show(values[panel.dropdown])

    gr.on([dropdown.input for dropdown in by_dropdown], show_choice, set(by_dropdown),
          [c for panel in by_dropdown.values() for c in panel.shown_outputs], queue=False, show_progress="hidden",
          api_visibility="private")
