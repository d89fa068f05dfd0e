"""A local stand-in for the Hugging Face hub: a real HTTP server on 127.0.0.1 with fault injection for pull tests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

#: what the real hub sends for a repo, revision or file it does not have, read by huggingface_hub's hf_raise_for_status
_NOT_FOUND = {
    "repo": ("RepoNotFound", "Repository not found"),
    "revision": ("RevisionNotFound", "Invalid rev id"),
    "entry": ("EntryNotFound", "Entry not found"),
}
_API_PATH = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/(?P<kind>revision|paths-info|tree)/(?P<rev>.+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubFile:
    """One file of one revision as the hub stores it: bytes plus the LFS sha256 it advertises."""

    data: bytes
    sha256: str
    #: the git blob id the hub reports as ``oid`` for the LFS pointer
    blob_id: str


@dataclass(frozen=True)
class Request:
    """One request the server saw, for assertions on what the client sent."""

    method: str
    path: str
    headers: dict[str, str]


class LocalHub:
    """A threaded HTTP server speaking enough of the hub API for huggingface_hub and llmspell's pull."""

    def __init__(self) -> None:
        #: repo_id -> revision -> filename -> file
        self.repos: dict[str, dict[str, dict[str, HubFile]]] = {}
        #: repo_id -> the bearer token it demands (a gated repo)
        self.gated: dict[str, str] = {}
        # Fault injection. Each one is real socket behaviour, not a mock.
        #: close the connection after sending this many bytes of a file body; fires once, then resets to None
        self.cut_after_bytes: int | None = None
        #: serve bytes that differ from the advertised sha256 (same length)
        self.corrupt = False
        #: answer Range requests with a plain 200 and the whole body
        self.ignore_range = False
        #: bytes per second for file bodies; None is as fast as the socket goes
        self.throttle: int | None = None
        #: send this many bytes of a file body, then go silent with the connection open; fires once
        self.stall_after_bytes: int | None = None
        #: answer HEAD like a mirror without LFS headers: ETag is the git blob id, no X-Linked-Etag/Size
        self.hide_linked_etag = False
        #: list files (paths-info, tree) without their LFS metadata, as a proxy that keeps none; with
        #: hide_linked_etag the hub advertises no sha256 for a file anywhere
        self.hide_lfs = False
        #: announce this size for files (HEAD's X-Linked-Size) whatever the body really holds
        self.announced_size: int | None = None
        #: answer the GET of a file body with this status (after HEAD succeeded); fires once
        self.refuse_get: int | None = None
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- content -------------------------------------------------------------------------------------------------

    def add_file(self, repo_id: str, filename: str, data: bytes, revision: str = "main") -> HubFile:
        """Publish ``data`` as ``filename`` in ``repo_id`` at ``revision``; returns what the hub will advertise."""
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
        blob_id = hashlib.sha1(f"blob {len(pointer)}\0{pointer}".encode()).hexdigest()
        entry = HubFile(data=data, sha256=hashlib.sha256(data).hexdigest(), blob_id=blob_id)
        self.repos.setdefault(repo_id, {}).setdefault(revision, {})[filename] = entry
        return entry

    def gate(self, repo_id: str, token: str) -> None:
        """Make ``repo_id`` answer 401/403 GatedRepo unless the request carries ``Bearer <token>``."""
        self.gated[repo_id] = token

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """The commit hash a revision resolves to: stable for the same content, new when a file changes."""
        files = self.repos[repo_id][revision]
        h = hashlib.sha1(f"{repo_id}@{revision}".encode())
        for name in sorted(files):
            h.update(f"{name}:{files[name].sha256}".encode())
        return h.hexdigest()

    def _resolve(self, repo_id: str, revision: str) -> tuple[str, dict[str, HubFile]] | None:
        revisions = self.repos.get(repo_id, {})
        if revision in revisions:
            return self.commit(repo_id, revision), revisions[revision]
        if _COMMIT.match(revision):
            for name in revisions:
                if self.commit(repo_id, name) == revision:
                    return revision, revisions[name]
        return None

    # ---- observation ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to use as HF_ENDPOINT."""
        assert self._server is not None, "the hub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        """How many requests matched a method (any if None) and a path fragment."""
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method) and path_contains in r.path)

    @property
    def range_headers(self) -> list[str]:
        """Every Range header the server received, in order."""
        with self._lock:
            return [r.headers["range"] for r in self.requests if "range" in r.headers]

    def methods(self, path_contains: str = "") -> Counter[str]:
        """Requests seen whose path contains a fragment, counted by method."""
        with self._lock:
            return Counter(r.method for r in self.requests if path_contains in r.path)

    def reset_counters(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self.requests.clear()

    def _record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(Request(method, path, headers))

    def _take_cut(self) -> int | None:
        with self._lock:
            cut, self.cut_after_bytes = self.cut_after_bytes, None
            return cut

    def _take_stall(self) -> int | None:
        with self._lock:
            stall, self.stall_after_bytes = self.stall_after_bytes, None
            return stall

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> LocalHub:
        """Listen on an ephemeral port of 127.0.0.1 and serve from a background thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], hub: LocalHub) -> None:
        self.hub = hub
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # a client that hangs up mid-body (a cancelled pull) is expected; anything else should be loud
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so that huggingface_hub's pooled client reuses connections as it does with the real hub
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    @property
    def hub(self) -> LocalHub:
        return self.server.hub

    # ---- dispatch ------------------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        self.hub._record(method, path, {k.lower(): v for k, v in self.headers.items()})
        body = b""
        if method == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if path == "/api/agent-harnesses":
                # huggingface_hub fetches this registry once per process to tag its user agent
                self._send_json(200, {"standardEnvVars": [], "harnesses": {}})
            elif path.startswith("/api/"):
                self._api(method, path, body)
            elif "/resolve/" in path and method in ("HEAD", "GET"):
                self._resolve_file(method, path)
            else:
                self._send_json(404, {"error": "Not Found"})
        except ConnectionError:
            self.close_connection = True

    # ---- responses -----------------------------------------------------------------------------------------------

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _not_found(self, what: str, commit: str | None = None) -> None:
        code, message = _NOT_FOUND[what]
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send_json(404, {"error": message}, headers)

    def _gate_refuses(self, repo_id: str) -> bool:
        token = self.hub.gated.get(repo_id)
        if token is None:
            return False
        auth = self.headers.get("Authorization")
        if auth == f"Bearer {token}":
            return False
        status = 401 if auth is None else 403
        message = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
        self._send_json(status, {"error": message}, {"X-Error-Code": "GatedRepo", "X-Error-Message": message})
        return True

    # ---- /api/models/... -----------------------------------------------------------------------------------------

    def _api(self, method: str, path: str, body: bytes) -> None:
        m = _API_PATH.match(path)
        if m is None:
            self._send_json(404, {"error": "Not Found"})
            return
        repo_id, kind, rev = m["repo"], m["kind"], unquote(m["rev"] or "main")
        if repo_id not in self.hub.repos:
            self._not_found("repo")
            return
        if self._gate_refuses(repo_id):
            return
        resolved = self.hub._resolve(repo_id, rev)
        if resolved is None:
            self._not_found("revision")
            return
        commit, files = resolved
        if kind == "paths-info" and method == "POST":
            form = parse_qs(body.decode())
            wanted = form.get("paths", [])
            self._send_json(200, [self._path_info(name, files[name]) for name in wanted if name in files])
        elif kind == "tree" and method == "GET":
            self._send_json(200, [self._path_info(name, f) for name, f in sorted(files.items())])
        elif kind in (None, "revision") and method == "GET":
            self._send_json(
                200,
                {
                    "_id": commit[:24],
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit,
                    "private": False,
                    "gated": "manual" if repo_id in self.hub.gated else False,
                    "disabled": False,
                    "tags": ["gguf"],
                    "siblings": [{"rfilename": name} for name in sorted(files)],
                },
            )
        else:
            self._send_json(405, {"error": "Method Not Allowed"})

    def _path_info(self, name: str, f: HubFile) -> dict[str, object]:
        info: dict[str, object] = {"type": "file", "path": name, "size": len(f.data), "oid": f.blob_id}
        if not self.hub.hide_lfs:
            info["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
        return info

    # ---- /{repo}/resolve/{revision}/{filename} -------------------------------------------------------------------

    def _resolve_file(self, method: str, path: str) -> None:
        repo_part, rest = path[1:].split("/resolve/", 1)
        repo_id = unquote(repo_part)
        rev_part, _, file_part = rest.partition("/")
        revision, filename = unquote(rev_part), unquote(file_part)
        if repo_id not in self.hub.repos:
            self._not_found("repo")
            return
        if self._gate_refuses(repo_id):
            return
        resolved = self.hub._resolve(repo_id, revision)
        if resolved is None:
            self._not_found("revision")
            return
        commit, files = resolved
        entry = files.get(filename)
        if entry is None:
            self._not_found("entry", commit)
            return

        if method == "GET" and self.hub.refuse_get is not None:
            status, self.hub.refuse_get = self.hub.refuse_get, None
            self._send_json(status, {"error": "refused"})
            return
        data = entry.data
        if self.hub.corrupt:
            # same length, different bytes: only a hash check can tell
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        total = len(data)
        start, end = 0, total - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header and not self.hub.ignore_range and method == "GET":
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if m and (m[1] or m[2]):
                if m[1]:
                    start = int(m[1])
                    end = min(int(m[2]), total - 1) if m[2] else total - 1
                else:
                    start, end = max(total - int(m[2]), 0), total - 1
                if start >= total or start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", commit)
        if self.hub.hide_linked_etag:
            self.send_header("ETag", f'"{entry.blob_id}"')
        else:
            self.send_header("ETag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            announced = self.hub.announced_size
            self.send_header("X-Linked-Size", str(announced if announced is not None else len(entry.data)))
        self.send_header("Content-Disposition", f'inline; filename="{os.path.basename(filename)}";')
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        cut = self.hub._take_cut() if method == "GET" else None
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if method == "HEAD":
            return
        stall = self.hub._take_stall() if cut is None else None
        self._send_body(data[start : end + 1], cut, stall)

    def _send_body(self, body: bytes, cut: int | None, stall: int | None) -> None:
        if cut is not None or stall is not None:
            body = body[: cut if cut is not None else stall]
        rate = self.hub.throttle
        step = 64 * 1024 if rate is None else max(1024, rate // 20)
        began = time.monotonic()
        sent = 0
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            sent += len(body[i : i + step])
            if rate:
                # sleep until the bytes sent so far fit the rate, so bursts cannot add up
                delay = sent / rate - (time.monotonic() - began)
                if delay > 0:
                    time.sleep(delay)
        self.wfile.flush()
        if stall is not None:
            # silence with the socket open: only the client's read timeout can end this
            self.hub._stopping.wait(60)
            self.close_connection = True
        if cut is not None:
            # a real cut: the peer sees EOF before Content-Length is reached
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def unused_endpoint() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A URL on 127.0.0.1 that accepts connections (the kernel's backlog) but never answers a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def point_hf_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Make huggingface_hub talk to ``endpoint``, whether it was imported before HF_ENDPOINT was set or after."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    # huggingface_hub copies HF_ENDPOINT into these at import time
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    from huggingface_hub.utils import _http

    if hasattr(_http, "_HUB_ORIGINS") and hasattr(_http, "_url_origin"):
        # redirects between Hub origins keep the token; this set is also fixed at import time
        monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset({*_http._HUB_ORIGINS, _http._url_origin(endpoint)}))


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    """A started LocalHub with huggingface_hub pointed at it, online, with no token; stopped afterwards."""
    from huggingface_hub import constants

    hub = LocalHub().start()
    point_hf_at(monkeypatch, hub.url)
    # the developer's own offline switch and token must not leak into tests
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HFHUB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-stored-tokens"))
    if hasattr(constants, "AGENT_HARNESSES_PATH"):
        # a registry cache huggingface_hub writes under the HF_HOME it saw at import, the developer's own
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json"))
    try:
        yield hub
    finally:
        hub.stop()
