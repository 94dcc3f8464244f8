"""The studio served in this process for app-level tests, and calls made the way the browser makes them
(any event, public or private, by its index, in one session), so tests can read back what a page holds."""

from __future__ import annotations

import json
import os
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
from gradio_client.utils import apply_diff


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    outputs: Path
    demo: Any

    def fn_index(self, api_name: str) -> int:
        return next(i for i, fn in self.demo.fns.items() if fn.api_name == api_name)


@contextmanager
def served(outputs: Path) -> Iterator[Served]:
    """`studio.ui.app.start` on a free loopback port, saving runs into `outputs`."""
    from studio.ui.app import start

    old = os.environ.get("STUDIO_OUTPUTS")
    os.environ["STUDIO_OUTPUTS"] = str(outputs)
    demo = start(port=free_port(), quiet=True)
    try:
        yield Served(demo.local_url, outputs, demo)
    finally:
        demo.close()
        if old is None:
            os.environ.pop("STUDIO_OUTPUTS", None)
        else:
            os.environ["STUDIO_OUTPUTS"] = old


@dataclass
class Page:
    """One browser session: events are joined to the queue and their messages read from its stream."""

    app: Served
    session_hash: str = field(default_factory=lambda: uuid.uuid4().hex[:11])
    frames: list[list] = field(default_factory=list)

    def call(self, api_name: str, *data: Any, timeout: float = 60) -> dict:
        """Run one event to completion; the `process_completed` message (success, output.data or output.error).
        `frames` gets every streamed update of the outputs, in full, as the page applied it."""
        self.frames = []
        index = self.app.fn_index(api_name)
        body = {"data": list(data), "fn_index": index, "session_hash": self.session_hash, "event_data": None,
                "trigger_id": None}
        with httpx.Client(timeout=timeout) as http:
            if not self.app.demo.fns[index].queue:  # events outside the queue are plain posts
                answer = http.post(f"{self.app.url}gradio_api/run/predict", json=body)
                return {"msg": "process_completed", "success": answer.is_success, "output": answer.json()}
            joined = http.post(f"{self.app.url}gradio_api/queue/join", json=body)
            joined.raise_for_status()
            event_id = joined.json()["event_id"]
            with http.stream("GET", f"{self.app.url}gradio_api/queue/data",
                             params={"session_hash": self.session_hash}) as stream:
                for line in stream.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    message = json.loads(line[5:])
                    if message.get("event_id") != event_id:
                        continue
                    if message.get("msg") == "process_generating":
                        update = message["output"]["data"]
                        self.frames.append(update if not self.frames else
                                           [apply_diff(old, diff) for old, diff in zip(self.frames[-1], update)])
                    if message.get("msg") == "process_completed":
                        return message
        raise AssertionError(f"{api_name}: the stream ended before the event completed")
