"""`python app.py`: the Analytic Diffusion Studio in the browser (also the Hugging Face Space entry point).

Flags win over the usual Gradio/Space environment variables (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT,
GRADIO_SHARE); on a Space (SPACE_ID set) the server listens on 0.0.0.0. Analytics are off unless
GRADIO_ANALYTICS_ENABLED says otherwise. The page is served before torch and the engine are imported (they load
in the background); the start-up timeline is printed.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the timeline's zero, before anything else is imported

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space else "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    share = os.environ.get("GRADIO_SHARE", "").lower() in ("1", "true", "yes")
    parser = argparse.ArgumentParser(description="Analytic Diffusion Studio web app")
    parser.add_argument("--host", default=host, help=f"address to listen on (default {host})")
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port})")
    parser.add_argument("--share", action="store_true", default=share, help="also open a public gradio.live link")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="do not prepare the default run in the background after start")
    return parser.parse_args(argv)


def since_start() -> str:
    """Seconds since app.py started, and the CPU seconds this process used (what a busy machine does not stretch)."""
    return f"{time.perf_counter() - STARTED:.2f} s (CPU {time.process_time():.2f} s)"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # leave CPU for the web server: torch's spinning OpenMP threads on every core starve the event loop
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    args = parse_args(argv)
    from studio.ui import catalog

    catalog.build_elsewhere()  # only the first start after a change of the code or presets has to
    from studio.ui import app as page  # gradio and the page's modules; not torch

    timeline = [f"gradio imported {since_start()}"]
    demo = page.build_app()
    timeline.append(f"page built {since_start()}")
    page.serve(demo, args.host, args.port, share=args.share and not os.environ.get("SPACE_ID"),
               warm_up=args.warm_up, on_loaded=lambda: print(f"engine loaded {since_start()}", flush=True))
    timeline.append(f"server listening {since_start()}")
    print(f"studio ready at {demo.local_url} · " + " · ".join(timeline) + " (the engine loads in the background)",
          flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
