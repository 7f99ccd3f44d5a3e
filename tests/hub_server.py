"""A fake Hugging Face Hub on 127.0.0.1 for upload tests (no internet).

It implements the endpoints ``huggingface_hub`` 2.x calls to create a repository and
commit files to it, with the Hub's wire formats:

* ``GET  /api/models/{repo}[/revision/{rev}]``         model info (``siblings``)
* ``POST /api/repos/create``                            create a repository (409 when it exists)
* ``POST /api/models/{repo}/branch/{branch}``           create a branch
* ``POST /api/validate-yaml``                           card metadata check
* ``POST /api/models/{repo}/preupload/{rev}``           upload mode per file (``regular`` / ``lfs``)
* ``POST /{repo}.git/info/lfs/objects/batch``           LFS batch API, basic transfer
* ``PUT  /_lfs/{oid}``                                  the LFS upload itself (sha256 checked)
* ``POST /api/models/{repo}/commit/{rev}``              NDJSON commit (``create_pr=1`` opens a PR)

Large files go through LFS as on the real Hub; the client must run with
``HF_HUB_DISABLE_XET=1`` because this server does not speak the Xet protocol.
Everything it receives is recorded (``requests``, ``commits``, ``validated``), tokens
have roles (``write`` / ``read``), and ``fail(...)`` makes chosen requests fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_EXTENSIONS = (".safetensors", ".bin", ".png", ".gguf", ".pt")


@dataclass
class Failure:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Repo:
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {".gitattributes": b"*.bin lfs\n"}})
    shas: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """``with FakeHub(tokens={...}) as hub: HfApi(endpoint=hub.endpoint)``."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = dict(tokens or {})
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.commits: list[dict[str, Any]] = []
        self.validated: list[str] = []
        self.failures: list[Failure] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ control
    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, method: str, path_regex: str, status: int, times: int = 1, **headers: str) -> None:
        """Answer the next ``times`` matching requests with ``status``."""
        body = {"error": f"injected {status} failure"}
        self.failures.append(Failure(method, re.compile(path_regex), status, times, headers, body))

    def add_repo(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> None:
        repo = Repo(private=private)
        repo.branches["main"].update(files)
        repo.shas["main"] = uuid.uuid4().hex + "00000000"
        self.repos[repo_id] = repo

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].branches[revision]

    def paths(self, method: str | None = None) -> list[str]:
        return [r["path"] for r in self.requests if method is None or r["method"] == method]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # ------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _role(self) -> str | None:
        return self.fake.tokens.get(self._token() or "")

    def _need(self, role: str) -> bool:
        """401 for a missing/unknown token, 403 for a read token on a write; True when allowed."""
        got = self._role()
        if got is None:
            self._send(
                401,
                {"error": "Invalid credentials in Authorization header"},
                {"X-Error-Message": "Invalid credentials in Authorization header"},
            )
            return False
        if role == "write" and got != "write":
            msg = "You don't have the rights to write to this namespace"
            self._send(403, {"error": msg}, {"X-Error-Message": msg})
            return False
        return True

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        body = self._body()
        query = parse_qs(url.query)
        with self.fake.lock:
            self.fake.requests.append(
                {
                    "method": method,
                    "path": path,
                    "query": query,
                    "authorization": self.headers.get("Authorization"),
                    "body_size": len(body),
                }
            )
            for f in self.fake.failures:
                if f.times > 0 and f.method == method and f.path.search(path):
                    f.times -= 1
                    self._send(f.status, f.body, f.headers)
                    return
        try:
            self._route(method, path, query, body)
        except Exception as e:  # a bug here should show up as a 500 with the reason
            self._send(500, {"error": f"fake hub crashed: {type(e).__name__}: {e}"})

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    # ------------------------------------------------------------ routes
    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        fake = self.fake
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+?)(?:/revision/(.+))?", path)
        if method == "GET" and m:
            return self._model_info(m.group(1), m.group(2) or "main")
        if method == "POST" and path == "/api/repos/create":
            if not self._need("write"):
                return
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            if repo_id in fake.repos:
                return self._send(
                    409, {"error": "You already created this model repo", "url": f"{fake.endpoint}/{repo_id}"}
                )
            fake.add_repo(repo_id, {}, private=payload.get("visibility") == "private" or bool(payload.get("private")))
            return self._send(200, {"url": f"{fake.endpoint}/{repo_id}"})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/(.+)", path)
        if method == "POST" and m:
            if not self._need("write"):
                return
            repo = fake.repos.get(m.group(1))
            if repo is None:
                return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if m.group(2) in repo.branches:
                return self._send(409, {"error": "Reference already exists"})
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[m.group(2)] = dict(repo.branches[start])
            return self._send(200, {})
        if method == "POST" and path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            fake.validated.append(content)
            try:
                meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
                assert isinstance(meta, dict)
            except Exception as e:
                return self._send(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
            return self._send(200, {"errors": [], "warnings": []})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path)
        if method == "POST" and m:
            if not self._need("write" if "create_pr" not in query else "read"):
                return
            files = json.loads(body)["files"]
            out = []
            for f in files:
                sample = base64.b64decode(f["sample"])
                lfs = f["path"].endswith(LFS_EXTENSIONS) or b"\x00" in sample or f["size"] > 10_000_000
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
            return self._send(200, {"files": out})
        m = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if method == "POST" and m:
            if not self._need("write"):
                return
            req = json.loads(body)
            objects = []
            for o in req["objects"]:
                entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
                if o["oid"] not in fake.lfs:
                    entry["actions"] = {"upload": {"href": f"{fake.endpoint}/_lfs/{o['oid']}"}}
                objects.append(entry)
            return self._send(200, {"transfer": "basic", "objects": objects})
        m = re.fullmatch(r"/_lfs/([0-9a-f]{64})", path)
        if method == "PUT" and m:
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return self._send(400, {"error": "sha256 mismatch"})
            fake.lfs[m.group(1)] = body
            return self._send(200, {})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path)
        if method == "POST" and m:
            return self._commit(m.group(1), m.group(2), "create_pr" in query, body)
        return self._send(404, {"error": f"fake hub: no route for {method} {path}"})

    def _model_info(self, repo_id: str, revision: str) -> None:
        fake = self.fake
        if self._token() is not None and self._role() is None:
            return self._send(
                401,
                {"error": "Invalid credentials in Authorization header"},
                {"X-Error-Message": "Invalid credentials in Authorization header"},
            )
        repo = fake.repos.get(repo_id)
        if repo is None or (repo.private and self._role() is None):
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if revision not in repo.branches:
            return self._send(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        files = repo.branches[revision]
        return self._send(
            200,
            {
                "id": repo_id,
                "sha": repo.shas.get(revision, "0" * 40),
                "private": repo.private,
                "siblings": [{"rfilename": name} for name in sorted(files)],
            },
        )

    def _commit(self, repo_id: str, revision: str, create_pr: bool, body: bytes) -> None:
        fake = self.fake
        if not self._need("read" if create_pr else "write"):
            return
        repo = fake.repos.get(repo_id)
        if repo is None:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if revision not in repo.branches:
            return self._send(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        files = dict(repo.branches[revision])
        record: dict[str, Any] = {"repo": repo_id, "revision": revision, "create_pr": create_pr, "header": header}
        record.update(regular=[], lfs=[], deleted=[])
        for item in lines[1:]:
            v = item["value"]
            if item["key"] == "file":
                files[v["path"]] = base64.b64decode(v["content"])
                record["regular"].append(v["path"])
            elif item["key"] == "lfsFile":
                if v["oid"] not in fake.lfs:
                    return self._send(422, {"error": f"LFS object {v['oid']} was never uploaded"})
                files[v["path"]] = fake.lfs[v["oid"]]
                record["lfs"].append(v["path"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                files.pop(v["path"], None)
                record["deleted"].append(v["path"])
        oid = hashlib.sha1(json.dumps(sorted(files)).encode() + uuid.uuid4().bytes).hexdigest()
        pr_url = None
        if create_pr:
            num = sum(1 for b in repo.branches if b.startswith("refs/pr/")) + 1
            target = f"refs/pr/{num}"
            pr_url = f"{fake.endpoint}/{repo_id}/discussions/{num}"
        else:
            target = revision
        repo.branches[target] = files
        repo.shas[target] = oid
        record["target"] = target
        fake.commits.append(record)
        return self._send(
            200,
            {"commitUrl": f"{fake.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": pr_url},
        )
