"""A local HTTP server speaking the part of the Hugging Face Hub API that huggingface_hub 2.x calls for us.

The real client code runs unchanged against it (pass `endpoint=hub.url`). Endpoints, as the client sends them:

    GET  /api/whoami-v2                                        who owns the Bearer token
    POST /api/repos/create                                     {"name","organization","type","visibility"}
    GET  /api/{type}s/{ns}/{name}[/revision/{rev}]             repo info (+ siblings; ?blobs=true adds sizes)
    GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]          ?recursive=true|false, one page
    POST /api/{type}s/{ns}/{name}/preupload/{rev}              always answers uploadMode "regular"
    POST /api/{type}s/{ns}/{name}/commit/{rev}                 NDJSON: header, file (base64), deletedFile/Folder
    POST /api/validate-yaml                                    README front matter must be a YAML mapping
    HEAD|GET /[{type}s/]{ns}/{name}/resolve/{rev}/{path}       ETag, X-Repo-Commit, Content-Length, Range -> 206

Errors carry the Hub's X-Error-Code / X-Error-Message headers and a JSON {"error": ...} body.
Test controls: `rate_limit(n)` answers the next n requests with 429 + Retry-After, `delay` stalls every
answer, `cut_next_download(path, n)` drops the connection after n bytes (to exercise resume), `stop()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = ("model", "dataset", "space")
INVALID_TOKEN = "Invalid credentials in Authorization header"


def git_blob_sha(data: bytes) -> str:
    """The object id git (and the Hub) give a regular file."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str
    description: str
    added: tuple[str, ...]
    deleted: tuple[str, ...]
    files: dict[str, bytes] = field(repr=False)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def snapshot(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.sha == revision), None)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    token: str | None = None  # the Bearer token sent, if any (tests check which token reached the Hub)


