"""Share runs through a Hugging Face Hub dataset repository: push (one commit per run), pull (cached locally).

Repository layout: `runs/<run-id>/` holds an exported bundle (studio.hub.export: files + README.md card),
`runs/index.json` lists the pushed runs, and the top-level README.md shows them in a table between
marker comments (anything else a user wrote there is kept). The README the studio writes declares a `samples`
config (`configs:` front matter) over runs/index.json, one row per run with the path of its samples picture, so
the Hub's Dataset Viewer and `datasets.load_dataset(repo, "samples")` read the runs as a table, and a `pictures`
config over the runs' samples.png files, which the Viewer shows as images; a README the user wrote keeps its
front matter as written. The token comes from the caller, $HF_TOKEN or
the saved `hf auth login`, in that order, and never reaches logs, files or error messages.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio import __version__
from studio.cache import atomic_dir, cache_root
from studio.models.card import STUDIO_TAG
from studio.hub.export import describe, export_folder, export_run, is_run, run_parts
from studio.data.hub_client import (
    HubAuthError,
    HubError,
    HubNetworkError,
    HubNotFoundError,
    HubPermissionError,
    HubRateLimitError,
    HubRepoIdError,
    Progress,
    RemoteFile,
    Token,
    check_repo_id,
    ensure_timeouts,
    fetch_files,
    hub_endpoint,
    resolve_token,
    scrub,
    with_retries,
)

__all__ = [
    "HubAuthError", "HubError", "HubNetworkError", "HubNotFoundError", "HubPermissionError", "HubRateLimitError",
    "HubRepoIdError", "PushResult", "export_run", "list_pushed_runs", "pull_run", "push_run",
]

log = logging.getLogger("studio.hub")

RUNS = "runs"
INDEX = f"{RUNS}/index.json"
README = "README.md"
START = "<!-- analytic-diffusion-studio:runs:start -->"
END = "<!-- analytic-diffusion-studio:runs:end -->"
# The Dataset Viewer reads only the configs listed, so the run folders' mixed files never confuse it.
SAMPLES_CONFIG = {"config_name": "samples", "data_files": [{"split": "train", "path": INDEX}]}
# ... and the final-samples pictures themselves, which the Viewer shows as images (runs, and comparison sides)
PICTURES_CONFIG = {"config_name": "pictures",
                   "data_files": [{"split": "train", "path": [f"{RUNS}/*/samples.png", f"{RUNS}/*/*/samples.png"]}]}
STUDIO_CONFIGS = (SAMPLES_CONFIG, PICTURES_CONFIG)
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}$")


@dataclass(frozen=True)
class PushResult:
    url: str
    commit_url: str
    run_id: str


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    log.info("%s", message)
    if progress is not None:
        progress(fraction, message)


def _repo_url(endpoint: str, repo_id: str) -> str:
    return f"{endpoint}/datasets/{repo_id}"


def _read_remote_text(repo_id: str, path: str, endpoint: str, token: str, scratch: Path) -> str | None:
    """A small file of the repo's main branch, or None when it does not exist."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    def get() -> str | None:
        try:
            local = hf_hub_download(repo_id, path, repo_type="dataset", endpoint=endpoint, token=token,
                                    cache_dir=scratch)
        except RemoteEntryNotFoundError:
            return None
        return Path(local).read_text()

    return with_retries(get, what=f"reading {path}", repo_id=repo_id, endpoint=endpoint, token=token)


def _index_entry(bundle: Path, run_id: str) -> dict[str, Any]:
    info = describe(bundle, run_id)
    first = info["runs"][0]
    entry = {
        "run_id": run_id,
        "path": f"{RUNS}/{run_id}",
        "kind": info["kind"],
        "created": info["created"],
        "pushed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": first["dataset"],
        "denoiser": ", ".join(dict.fromkeys(r["denoiser"] for r in info["runs"])),
        "sampler": ", ".join(dict.fromkeys(f"{r['sampler']} ({r['steps']} steps)" for r in info["runs"])),
        "samples": f"{first['path']}/samples.png" if first["path"] != "." else "samples.png",
    }
    entry["samples_file"] = f"{entry['path']}/{entry['samples']}"  # from the repository root, for the viewer
    return entry


def _runs_table(index: list[dict[str, Any]]) -> str:
    rows = ["| run | dataset | denoiser | sampler | samples |", "|---|---|---|---|---|"]
    for e in index:
        base = e["path"]
        rows.append(f"| [{e['run_id']}]({base}/README.md) | {e['dataset']} | {e['denoiser']} | {e['sampler']} | "
                    f"![samples of {e['run_id']}]({base}/{e['samples']}) |")
    return "\n".join(rows)


