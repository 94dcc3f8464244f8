"""`python app.py` from process start to the Run button in headless Chromium, with the app's own start-up marks:
gradio imported, page built, server listening (printed by app.py, from its start), then page answered and Run
visible (from the moment the process was started) and engine loaded. For the tests, and by hand:

    python tests/startup_timeline.py --runs 3           # the catalog is built once first, as any earlier start does
    python tests/startup_timeline.py --runs 3 --cold    # every start with an empty cache (the first after a change)
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"(gradio imported|page built|server listening|engine loaded) ([\d.]+) s \(CPU ([\d.]+) s\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    """A running `python app.py`: its URL, when it was started (perf_counter) and the marks it printed."""

    url: str
    process: subprocess.Popen
    started: float
    marks: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # the app's CPU seconds at each mark
    output: list[str] = field(default_factory=list)

    def read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            for name, seconds, cpu in MARK.findall(line):
                self.marks[name], self.cpu[name] = float(seconds), float(cpu)

    def wait_for(self, mark: str, timeout: float = 120) -> float:
        """Seconds from the app's start to `mark` (waits until it is printed)."""
        deadline = time.monotonic() + timeout
        while mark not in self.marks:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"no '{mark}' from app.py:\n" + "".join(self.output))
            time.sleep(0.05)
        return self.marks[mark]


@contextmanager
def app_process(cache: Path, outputs: Path, *flags: str) -> Iterator[App]:
    """`python app.py` on a free port with this cache and outputs folder; stopped afterwards."""
    port = free_port()
    env = {**os.environ, "STUDIO_CACHE": str(cache), "STUDIO_OUTPUTS": str(outputs), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *flags], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    app = App(f"http://127.0.0.1:{port}/", process, started)
    reader = threading.Thread(target=app.read, daemon=True)
    reader.start()
    try:
        yield app
    finally:
        process.terminate()
        process.wait(30)
        reader.join(5)


def open_when_served(browser, app: App, width: int = 1440, height: int = 900) -> tuple[object, dict[str, float]]:
    """A page of `app` opened as soon as the server answers; (page, {"page answered", "Run visible"} in seconds
    from the process start)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    port = int(app.url.rstrip("/").rsplit(":", 1)[1])
    while True:  # a bare connect: polling through the browser would take CPU from the start it measures
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if app.process.poll() is not None:
                raise AssertionError("app.py ended:\n" + "".join(app.output)) from None
            time.sleep(0.02)
    page.goto(app.url, timeout=60_000)
    answered = time.perf_counter() - app.started
    page.wait_for_selector("#run", state="visible", timeout=60_000)
    return page, {"page answered": answered, "Run visible": time.perf_counter() - app.started}


def prepare_catalog(cache: Path) -> None:
    """Build the page's catalog into `cache` in a separate process (as the first start of this code does)."""
    subprocess.run([sys.executable, "-c", "from studio.ui.catalog import current; current()"], cwd=ROOT, check=True,
                   env={**os.environ, "STUDIO_CACHE": str(cache)})


def main() -> None:
    from browser_tools import chromium

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="start every run with an empty cache")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="studio-startup-"))
    if not args.cold:
        prepare_catalog(work / "cache")
    with chromium() as browser:
        for i in range(args.runs):
            cache = work / (f"cache-{i}" if args.cold else "cache")
            with app_process(cache, work / "outputs", "--no-warm-up") as app:
                page, seen = open_when_served(browser, app)
                marks = {name: app.wait_for(name) for name in ("gradio imported", "page built", "server listening")}
                marks.update(seen, **{"engine loaded": app.wait_for("engine loaded")})
                print(f"run {i + 1}: " + " · ".join(
                    f"{k} {v:.2f} s" + (f" (CPU {app.cpu[k]:.2f})" if k in app.cpu else "")
                    for k, v in sorted(marks.items(), key=lambda kv: kv[1])))
                page.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