class HubError(Exception):
    """An HTTP error answer, in the Hub's shape."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class FakeHub:
    """In-memory repos behind a threaded HTTP server on 127.0.0.1 (random port)."""

    def __init__(self, token: str = "hf_fakeWriteToken0123456789abcdef", user: str = "alice",
                 orgs: tuple[str, ...] = (), read_token: str = "hf_fakeReadToken0123456789abcdef"):
        self.token, self.user, self.orgs, self.read_token = token, user, tuple(orgs), read_token
        self.delay = 0.0
        self.requests: list[Request] = []
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()
        self._limited = 0
        self._retry_after = 0
        self._cuts: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def start(cls, **kwargs) -> "FakeHub":
        hub = cls(**kwargs)
        handler = type("Handler", (_Handler,), {"hub": hub})
        hub._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        hub._server.daemon_threads = True
        hub._thread = threading.Thread(target=hub._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        hub._thread.start()
        return hub

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Shut the server down: later requests get 'connection refused'."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    # ---- test controls -------------------------------------------------------------------------
    def rate_limit(self, n: int, retry_after: int = 0) -> None:
        """Answer the next `n` requests with 429 Too Many Requests."""
        with self._lock:
            self._limited, self._retry_after = n, retry_after

    def cut_next_download(self, path: str, after_bytes: int) -> None:
        """The next GET of `path` sends `after_bytes` bytes of the body, then drops the connection."""
        with self._lock:
            self._cuts[path] = after_bytes

    def add_file(self, repo_type: str, repo_id: str, path: str, data: bytes, private: bool = False) -> str:
        """Commit one file (creating the repo if needed); returns the commit id."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id)) or self._create(repo_type, repo_id, private)
            return self._commit(repo, f"Upload {path}", "", {path: data}, ()).sha

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self._lock:
            return dict(self._repos[(repo_type, repo_id)].snapshot(revision).files)

    def commits(self, repo_type: str, repo_id: str) -> list[Commit]:
        """Every commit, oldest first (the first is the repo's creation)."""
        with self._lock:
            return list(self._repos[(repo_type, repo_id)].commits)

    def has_repo(self, repo_type: str, repo_id: str) -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def is_private(self, repo_type: str, repo_id: str) -> bool:
        with self._lock:
            return self._repos[(repo_type, repo_id)].private

    # ---- repository state ----------------------------------------------------------------------
    def _create(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        self._repos[(repo_type, repo_id)] = repo
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self._commit(repo, "initial commit", "", {".gitattributes": attributes}, ())
        return repo

    def _commit(self, repo: Repo, message: str, description: str, added: dict[str, bytes],
                deleted: tuple[str, ...]) -> Commit:
        files = dict(repo.commits[-1].files) if repo.commits else {}
        for gone in deleted:
            prefix = gone.rstrip("/") + "/"
            for p in [p for p in files if p == gone or p.startswith(prefix)]:
                del files[p]
        files.update(added)
        self._counter += 1
        sha = hashlib.sha1(f"{repo.repo_id}:{self._counter}:{message}".encode()).hexdigest()
        commit = Commit(sha, message, description, tuple(added), tuple(deleted), files)
        repo.commits.append(commit)
        return commit

    def _namespaces(self) -> set[str]:
        return {self.user, *self.orgs}

    def _auth(self, headers, required: bool, write_namespace: str | None = None) -> str | None:
        """The caller's token; 401 for a wrong (or required but missing) one, 403 without write access."""
        value = headers.get("authorization", "")
        token = value[7:] if value.lower().startswith("bearer ") else None
        if token is not None and token not in (self.token, self.read_token):
            raise HubError(401, INVALID_TOKEN)
        if token is None and required:
            raise HubError(401, "Unauthorized: a user access token is required")
        if write_namespace is not None and (token != self.token or write_namespace not in self._namespaces()):
            raise HubError(403, f'You don\'t have the rights to write under the namespace "{write_namespace}"')
        return token

    def _repo(self, repo_type: str, repo_id: str, token: str | None) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        visible = repo is not None and (not repo.private or (token == self.token or token == self.read_token)
                                        and repo_id.split("/")[0] in self._namespaces())
        if not visible:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _snapshot(self, repo: Repo, revision: str) -> Commit:
        commit = repo.snapshot(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---- request dispatch (called by the handler under the lock) ------------------------------
    def handle(self, method: str, raw_path: str, headers, body: bytes):
        """Return (status, headers, body bytes, cut_after or None)."""
        split = urlsplit(raw_path)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if parts[:1] == ["api"]:
            return self._api(method, parts[1:], query, headers, body)
        return self._resolve(method, parts, headers)

    def _api(self, method: str, parts: list[str], query: dict, headers, body: bytes):
        if method == "GET" and parts == ["whoami-v2"]:
            token = self._auth(headers, required=True)
            role = "write" if token == self.token else "read"
            return _json(200, {"type": "user", "id": "0" * 24, "name": self.user, "fullname": self.user.title(),
                               "orgs": [{"type": "org", "name": o} for o in self.orgs],
                               "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}})
        if method == "POST" and parts == ["repos", "create"]:
            payload = json.loads(body or b"{}")
            namespace = payload.get("organization") or self.user
            self._auth(headers, required=True, write_namespace=namespace)
            repo_type = payload.get("type") or "model"
            repo_id = f"{namespace}/{payload['name']}"
            url = f"{self.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
            if (repo_type, repo_id) in self._repos:
                return _json(409, {"error": "You already created this repo", "url": url},
                             {"X-Error-Message": "You already created this repo"})
            self._create(repo_type, repo_id, payload.get("visibility") == "private")
            return _json(200, {"url": url, "name": repo_id, "id": "1" * 24})
        if method == "POST" and parts == ["validate-yaml"]:
            content = json.loads(body or b"{}").get("content", "")
            return _validate_readme(content)
        if len(parts) >= 3 and parts[0].endswith("s") and parts[0][:-1] in REPO_TYPES:
            repo_type, repo_id, rest = parts[0][:-1], f"{parts[1]}/{parts[2]}", parts[3:]
            return self._repo_api(method, repo_type, repo_id, rest, query, headers, body)
        raise HubError(404, f"Sorry, we can't find the page you are looking for ({method} /api/{'/'.join(parts)})")

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict, headers, body: bytes):
        if method == "GET" and (not rest or rest[0] == "revision"):
            token = self._auth(headers, required=False)
            repo = self._repo(repo_type, repo_id, token)
            commit = self._snapshot(repo, "/".join(rest[1:]) if rest else "main")
            blobs = query.get("blobs", "").lower() == "true"
            siblings = [{"rfilename": p, **({"size": len(d), "blobId": git_blob_sha(d)} if blobs else {})}
                        for p, d in sorted(commit.files.items())]
            return _json(200, {"id": repo_id, "author": repo_id.split("/")[0], "sha": commit.sha,
                               "private": repo.private, "lastModified": "2025-01-01T00:00:00.000Z",
                               "tags": [], "siblings": siblings})
        if method == "GET" and rest and rest[0] == "tree":
            token = self._auth(headers, required=False)
            commit = self._snapshot(self._repo(repo_type, repo_id, token), rest[1])
            return _json(200, _tree(commit.files, "/".join(rest[2:]).strip("/"),
                                    query.get("recursive", "false").lower() == "true"))
        if method == "POST" and rest and rest[0] in ("preupload", "commit"):
            token = self._auth(headers, required=True)
            repo = self._repo(repo_type, repo_id, token)
            self._auth(headers, required=True, write_namespace=repo_id.split("/")[0])
            if unquote("/".join(rest[1:])) != "main":
                raise HubError(400, "this fake hub only commits to main")
            if rest[0] == "preupload":
                files = json.loads(body)["files"]
                head = repo.head.files
                return _json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                              **({"oid": git_blob_sha(head[f["path"]])} if f["path"] in head else {})}
                                             for f in files]})
            return self._commit_request(repo, body)
        raise HubError(404, f"Sorry, we can't find the page you are looking for ({method} {repo_id}/{'/'.join(rest)})")

    def _commit_request(self, repo: Repo, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.head.sha:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file" and value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                folder = value["path"].rstrip("/") + "/"
                if not any(p == value["path"] or p.startswith(folder) for p in repo.head.files):
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                deleted.append(value["path"])
            else:
                raise HubError(400, f"unsupported commit operation {key!r} (this fake hub only takes regular files)")
        commit = self._commit(repo, header.get("summary", ""), header.get("description", ""), added, tuple(deleted))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return _json(200, {"success": True, "commitOid": commit.sha,
                           "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{commit.sha}", "hookOutput": ""})

    def _resolve(self, method: str, parts: list[str], headers):
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        if method not in ("GET", "HEAD") or len(parts) < 5 or parts[2] != "resolve":
            raise HubError(404, "Sorry, we can't find the page you are looking for")
        repo_id, revision, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        token = self._auth(headers, required=False)
        commit = self._snapshot(self._repo(repo_type, repo_id, token), revision)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        data = commit.files[path]
        out = {"ETag": f'"{git_blob_sha(data)}"', "X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes",
               "Content-Type": "application/octet-stream"}
        status, start = 200, 0
        wanted = headers.get("range")
        if wanted and method == "GET":
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) if last else len(data) - 1
            if start >= len(data):
                return 416, {"Content-Range": f"bytes */{len(data)}"}, b"", None
            status = 206
            out["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start:end + 1]
        cut = self._cuts.pop(path, None) if method == "GET" else None
        return status, out, data, cut

    def next_limited(self) -> int | None:
        """Retry-After seconds when this request must be rate limited, else None."""
        with self._lock:
            if self._limited > 0:
                self._limited -= 1
                return self._retry_after
            return None


def _json(status: int, payload, headers: dict | None = None):
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode(), None


def _tree(files: dict[str, bytes], path: str, recursive: bool) -> list[dict]:
    prefix = f"{path}/" if path else ""
    if path and path not in files and not any(p.startswith(prefix) for p in files):
        raise HubError(404, f"{path} does not exist on main", "EntryNotFound")
    entries: dict[str, dict] = {}
    for p, data in sorted(files.items()):
        if not p.startswith(prefix):
            continue
        pieces = p[len(prefix):].split("/")
        for depth in range(1, len(pieces)):
            folder = prefix + "/".join(pieces[:depth])
            if recursive or depth == 1:
                entries.setdefault(folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                            "size": 0, "path": folder})
        if recursive or len(pieces) == 1:
            entries[p] = {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": p}
    return list(entries.values())


def _validate_readme(content: str):
    if content.startswith("---"):
        block = content.split("---", 2)
        try:
            meta = yaml.safe_load(block[1]) if len(block) == 3 else None
        except yaml.YAMLError as err:
            return _json(400, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []})
        if len(block) != 3 or not isinstance(meta, dict):
            return _json(400, {"errors": [{"message": "metadata must be a YAML mapping between --- lines"}],
                               "warnings": []})
    return _json(200, {"errors": [], "warnings": []})


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        hub = self.hub
        bearer = self.headers.get("authorization", "")
        hub.requests.append(Request(method, self.path, self.headers.get("range"),
                                    bearer[7:] if bearer.lower().startswith("bearer ") else None))
        if hub.delay:
            time.sleep(hub.delay)
        retry_after = hub.next_limited()
        if retry_after is not None:
            status, headers, data, cut = _json(429, {"error": "You have been rate-limited"}, {
                "Retry-After": str(retry_after), "RateLimit": f'"api";r=0;t={retry_after}',
                "RateLimit-Policy": '"fixed window";"api";q=1000;w=300',
                "X-Error-Message": "You have been rate-limited"})
        else:
            try:
                with hub._lock:
                    status, headers, data, cut = hub.handle(method, self.path, self.headers, body)
            except HubError as err:
                extra = {"X-Error-Message": err.message, **err.headers}
                if err.code:
                    extra["X-Error-Code"] = err.code
                status, headers, data, cut = _json(err.status, {"error": err.message}, extra)
        self.close_connection = True
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data if cut is None else data[:cut])
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests): nothing to answer
            pass

    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def do_POST(self):
        self._serve("POST")