def top_readme(existing: str | None, repo_id: str, index: list[dict[str, Any]]) -> str:
    """The repository README with the runs table between the markers; other content is kept as written."""
    block = f"{START}\n## Runs\n\n{_runs_table(index)}\n{END}"
    if existing and START in existing and END in existing:
        head, rest = existing.split(START, 1)
        return with_samples_config(head + block + rest.split(END, 1)[1])
    if existing:
        return with_samples_config(existing.rstrip() + "\n\n" + block + "\n")
    from huggingface_hub import DatasetCardData

    meta = DatasetCardData(license="other", pretty_name=repo_id.split("/")[1],
                           task_categories=["unconditional-image-generation"],
                           tags=[STUDIO_TAG, "diffusion", "synthetic"], configs=list(STUDIO_CONFIGS))
    return (f"---\n{meta.to_yaml()}\n---\n\n# {repo_id.split('/')[1]}\n\n"
            "Runs of Analytic Diffusion Studio: training-free (\"analytic\") diffusion denoisers beside trained "
            "ones. Each run sits in `runs/<run-id>/` with its card (what was run, metrics, dataset source and "
            "license), `config.yaml` (reproduce with `python -m studio sample --config runs/<run-id>/config.yaml "
            "--out run`), `metrics.json`, `tensors.safetensors` and pictures. Fetch one with "
            f"`python -m studio pull {repo_id} --run <run-id>`.\n\n{block}\n")


def with_samples_config(readme: str) -> str:
    """`readme` with the studio's `samples` and `pictures` configs in its front matter when the studio wrote it
    (its tags name the studio; older studio READMEs gain them), other configs kept; a README the user wrote is
    returned as it is."""
    from huggingface_hub import DatasetCard

    card = DatasetCard(readme, ignore_metadata_errors=True)
    if STUDIO_TAG not in (card.data.get("tags") or []):
        return readme
    ours = {c["config_name"] for c in STUDIO_CONFIGS}
    others = [c for c in card.data.get("configs") or [] if not isinstance(c, dict) or c.get("config_name") not in ours]
    card.data.configs = [*STUDIO_CONFIGS, *others]
    return str(card)


def _open_repo(api, repo_id: str, private: bool, retry: dict[str, Any]) -> None:
    """Create the dataset repository unless it exists (checked first: `private` only applies to a new one)."""
    try:
        info = with_retries(lambda: api.repo_info(repo_id, repo_type="dataset"), what=f"opening {repo_id}", **retry)
    except HubNotFoundError:
        with_retries(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
                     what=f"creating {repo_id}", **retry)
        return
    if private and not info.private:
        log.warning("push: %s already exists and is public; `private` only applies when creating it", repo_id)


