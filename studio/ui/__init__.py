"""The Gradio web app: one module per tab; `studio.ui.app.build_app()` assembles the page."""

from studio.ui import gradio_startup

gradio_startup.install()
