"""What the web server accepts and serves, from the instance's limits (studio.limits): keyword arguments for
`demo.launch` beside the page's own (theme, CSS, the outputs folder in `allowed_paths`)."""

from __future__ import annotations

from typing import Any

from studio.limits import Limits

SPARE_THREADS = 8  # light events (previews, sliders) keep running while every queued run waits in a thread


def blocked_paths() -> list[str]:
    """Folders never served, even if an allowed folder contains them: huggingface_hub's home holds the
    saved Hub token."""
    from huggingface_hub import constants

    return [str(constants.HF_HOME)]


def launch_limits() -> dict[str, Any]:
    """Uploads over STUDIO_MAX_UPLOAD_BYTES are refused while they arrive (HTTP 413); enough server threads
    for every job the queues may hold (a waiting run holds one), plus spare ones."""
    lim = Limits.from_env()
    waiting = lim.queue_length + lim.concurrency_per_device
    return dict(max_file_size=lim.max_upload_bytes, max_threads=max(40, waiting + SPARE_THREADS),
                blocked_paths=blocked_paths())
