"""The one place that talks to the Hugging Face Hub through huggingface_hub: endpoint, timeouts, retries,
downloads with progress, and errors turned into short messages that never contain the token.

Push/pull (studio.hub.share) and the Hub datasets (studio.data.hub_datasets) both build on it.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import httpx2
from huggingface_hub import constants, get_session, get_token, scan_cache_dir, set_client_factory, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from tqdm.auto import tqdm

from studio.limits import shared_instance

log = logging.getLogger("studio.hub")

# huggingface_hub's shared HTTP client has no timeout of its own (`timeout=None`): a silent network would hang
# the page. Calls that pass their own timeout (downloads, HEAD) keep it; every other call gets these.
# Read when the shared client is built, so a test may shorten them.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0

Progress = Callable[[float, str], None]
"""progress(fraction in [0, 1], message): how far a Hub operation has got, for a UI bar."""

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry when the Hub says 429 (rate limited) or 502/503/504."""

    attempts: int = 4
    base_s: float = 2.0
    max_s: float = 30.0


RETRY = RetryPolicy()
_RETRY_STATUS = (429, 502, 503, 504)


# A Hub token: a string, None (huggingface_hub's own lookup: $HF_TOKEN, then the saved login) or False (anonymous,
# no lookup: a visitor of a shared instance who gave no token of their own).
Token = str | bool | None


class HubError(Exception):
    """A Hub operation failed; the message is safe to show anywhere (it never holds the token)."""


class HubAuthError(HubError):
    """Missing, wrong or expired token (HTTP 401)."""


class HubPermissionError(HubError):
    """The token is valid but may not write there (HTTP 403)."""


class HubRepoIdError(HubError, ValueError):
    """The repository id is not of the form namespace/name."""


class HubNotFoundError(HubError):
    """The repository, revision or file does not exist (or is private)."""


class HubNetworkError(HubError):
    """The Hub cannot be reached: no network, server down, timeout or offline mode."""


class HubRateLimitError(HubError):
    """The Hub kept answering 429 Too Many Requests after our retries."""


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub base URL: the argument, else $HF_ENDPOINT read now (not at import), else the library's default."""
    chosen = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return chosen.rstrip("/")


def hf_cache_dir() -> Path:
    """huggingface_hub's download cache, read from the environment now so HF_HOME/HF_HUB_CACHE changes apply."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                     "huggingface")
    return Path(home) / "hub"


def is_offline() -> bool:
    """HF_HUB_OFFLINE set now or when huggingface_hub was imported."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"} or \
        constants.HF_HUB_OFFLINE


_TIMEOUTS_LOCK = threading.Lock()
_TIMEOUTS_INSTALLED = False


