"""Share (push) a saved run or comparison to a Hugging Face Hub dataset repo, and pull one back, through
studio.hub: one panel for the page. The token box is a password field, cleared after every submission, never
logged or echoed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import gradio as gr

from studio.limits import shared_instance, space_oauth
from studio.ui import loader, messages
from studio.ui.session import Session, shown_folder


def hub_module():
    """studio.hub.share, or None with the reason when it cannot be imported."""
    try:
        from studio.hub import share as hub
    except Exception as err:  # noqa: BLE001 - the page says why sharing is off instead of failing to load
        return None, f"Hub sharing is unavailable ({type(err).__name__}: {err})."
    return hub, ""


def share(folder: Path | None, repo: str, token: str, private: bool, progress=None, oauth: str | None = None) -> str:
    """Push a saved run (or comparison) folder; one status line, never containing a token. On a Space only the
    visitor's own token (typed, or `oauth` from their Hugging Face sign-in) is used (studio.serving.policy)."""
    from studio.serving.policy import visitor_token

    hub, why = hub_module()
    if hub is None:
        return why
    if folder is None:
        return "Nothing to share yet: run (or pull) something first."
    report = None if progress is None else (lambda fraction, message: progress(fraction, desc=message))
    try:
        result = hub.push_run(Path(folder), repo.strip(), token=visitor_token(token, oauth), private=private,
                              progress=report)
    except (hub.HubError, ValueError) as err:
        return f"❌ {hub.scrub(str(err), token, oauth)}"
    return f"✅ Shared as run `{result.run_id}`: [{result.url}]({result.url})"


def pull(repo: str, run_id: str, token: str, oauth: str | None = None) -> Path:
    """Download (or reuse) a shared run; ValueError with the Hub's message when it fails. On a Space the Hub is
    always asked with the visitor's own token, so nobody gets a run another visitor could read."""
    from studio.serving.policy import visitor_token

    hub, why = hub_module()
    if hub is None:
        raise ValueError(why)
    try:
        return hub.pull_run(repo.strip(), run_id.strip() or None, token=visitor_token(token, oauth),
                            allow_local=not shared_instance())
    except (hub.HubError, ValueError) as err:
        raise ValueError(hub.scrub(str(err), token, oauth)) from None


def oauth_value(oauth: "gr.OAuthToken | None") -> str | None:
    """The access token of a visitor's Hugging Face sign-in, if any."""
    return None if oauth is None else oauth.token


def is_comparison(folder: Path) -> bool:
    """A pulled folder holds a comparison (two runs in part folders) rather than one run."""
    return not (folder / "config.yaml").is_file() and sum(
        (part / "config.yaml").is_file() for part in folder.iterdir() if part.is_dir()) == 2


class HubPanel:
    """Repo id, token, private flag, a Share button per kind of result; run id, Pull."""

    def __init__(self, shares: dict[str, str]) -> None:
        """`shares`: the label of each Share button by its API name (e.g. {"share": "Share the last run"})."""
        with gr.Accordion("Share on the Hugging Face Hub / pull a shared run", open=False, elem_id="hub"):
            with gr.Row():
                self.repo = gr.Textbox(label="Dataset repo", placeholder="your-name/diffusion-runs", scale=3,
                                       elem_id="hub-repo")
                hint = ("your Hugging Face sign-in" if space_oauth() else "anonymous: public pulls only"
                        ) if shared_instance() else "HF_TOKEN or `hf auth login`"
                self.token = gr.Textbox(label="Token (write access)", type="password", scale=3,
                                        placeholder=f"hf_… (empty: {hint})", elem_id="hub-token")
                if space_oauth():  # a visitor acts with their own account, never the Space's token
                    gr.LoginButton(scale=1)
                self.private = gr.Checkbox(label="Private", value=False, scale=1, min_width=80)
            with gr.Row():
                self.shares = {name: gr.Button(label, elem_id=name.replace("_", "-")) for name, label in shares.items()}
                self.run_id = gr.Textbox(label="Run id to pull (empty: the latest)", scale=2, elem_id="hub-run")
                self.pull = gr.Button("Pull", elem_id="pull")
            self.status = gr.Markdown(elem_id="hub-status")

    def wire_share(self, name: str, folder_of: Callable[[Session], Path | None], session: gr.State) -> None:
        """Share button `name` uploads `folder_of(session)`; the token box is cleared every time."""

        def on_share(sess: Session, repo: str, token: str, private: bool, oauth: gr.OAuthToken | None,
                     progress=gr.Progress()) -> dict[Any, str]:
            return {self.status: share(folder_of(sess), repo, token, private, progress, oauth_value(oauth)),
                    self.token: ""}

        self.shares[name].click(on_share, [session, self.repo, self.token, self.private], [self.status, self.token],
                                api_name=name, api_visibility="private", concurrency_limit=4)

    def wire_pull(self, session: gr.State, show: Callable[[Session, Path, str], dict], outputs: list) -> None:
        """Pull downloads a shared run or comparison and `show(session, folder, repo)` puts it on the page (its
        updates go to `outputs`)."""

        def on_pull(sess: Session, repo: str, run_id: str, token: str,
                    oauth: gr.OAuthToken | None = None) -> dict[Any, Any]:
            loader.load()
            try:
                folder = Path(pull(repo, run_id, token, oauth_value(oauth)))
                shown = show(sess, folder, repo)
            except ValueError as err:
                raise gr.Error(messages.readable(err), print_exception=False) from None
            return {**shown, self.status: f"✅ Pulled `{folder.name}` into `{shown_folder(folder)}`", self.token: ""}

        self.pull.click(on_pull, [session, self.repo, self.run_id, self.token],
                        [*outputs, self.status, self.token], api_name="pull", api_visibility="private")
