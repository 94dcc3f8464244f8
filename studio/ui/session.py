"""Per-browser-session state (held in a gr.State, so no result ever reaches another page), where runs are saved,
and the progress bar."""

from __future__ import annotations

import html
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.limits import shared_instance

if TYPE_CHECKING:
    from studio.serving.worker import Job


@dataclass
class Result:
    """A finished run as the page holds it: the Run, its training data and its saved folder."""

    run: Any
    dataset: Any
    folder: Path | None = None


class Session:
    """What one browser session has: its running job and its latest results (sample run, comparison).
    A plain class, not a dataclass: gr.State copies its default once per new session (`__deepcopy__`)."""

    def __init__(self, sample: Result | None = None) -> None:
        self.sample = sample
        self.compare: list[Result] = []
        self.compare_folder: Path | None = None
        self._job: Job | None = None
        self._lock = threading.Lock()

    def start(self, job: Job) -> None:
        """Remember the new job; a job this session still runs is cancelled (one run at a time per page)."""
        with self._lock:
            old, self._job = self._job, job
        if old is not None:
            old.cancel()

    def cancel(self) -> bool:
        with self._lock:
            job = self._job
        if job is None:
            return False
        job.cancel()
        return True

    def __deepcopy__(self, memo: dict) -> "Session":
        return Session()  # every new browser session starts empty


def outputs_root() -> Path:
    """$STUDIO_OUTPUTS, default ./outputs: every finished run is saved here."""
    return Path(os.environ.get("STUDIO_OUTPUTS", "outputs")).resolve()


def run_folder(name: str) -> Path:
    return outputs_root() / re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def shown_folder(folder: Path) -> str:
    """How the page names a saved folder: its full path locally, only its name on a Space (no server paths)."""
    return folder.name if shared_instance() else str(folder)


def progress_html(state: str, k: int = 0, K: int = 0, text: str = "") -> str:
    """The progress bar: state is idle | queued | preparing | running | done | cancelled | error."""
    fraction = k / K if K else (1.0 if state == "done" else 0.0)
    label = html.escape(text)
    return (f'<div class="studio-progress" data-state="{state}" data-k="{k}" data-total="{K}">'
            f'<div class="studio-bar"><div class="studio-fill" style="width:{100 * fraction:.1f}%"></div></div>'
            f'<div class="studio-progress-label">{label}</div></div>')
