"""A minimal Hugging Face Hub on 127.0.0.1 for tests: just the endpoints huggingface_hub's
create_repo, upload_folder (preupload + NDJSON commit, regular uploads), repo_info,
list_repo_tree and file download (HEAD/GET resolve) use. Repos live in memory."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, token: str = "hf_test_token") -> None:
        self.repos: dict[str, dict[str, Any]] = {}  # repo -> {"files": {path: bytes}, "sha": str, "private": bool}
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self.cards: list[str] = []  # model cards sent for YAML validation
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None, head: bool = False) -> None:
                payload = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(payload)))
                if not isinstance(body, bytes):
                    self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(payload)

            def _authorized(self) -> bool:
                return self.headers.get("Authorization", "") == f"Bearer {hub.token}"

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self) -> None:
                hub.requests.append(("POST", self.path))
                body = self._body()
                if not self._authorized():
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                if self.path == "/api/validate-yaml":  # model-card front matter check on README uploads
                    hub.cards.append(json.loads(body).get("content", ""))
                    return self._send(200, {"errors": [], "warnings": []})
                if self.path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req.get('organization') or 'user'}/{req['name']}"
                    url = {"url": f"http://{self.headers['Host']}/{repo}"}
                    if repo in hub.repos:
                        return self._send(409, {"error": "You already created this model repo", **url})
                    hub.repos[repo] = {"files": {}, "sha": "0" * 40, "private": bool(req.get("private"))}
                    return self._send(200, url)
                m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)", self.path)
                if not m or m.group(1) not in hub.repos:
                    return self._send(404, {"error": "Repository not found"})
                repo = hub.repos[m.group(1)]
                if m.group(2) == "preupload":
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                      for f in files]})
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        v = item["value"]
                        repo["files"][v["path"]] = base64.b64decode(v["content"])
                    elif item["key"] == "deletedFile":
                        repo["files"].pop(item["value"]["path"], None)
                digest = hashlib.sha1(json.dumps(sorted((p, git_blob_sha(d)) for p, d in repo["files"].items())).encode())
                repo["sha"] = digest.hexdigest()
                return self._send(200, {"commitUrl": f"http://{self.headers['Host']}/{m.group(1)}/commit/{repo['sha']}",
                                        "commitOid": repo["sha"], "pullRequestUrl": None})

            def _get(self, head: bool) -> None:
                hub.requests.append(("HEAD" if head else "GET", self.path))
                path = self.path.split("?")[0]
                m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?$", path)
                if m:
                    repo = hub.repos.get(m.group(1))
                    if repo is None or (repo["private"] and not self._authorized()):
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return self._send(200, {"id": m.group(1), "sha": repo["sha"], "private": repo["private"],
                                            "siblings": [{"rfilename": p} for p in sorted(repo["files"])]}, head=head)
                m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path)
                if m:
                    repo = hub.repos.get(m.group(1))
                    if repo is None:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    entries = [{"type": "file", "path": p, "size": len(d), "oid": git_blob_sha(d)}
                               for p, d in sorted(repo["files"].items())]
                    return self._send(200, entries, head=head)
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if m:
                    repo = hub.repos.get(m.group(1))
                    if repo is None:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    data = repo["files"].get(m.group(3))
                    if data is None:
                        return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                    headers = {"X-Repo-Commit": repo["sha"], "ETag": f'"{git_blob_sha(data)}"'}
                    return self._send(200, data, headers, head=head)
                return self._send(404, {"error": f"unknown endpoint {path}"})

            def do_GET(self) -> None:
                self._get(head=False)

            def do_HEAD(self) -> None:
                self._get(head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
