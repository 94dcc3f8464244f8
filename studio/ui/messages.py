"""One message area per tab: a problem replaces the previous message (never stacks in pop-ups) and a success
clears it. API clients still get the error: `refuse` raises a gr.Error the page does not pop up."""

from __future__ import annotations

import html
import re
from typing import Any, Callable, Iterator

import gradio as gr

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)e\+(\d+)(?![\w.])")


def area(elem_id: str) -> gr.HTML:
    return gr.HTML("", elem_id=elem_id, elem_classes=["studio-message"], js_on_load=None)


def readable(text: str) -> str:
    """One complete line: whitespace and line breaks collapsed, huge numbers written out (4.61169e+18 → ≈ 4.6 × 10^18)."""
    text = " ".join(str(text).split())
    return _NUMBER.sub(lambda m: f"≈ {float(m.group(1)):.2g} × 10^{int(m.group(2))}", text)


def show(text: str, details: str = "") -> str:
    """The message area's HTML: a short line, and longer details behind a disclosure."""
    more = (f"<details><summary>details</summary>{html.escape(readable(details))}</details>" if details else "")
    return f'<div class="studio-msg" role="alert">⚠️ {html.escape(readable(text))}{more}</div>'


def markdown(err: Exception | str, limit: int = 120) -> str:
    """A problem for a Markdown line: its first sentence, the rest behind a disclosure."""
    headline, details = short(err, limit)
    more = (f"\n\n<details class='studio-source'><summary>details</summary>{html.escape(details)}</details>"
            if details else "")
    return f"⚠️ {headline}{more}"


def short(err: Exception | str, limit: int = 160) -> tuple[str, str]:
    """(first sentence, the rest) of a long message, so the area stays one line with details behind it."""
    text = readable(err)
    if len(text) <= limit:
        return text, ""
    cut = text.find(". ", 40, limit) + 1  # the first sentence, else the last clause or word that fits
    if cut <= 0:
        cut = max(text.rfind(sep, 40, limit) for sep in (": ", "; ", ", "))
    if cut <= 0:
        cut = text.rfind(" ", 0, limit)
    if cut <= 0:
        cut = limit
    return text[:cut].rstrip(" :;,") + " …", text[cut:].strip(" :;,")


def refuse(text: str) -> gr.Error:
    """The error for API clients; the page shows `text` in its message area instead of a pop-up."""
    return gr.Error(readable(text), visible=False, print_exception=False)


def to_page(handler: Callable[..., dict], area: gr.HTML, fail: bool = True) -> Callable[..., Iterator[dict]]:
    """`handler` (updates by component; raises gr.Error on bad input) for the page: its updates and a cleared
    message `area`; when it refuses, the refusal goes to the message area first and, with `fail`, the event still
    fails for API clients."""
    def wrapped(*args: Any) -> Iterator[dict]:
        try:
            out = handler(*args)
        except gr.Error as err:
            yield {area: show(err.message)}
            if fail:
                raise refuse(err.message) from None
            return
        yield {**out, area: ""}
    return wrapped
