"""`export`, `push` and `pull`: run folders as Hub-ready bundles, and to and from a Hub dataset repository."""

from __future__ import annotations

import argparse
import os
import sys

from studio.cli import one_line


def _cli_token(args: argparse.Namespace) -> str | None:
    if not args.token_env:
        return None
    value = os.environ.get(args.token_env, "").strip()
    if not value:
        raise ValueError(f"--token-env: environment variable {args.token_env} is not set")
    return value


def _cli_progress(fraction: float, message: str) -> None:
    print(f"[{fraction:4.0%}] {message}", file=sys.stderr)


def cmd_push(args: argparse.Namespace) -> int:
    from studio.data.hub_client import HubError  # huggingface_hub is imported by the commands that use it
    from studio.hub.share import push_run

    try:
        result = push_run(args.run_dir, args.repo, token=_cli_token(args), private=args.private,
                          endpoint=args.endpoint, progress=_cli_progress)
    except HubError as err:
        if isinstance(err, ValueError):
            raise
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 1
    print(f"pushed run {result.run_id}: {result.url} (commit {result.commit_url})")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from studio.data.hub_client import HubError
    from studio.hub.share import pull_run

    try:
        folder = pull_run(args.repo_id, run_id=args.run, endpoint=args.endpoint, token=_cli_token(args),
                          progress=_cli_progress)
    except HubError as err:
        if isinstance(err, ValueError):
            raise
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 1
    print(folder)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from studio.hub.export import export_run

    print(export_run(args.run_dir, args.out, zip=not args.no_zip))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run (or comparison) folder with a README card, as a folder and .zip")
    p.add_argument("run_dir", help="the run or comparison folder to export")
    p.add_argument("--out", required=True, help="folder to write the bundle (and its .zip) into")
    p.add_argument("--no-zip", action="store_true", help="write only the folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="push a run folder to a Hugging Face dataset repository (one commit)")
    p.add_argument("run_dir", help="the run folder to push")
    p.add_argument("--repo", required=True, help="dataset repository USER/NAME (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token-env", help="read the token from this environment variable (default: HF_TOKEN, then "
                                       "the saved `hf auth login`)")
    p.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="download a pushed run into the local cache and print its folder")
    p.add_argument("repo_id", help="dataset repository USER/NAME")
    p.add_argument("--run", help="run id (default: the last pushed)")
    p.add_argument("--token-env", help="read the token from this environment variable (private repositories; "
                                       "default: HF_TOKEN, then the saved `hf auth login`)")
    p.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    p.set_defaults(func=cmd_pull)