def ensure_timeouts() -> None:
    """Give huggingface_hub's shared client default timeouts (once per process), through its public API only:
    the library's own client (get_session) lends its event hooks (offline mode, request ids) and redirect
    setting to the clients our factory builds (set_client_factory)."""
    global _TIMEOUTS_INSTALLED
    with _TIMEOUTS_LOCK:
        if _TIMEOUTS_INSTALLED:
            return
        template = get_session()
        hooks = {kind: list(found) for kind, found in template.event_hooks.items()}
        follow = template.follow_redirects

        def client_with_timeouts() -> httpx2.Client:
            return httpx2.Client(event_hooks=hooks, follow_redirects=follow,
                                 timeout=httpx2.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

        set_client_factory(client_with_timeouts)  # closes the template; the next request builds ours
        _TIMEOUTS_INSTALLED = True


def check_repo_id(repo_id: str, field: str = "repo") -> str:
    """Return `repo_id` stripped, or raise HubRepoIdError naming the expected form."""
    text = (repo_id or "").strip()
    problem = None
    if text.count("/") != 1:
        problem = "it must be namespace/name (your user or organisation name, a slash, the repository name)"
    else:
        try:
            validate_repo_id(text)
        except HFValidationError:
            problem = ("use letters, digits, '-', '_' or '.', at most 96 characters, no '--' or '..', "
                       "not starting or ending with '-' or '.'")
    if problem:
        raise HubRepoIdError(f"{field}: {repo_id!r} is not a valid Hugging Face repository id: {problem}, "
                             f"e.g. alice/diffusion-runs")
    return text


def resolve_token(token: Token = None, env: str = "HF_TOKEN") -> Token:
    """The token from the caller (UI field), else $env, else the saved `hf auth login` token. False (a visitor
    of a shared instance without a token of their own) stays False: anonymous, and huggingface_hub is told not
    to look for a token either."""
    if token is False:
        return False
    for candidate in (token, os.environ.get(env), get_token() if env == "HF_TOKEN" else None):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def scrub(text: str, *secrets: str | None) -> str:
    """Remove every secret (and anything shaped like a Hub token) from `text`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)


def translate(err: BaseException, *, what: str, repo_id: str, endpoint: str, token: Token = None) -> HubError:
    """Turn a huggingface_hub/httpx failure of `what` into a HubError whose message says what to do."""
    if isinstance(err, HubError):
        return err
    if isinstance(err, HFValidationError):
        return HubRepoIdError(scrub(f"{what}: {err}", token))
    if isinstance(err, LocalTokenNotFoundError):
        return HubAuthError(f"{what}: no Hugging Face token. Paste a token with write access, set HF_TOKEN, or run "
                            "`hf auth login` (create one at https://huggingface.co/settings/tokens).")
    if isinstance(err, OfflineModeIsEnabled) or (isinstance(err, LocalEntryNotFoundError) and is_offline()):
        return HubNetworkError(f"{what}: offline mode is on (HF_HUB_OFFLINE) and {repo_id} is not in the local "
                               "cache; unset HF_HUB_OFFLINE and connect to the network.")
    if isinstance(err, httpx2.TimeoutException):
        return HubNetworkError(f"{what}: {endpoint} did not answer in time (timeout); check your network and retry.")
    if isinstance(err, (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError)):
        return HubNetworkError(f"{what}: cannot reach {endpoint} (network down or server unavailable); check your "
                               "connection or HF_ENDPOINT and retry.")
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        server = scrub((err.server_message or "").strip().splitlines()[0] if err.server_message else "", token)
        detail = f" (Hub said: {server})" if server else ""
        if isinstance(err, RevisionNotFoundError):
            return HubNotFoundError(f"{what}: revision not found in {repo_id}{detail}.")
        if isinstance(err, RemoteEntryNotFoundError):
            return HubNotFoundError(f"{what}: file not found in {repo_id}{detail}.")
        if isinstance(err, GatedRepoError):
            return HubPermissionError(f"{what}: {repo_id} is gated; accept its conditions on its Hub page, then use "
                                      "a token of that account.")
        if (status == 401 and not isinstance(err, RepositoryNotFoundError)) or "Invalid user token" in str(err):
            return HubAuthError(f"{what}: the Hugging Face token was rejected (401: invalid or expired); use a "
                                "valid token (https://huggingface.co/settings/tokens).")
        if isinstance(err, RepositoryNotFoundError) or status == 404:
            return HubNotFoundError(f"{what}: repository {repo_id} not found on {endpoint}, or it is private and "
                                    "the token cannot read it.")
        if status == 403:
            return HubPermissionError(f"{what}: the token may not write to {repo_id} (403 forbidden){detail}. Use a "
                                      "token with write access to that user or organisation, or push to your own "
                                      "namespace.")
        if status == 429:
            return HubRateLimitError(f"{what}: the Hub is rate limiting requests (429 Too Many Requests) and still "
                                     "was after retrying; wait a few minutes and try again.")
        if status is not None and status >= 500:
            return HubNetworkError(f"{what}: the Hub answered {status} (server error); try again later.")
        return HubError(scrub(f"{what}: the Hub refused the request ({status}){detail}.", token))
    return HubError(scrub(f"{what}: {type(err).__name__}: {err}", token))


def _retry_after(err: HfHubHTTPError) -> float:
    value = err.response.headers.get("Retry-After", "") if err.response is not None else ""
    return float(value) if value.strip().isdigit() else 0.0


def with_retries(call: Callable[[], T], *, what: str, repo_id: str, endpoint: str, token: Token = None,
                 policy: RetryPolicy | None = None) -> T:
    """Run `call`, waiting and retrying on 429/5xx with exponential backoff; failures become HubErrors."""
    policy = policy or RETRY
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if status not in _RETRY_STATUS or attempt == policy.attempts:
                raise translate(err, what=what, repo_id=repo_id, endpoint=endpoint, token=token) from None
            wait = min(policy.max_s, max(_retry_after(err), policy.base_s * 2 ** (attempt - 1)))
            log.warning("%s: the Hub answered %s; retrying in %.1fs (attempt %d of %d)",
                        what, status, wait, attempt + 1, policy.attempts)
            time.sleep(wait)
        except Exception as err:  # noqa: BLE001 - every failure leaves as a HubError with a safe message
            raise translate(err, what=what, repo_id=repo_id, endpoint=endpoint, token=token) from None
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int


def _reporting_bar(report: Callable[[int], None]) -> type[tqdm]:
    """A tqdm class for snapshot_download that passes the bytes counted by its byte bars to `report`."""

    class _Bar(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.setdefault("file", sys.stderr)
            kwargs.setdefault("leave", False)
            super().__init__(*args, **kwargs)

        def update(self, n: int | float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.unit == "B":
                report(int(self.n))
            return shown

    return _Bar


def fetch_files(
    repo_id: str,
    repo_type: str,
    revision: str,
    select: Callable[[list[RemoteFile]], list[RemoteFile]],
    *,
    what: str,
    endpoint: str | None = None,
    token: Token = None,
    progress: Progress | None = None,
    allow_local: bool = True,
) -> dict[str, Path]:
    """Download the files `select` picks from the repo listing; returns {path in repo: local file}.

    Online: list the revision (one request that also checks reachability), then snapshot_download the chosen
    files (allow_patterns, several at once) into huggingface_hub's cache by revision name, which records
    refs/<revision> there for later offline use (complete files are never fetched twice; a dropped transfer
    resumes by Range).
    Offline or unreachable: the same selection over what huggingface_hub's cache already holds for that
    revision (e.g. after `hf download REPO --repo-type dataset`); if that is not enough, or `allow_local` is
    False (a visitor of a shared instance must prove access online), a HubNetworkError.
    `select` raises ValueError (or a HubError) when the files it needs are not all there.
    """
    from huggingface_hub import HfApi

    ensure_timeouts()
    if token is None and shared_instance():  # a visitor's request never borrows the server's token
        token = False
    endpoint = hub_endpoint(endpoint)
    cache_dir = hf_cache_dir()
    failure: HubError | None = None
    if not is_offline():
        api = HfApi(endpoint=endpoint, token=token)
        try:
            info = with_retries(lambda: api.repo_info(repo_id, repo_type=repo_type, revision=revision,
                                                      files_metadata=True, timeout=READ_TIMEOUT_S),
                                what=what, repo_id=repo_id, endpoint=endpoint, token=token)
            listing = [RemoteFile(s.rfilename, int(s.size or 0)) for s in info.siblings or []]
            return _download(repo_id, repo_type, revision, select(listing), what=what, endpoint=endpoint,
                             token=token, cache_dir=cache_dir, progress=progress)
        except HubNetworkError as err:
            failure = err
    reason = str(failure) if failure else f"{what}: offline mode is on (HF_HUB_OFFLINE)"
    if not allow_local:  # the caller must prove access to the repo: no local copy stands in for the Hub
        raise HubNetworkError(reason)
    local = _cached_revision(cache_dir, repo_id, repo_type, revision)
    if local is None:
        raise HubNetworkError(f"{reason}; and {repo_id}@{revision} is not in the local cache ({cache_dir}).")
    root, files = local
    try:
        chosen = select([RemoteFile(p, size) for p, size in files.items()])
    except (ValueError, HubError) as err:  # offline, whatever the selection misses is simply not here
        raise HubNetworkError(f"{reason}; and the local copy of {repo_id}@{revision} is incomplete: {err}") from None
    log.info("%s: using the local copy of %s@%s (%s)", what, repo_id, revision,
             "Hub unreachable" if failure else "offline mode")
    return {f.path: root / f.path for f in chosen}


MAX_WORKERS = 8  # files downloaded at once


def _download(repo_id: str, repo_type: str, revision: str, chosen: Iterable[RemoteFile], *, what: str,
              endpoint: str, token: Token, cache_dir: Path, progress: Progress | None) -> dict[str, Path]:
    """snapshot_download of exactly the chosen files (allow_patterns), several at once, into huggingface_hub's
    cache under `revision` (refs/<revision> recorded for offline use); complete files are not fetched again and a
    dropped transfer resumes by Range."""
    chosen = list(chosen)
    total = sum(f.size for f in chosen)
    label = f"{what}: {repo_id}"
    lock = threading.Lock()
    done = [0]

    def report(n: int) -> None:  # the furthest byte bar (plain HTTP counts one, Xet two of the same bytes)
        with lock:  # bars update from several threads: report in order
            done[0] = max(done[0], n)
            if progress is not None and total:
                progress(min(1.0, done[0] / total), f"downloading {label}")

    if progress is not None:
        progress(0.0, f"downloading {label}")
    folder = with_retries(
        lambda: snapshot_download(repo_id, repo_type=repo_type, revision=revision, endpoint=endpoint, token=token,
                                  cache_dir=cache_dir, allow_patterns=[glob.escape(f.path) for f in chosen],
                                  max_workers=max(1, min(MAX_WORKERS, len(chosen))),
                                  tqdm_class=_reporting_bar(report), etag_timeout=READ_TIMEOUT_S),
        what=what, repo_id=repo_id, endpoint=endpoint, token=token)
    out = {f.path: Path(folder) / f.path for f in chosen}
    missing = [path for path, local in out.items() if not local.is_file()]
    if missing:  # the revision moved between the listing and the download
        raise HubNotFoundError(f"{what}: {', '.join(missing[:3])} no longer in {repo_id}@{revision}; try again.")
    if progress is not None:
        progress(1.0, f"downloaded {label}")
    return out


def _cached_revision(cache_dir: Path, repo_id: str, repo_type: str,
                     revision: str) -> tuple[Path, dict[str, int]] | None:
    """(snapshot folder, {path: size}) of `revision` (a branch, tag or commit) in huggingface_hub's cache."""
    if not cache_dir.is_dir():
        return None
    for repo in scan_cache_dir(cache_dir).repos:
        if repo.repo_id != repo_id or repo.repo_type != repo_type:
            continue
        for rev in repo.revisions:
            if revision in rev.refs or rev.commit_hash == revision:
                files = {f.file_path.relative_to(rev.snapshot_path).as_posix(): f.size_on_disk for f in rev.files}
                return rev.snapshot_path, files
    return None
