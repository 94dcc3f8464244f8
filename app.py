"""`python app.py`: the Analytic Diffusion Studio in the browser (also the Hugging Face Space entry point).

Flags win over the usual Gradio/Space environment variables (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT,
GRADIO_SHARE); on a Space (SPACE_ID set) the server listens on 0.0.0.0. Analytics are off unless
GRADIO_ANALYTICS_ENABLED says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


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


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # leave CPU for the web server: torch's spinning OpenMP threads on every core starve the event loop
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    args = parse_args(argv)
    from studio.ui.app import start, warm_up

    demo = start(args.host, args.port, share=args.share and not os.environ.get("SPACE_ID"))
    print(f"studio ready in {time.perf_counter() - started:.1f} s at {demo.local_url}", flush=True)
    if args.warm_up:
        warm_up()
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