def push_run(run_dir: str | Path, repo_id: str, token: Token = None, private: bool = False,
             endpoint: str | None = None, progress: Progress | None = None) -> PushResult:
    """Upload a run (or comparison) folder to `runs/<run-id>/` of dataset repo `repo_id` in one commit.

    Creates the repository if needed (`private` applies then), updates runs/index.json and the README's
    runs table in the same commit. The run folder is only read: a failed push can simply be retried.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    repo_id = check_repo_id(repo_id)
    run_parts(run_dir)  # a wrong folder is reported before the Hub is contacted
    token = resolve_token(token)
    if token is False:
        raise HubAuthError("push: sign in with Hugging Face or paste your own token with write access; this shared "
                           "instance never uses its own token for a visitor.")
    if token is None:
        raise HubAuthError("push: no Hugging Face token. Paste a token with write access, set HF_TOKEN, or run "
                           "`hf auth login` (create one at https://huggingface.co/settings/tokens).")
    ensure_timeouts()
    endpoint = hub_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token, library_name="analytic-diffusion-studio", library_version=__version__)
    retry = dict(repo_id=repo_id, endpoint=endpoint, token=token)

    _report(progress, 0.05, "checking the token")
    who = with_retries(api.whoami, what="checking the token", **retry)
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubPermissionError(scrub(f"push: the token of {who.get('name', 'this user')} is read-only; create one "
                                       "with write access at https://huggingface.co/settings/tokens.", token))

    with tempfile.TemporaryDirectory(prefix="studio-push-") as scratch:
        scratch = Path(scratch)
        _report(progress, 0.15, "exporting the run")
        bundle = export_folder(run_dir, scratch / "bundle")
        run_id = bundle.name

        _report(progress, 0.3, f"opening dataset repository {repo_id}")
        _open_repo(api, repo_id, private, retry)
        index_text = _read_remote_text(repo_id, INDEX, endpoint, token, scratch / "hf")
        readme = _read_remote_text(repo_id, README, endpoint, token, scratch / "hf")
        index = [e for e in (json.loads(index_text) if index_text else []) if e.get("run_id") != run_id]
        replacing = index_text is not None and len(index) < len(json.loads(index_text))
        index.append(_index_entry(bundle, run_id))

        files = sorted(p for p in bundle.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        entry = index[-1]
        message = (f"{'Update' if replacing else 'Add'} run {run_id}: {entry['denoiser']} on {entry['dataset']}, "
                   f"{entry['sampler']}")

        def commit():
            operations = [CommitOperationAdd(f"{RUNS}/{run_id}/{p.relative_to(bundle).as_posix()}", str(p))
                          for p in files]
            operations += [CommitOperationAdd(INDEX, (json.dumps(index, indent=2) + "\n").encode()),
                           CommitOperationAdd(README, top_readme(readme, repo_id, index).encode())]
            return api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset",
                                     commit_description=f"Pushed with Analytic Diffusion Studio {__version__}.")

        _report(progress, 0.5, f"uploading {len(files)} files ({size / 1e6:.1f} MB) in one commit")
        info = with_retries(commit, what=f"pushing run {run_id}", **retry)
    url = f"{_repo_url(endpoint, repo_id)}/tree/main/{RUNS}/{run_id}"
    _report(progress, 1.0, f"pushed run {run_id} to {url}")
    return PushResult(url=url, commit_url=scrub(str(info.commit_url), token), run_id=run_id)


def _pulled_root(repo_id: str) -> Path:
    return cache_root() / "hub-runs" / repo_id.replace("/", "--")


def _local_runs(repo_id: str) -> list[str]:
    root = _pulled_root(repo_id)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def list_pushed_runs(repo_id: str, endpoint: str | None = None, token: Token = None, allow_local: bool = True) -> list[dict[str, Any]]:
    """The entries of the repository's runs/index.json, oldest push first."""
    repo_id = check_repo_id(repo_id)
    token = resolve_token(token)

    def only_index(listing: list[RemoteFile]) -> list[RemoteFile]:
        chosen = [f for f in listing if f.path == INDEX]
        if not chosen:
            raise HubNotFoundError(f"pull: {repo_id} has no {INDEX}; it holds no runs pushed by the studio.")
        return chosen

    files = fetch_files(repo_id, "dataset", "main", only_index, what="listing runs", endpoint=endpoint, token=token,
                        allow_local=allow_local)
    return json.loads(files[INDEX].read_text())


def pull_run(repo_id: str, run_id: str | None = None, endpoint: str | None = None, token: Token = None,
             progress: Progress | None = None, allow_local: bool = True) -> Path:
    """Download run `run_id` (default: the last pushed) of `repo_id` into the studio cache; returns its folder.

    A run already pulled is returned without network access, so it stays usable offline; with `allow_local`
    False (a visitor of a shared instance) the Hub is always asked first, so a visitor never gets a copy
    another caller pulled from a repository the visitor may not read.
    """
    repo_id = check_repo_id(repo_id)
    token = resolve_token(token)
    if run_id is not None and not _RUN_ID.match(run_id):
        raise ValueError(f"run: {run_id[:100]!r} is not a run id (letters, digits, '_', '-', '.')")
    root = _pulled_root(repo_id)
    if allow_local and run_id is not None and (root / run_id / README).is_file():
        return root / run_id
    if run_id is None:
        try:
            index = list_pushed_runs(repo_id, endpoint, token, allow_local)
        except HubNetworkError as err:
            local = _local_runs(repo_id)
            hint = f" Pulled runs available offline: {', '.join(local)} (pass --run)." if local else ""
            raise HubNetworkError(f"{err}{hint}") from None
        if not index:
            raise HubNotFoundError(f"pull: {repo_id} lists no runs in {INDEX}.")
        run_id = index[-1]["run_id"]
        if allow_local and (root / run_id / README).is_file():
            return root / run_id
    prefix = f"{RUNS}/{run_id}/"

    def run_files(listing: list[RemoteFile]) -> list[RemoteFile]:
        chosen = [f for f in listing if f.path.startswith(prefix)]
        if not any(f.path == prefix + README for f in chosen):
            present = sorted({f.path.split("/")[1] for f in listing if f.path.startswith(f"{RUNS}/")} - {"index.json"})
            raise HubNotFoundError(f"pull: run {run_id} is not in {repo_id}; runs there: "
                                   f"{', '.join(present) or 'none'}.")
        return chosen

    files = fetch_files(repo_id, "dataset", "main", run_files, what=f"pulling run {run_id}", endpoint=endpoint,
                        token=token, progress=progress, allow_local=allow_local)

    def write(tmp: Path) -> None:
        for path, local in files.items():
            target = tmp / path[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)

    folder = root / run_id
    atomic_dir(folder, write)
    if is_run(folder):
        from studio.runs import load_run

        load_run(folder)  # fail now, not in the page, if what came back is not a readable run
    return folder
