"""A local stand-in for the Hugging Face Hub, so push/pull code paths run offline (tests, demos).

`local_hub(tmp_dir)` serves, on 127.0.0.1, the part of the Hub HTTP API that the real `huggingface_hub` client (2.x)
calls for `create_repo`, `upload_folder`/`create_commit`/`push_to_hub`/`DatasetDict.push_to_hub` (preupload, LFS
batch + PUT, commit), repo info, tree/paths-info listings, and `resolve` (HEAD/GET with byte ranges, as used by
`hf_hub_download`, `snapshot_download`, `from_pretrained(repo_id)` and `load_dataset(repo_id)`).

Like the Hub, preupload sends binary/large files (`_LFS_SUFFIXES`, >= 10 MB) through LFS and the rest inline as
"regular" base64 in the commit. Not implemented: Xet (disabled for the block), branches other than `main`, tags,
pull requests, multipart LFS; listings give every entry the listed commit as `lastCommit`; tokens are not checked.
Repos live in memory, contents in `tmp_dir/blobs/` named by their git sha1 (regular) or sha256 (LFS).

Endpoint patching: huggingface_hub reads `HF_ENDPOINT` once, at import (`constants.ENDPOINT`, the module-level `HfApi`
behind `create_repo`/`upload_folder`/...), and so do transformers (its cached `hf_api()`) and datasets
(`config.HF_ENDPOINT`). Setting the variable in a running process is therefore not enough: for the block, `local_hub`
also patches those attributes (and the download cache, `tmp_dir/hf_cache`, offline mode and Xet), then restores them.
The environment variables it sets cover child processes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qs, unquote, urlsplit

NAMESPACE = "local-user"  # owner of repos created without a namespace (what `whoami` answers)
TOKEN = "hf_local_hub_token"
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".parquet", ".arrow", ".gguf", ".npy", ".npz", ".zip")
# /api/{type}s/{namespace}/{name}[/{action}[/{revision}[/{path}]]] (a bare {name} gets RepoNotFound, as on the Hub);
# /{type prefix}{repo_id}/resolve/{revision}/{path}
_API = re.compile(r"^/api/(model|dataset|space)s/([^/]+/[^/]+|[^/]+$)(?:/([^/]+)(?:/([^/]+)(?:/(.*))?)?)?$")
_RESOLVE = re.compile(r"^/(?:(dataset|space)s/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH = re.compile(r"^/(?:(dataset|space)s/)?[^/]+/[^/]+\.git/info/lfs/objects/batch$")


class HubError(Exception):
    """An HTTP error; the client maps `X-Error-Code` to its exceptions (RepositoryNotFoundError, ...)."""

    def __init__(self, status: int, message: str, code: str | None = None, **payload: str):
        super().__init__(message)
        self.status, self.code, self.payload = status, code, payload


@dataclass
class Commit:
    oid: str
    title: str
    date: str
    files: dict[str, tuple[str, int, bool]]  # path -> (content hash naming the blob, size, is LFS)


@dataclass
class Repo:
    commits: dict[str, Commit]
    head: str  # commit oid of `main`


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # the Hub's date format


def _git_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubStore:
    """Repos, commits and blobs. The server answers requests in threads, hence the lock."""

    def __init__(self, root: Path):
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.Lock()

    def create(self, repo_type: str, repo_id: str) -> bool:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False
            initial = Commit(hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest(), "initial commit", _now(), {})
            self.repos[repo_type, repo_id] = Repo({initial.oid: initial}, initial.oid)
            return True

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        if (repo := self.repos.get((repo_type, repo_id))) is None:
            raise HubError(404, f"{repo_type} repo {repo_id} not found", "RepoNotFound")
        return repo

    def snapshot(self, repo_type: str, repo_id: str, revision: str) -> Commit:
        with self.lock:
            repo = self.repo(repo_type, repo_id)
            if (commit := repo.commits.get(repo.head if revision == "main" else revision)) is None:
                raise HubError(404, f"revision {revision!r} not found in {repo_id}", "RevisionNotFound")
            return commit

    def commit(self, repo_type: str, repo_id: str, branch: str, lines: list[dict]) -> str:
        if branch != "main":
            raise HubError(400, f"local_hub only commits to 'main', got {branch!r}")
        header = lines[0]["value"]
        with self.lock:
            repo = self.repo(repo_type, repo_id)
            parent_oid = header.get("parentCommit") or repo.head
            if (parent := repo.commits.get(parent_oid)) is None:
                raise HubError(412, f"parentCommit {parent_oid} is not a commit of {repo_id}")
        files = dict(parent.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                content = base64.b64decode(value["content"])
                (self.blobs / (sha := _git_sha(content))).write_bytes(content)
                files[value["path"]] = sha, len(content), False
            elif key == "lfsFile":
                if not (self.blobs / value["oid"]).is_file():
                    raise HubError(422, f"LFS object {value['oid']} ({value['path']}) was never uploaded")
                files[value["path"]] = value["oid"], (self.blobs / value["oid"]).stat().st_size, True
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {path: entry for path, entry in files.items() if not path.startswith(value["path"] + "/")}
        date = _now()
        oid = hashlib.sha1(
            json.dumps([parent_oid, header["summary"], date, sorted(files.items())]).encode()
        ).hexdigest()
        with self.lock:
            if parent_oid != repo.head:  # someone committed since `parent`: 412/409 make clients retry
                raise HubError(412 if header.get("parentCommit") else 409, f"{repo_id}: main moved, retry the commit")
            repo.commits[oid] = Commit(oid, header["summary"], date, files)
            repo.head = oid
        return oid


def _entry(path: str, blob: tuple[str, int, bool], commit: Commit, expand: bool) -> dict:
    oid, size, lfs = blob
    entry: dict = {"type": "file", "path": path, "size": size, "oid": oid}
    if lfs:  # the git object of an LFS file is its pointer text
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()
        entry.update(oid=_git_sha(pointer), lfs={"oid": oid, "size": size, "pointerSize": len(pointer)})
    if expand:
        entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
    return entry


def _tree(commit: Commit, base: str, recursive: bool, expand: bool) -> list[dict]:
    """Listing of folder `base` ("" = root): its files and folders, or everything below it if `recursive`."""
    prefix = base.strip("/") + "/" if base.strip("/") else ""
    if prefix and not any(path.startswith(prefix) for path in commit.files):
        raise HubError(404, f"no folder {base!r} in commit {commit.oid}", "EntryNotFound")
    entries: dict[str, dict] = {}
    for path, blob in sorted(commit.files.items()):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts) if recursive else min(len(parts), 2)):  # the folders on the way
            folder = prefix + "/".join(parts[:depth])
            entries.setdefault(folder, {"type": "directory", "path": folder, "oid": _git_sha(folder.encode())})
        if recursive or len(parts) == 1:
            entries[path] = _entry(path, blob, commit, expand)
    return list(entries.values())


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, [""])[0].lower() in ("true", "1")  # httpx sends booleans as "true"/"false"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries a Content-Length
    server: _HubServer

    def log_message(self, format: str, *args) -> None:  # the default prints every request to stderr
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        # The client sends Content-Length with every body (chunked uploads would arrive empty and fail the hash check).
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.query = parse_qs(url.query)
        try:
            if match := _RESOLVE.match(url.path):
                return self._resolve(match.group(1) or "model", *map(unquote, match.group(2, 3, 4)))
            self._send_json(self._api(url.path))
        except HubError as error:
            headers = {"X-Error-Message": str(error), **({"X-Error-Code": error.code} if error.code else {})}
            self._send_json({"error": str(error), **error.payload}, error.status, headers)

    do_HEAD = do_POST = do_PUT = do_GET

    def _api(self, path: str) -> object:
        store, endpoint, method = self.server.store, self.server.endpoint, self.command
        if _LFS_BATCH.match(path):  # where to PUT each object the store lacks (none: already uploaded)
            objects = json.loads(self.body)["objects"]
            for obj in objects:
                if not (store.blobs / obj["oid"]).is_file():
                    obj["actions"] = {"upload": {"href": f"{endpoint}/lfs/{obj['oid']}"}}
            return {"transfer": "basic", "objects": objects}
        if method == "PUT" and path.startswith("/lfs/"):
            if hashlib.sha256(self.body).hexdigest() != (oid := path.removeprefix("/lfs/")):
                raise HubError(400, f"LFS upload does not hash to {oid}")
            (store.blobs / oid).write_bytes(self.body)
            return {}
        if path == "/api/repos/create":
            request = json.loads(self.body)
            repo_type = request.get("type") or "model"
            repo_id = f"{request.get('organization') or NAMESPACE}/{request['name']}"
            url = f"{endpoint}/{_PREFIX[repo_type]}{repo_id}"
            if not store.create(repo_type, repo_id):  # `create_repo(exist_ok=True)` reads the url from the 409 too
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}", url=url)
            return {"url": url, "name": repo_id}
        if path == "/api/whoami-v2":
            return {"type": "user", "name": NAMESPACE, "orgs": [], "auth": {"accessToken": {"role": "write"}}}
        if path == "/api/validate-yaml":
            return {"errors": [], "warnings": []}
        if (match := _API.match(path)) is None:
            raise HubError(404, f"local_hub does not implement {method} {path}")
        repo_type, repo_id, action = match.group(1, 2, 3)
        revision, rest = unquote(match.group(4) or "main"), unquote(match.group(5) or "")
        if action == "commit":
            if self.query.get("create_pr") == ["1"]:
                raise HubError(400, "local_hub does not implement pull requests")
            lines = [json.loads(line) for line in self.body.splitlines() if line]
            oid = store.commit(repo_type, repo_id, revision, lines)
            url = f"{endpoint}/{_PREFIX[repo_type]}{repo_id}/commit/{oid}"
            return {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None}
        commit = store.snapshot(repo_type, repo_id, revision)
        if action == "preupload":  # "oid" lets the client skip files that did not change
            files = json.loads(self.body)["files"]
            for upload in files:
                upload.update(uploadMode="lfs" if _is_lfs(upload) else "regular", shouldIgnore=False)
                upload["oid"] = commit.files[upload["path"]][0] if upload["path"] in commit.files else None
            return {"files": files}
        if action == "tree":
            return _tree(commit, rest, _flag(self.query, "recursive"), _flag(self.query, "expand"))
        if action == "paths-info":
            form = parse_qs(self.body.decode())
            listing = _tree(commit, "", recursive=True, expand=_flag(form, "expand"))
            return [entry for entry in listing if entry["path"] in form.get("paths", [])]
        if action in (None, "revision"):
            siblings = [{"rfilename": path, "size": blob[1], "blobId": blob[0]} for path, blob in commit.files.items()]
            author, date = repo_id.split("/")[0], commit.date
            return {"id": repo_id, "author": author, "sha": commit.oid, "lastModified": date, "siblings": siblings}
        raise HubError(404, f"local_hub does not implement {method} {path}")

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        commit = self.server.store.snapshot(repo_type, repo_id, revision)
        if path not in commit.files:
            raise HubError(404, f"{path} not found in {repo_id}@{commit.oid}", "EntryNotFound")
        oid, size, _ = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{oid}"', "Accept-Ranges": "bytes"}
        start, end, status = 0, size - 1, 200
        if ranges := re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "")):  # HfFileSystem reads
            first, last = ranges.groups()
            start, end = (int(first), min(int(last or end), end)) if first else (max(size - int(last), 0), end)
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
        with open(self.server.store.blobs / oid, "rb") as blob:
            blob.seek(start)
            self._send(status, blob.read(max(end - start + 1, 0)), "application/octet-stream", headers)

    def _send_json(self, payload: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers or {})

    def _send(self, status: int, content: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Type": content_type, "Content-Length": str(len(content))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":  # HEAD gets the GET headers (Content-Length included) without the body
            self.wfile.write(content)


def _is_lfs(upload: dict) -> bool:
    return upload["path"].endswith(_LFS_SUFFIXES) or upload["size"] >= 10_000_000


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: HubStore):
        super().__init__(("127.0.0.1", 0), _Handler)  # port 0: the OS picks a free port
        self.store = store
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"


@dataclass
class LocalHub:
    """What `local_hub` yields: the endpoint, the store (to inspect repos) and the download cache."""

    endpoint: str
    store: HubStore
    cache_dir: Path

    def repo_id(self, name: str) -> str:
        return f"{NAMESPACE}/{name}"


def _patches(endpoint: str, cache_dir: str) -> list[tuple[object, str, object]]:
    """(object, attribute, value) for every copy of the settings that libraries took at import time."""
    constants = importlib.import_module("huggingface_hub.constants")
    patches = [
        (constants, "ENDPOINT", endpoint),
        (constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"),
        (constants, "HF_HUB_CACHE", cache_dir),
        (constants, "HF_HUB_OFFLINE", False),
        (constants, "HF_HUB_DISABLE_XET", True),
        (importlib.import_module("huggingface_hub.hf_api").api, "endpoint", endpoint),
    ]
    with contextlib.suppress(ImportError):  # transformers caches an HfApi in `hf_api()`: drop it so it is rebuilt
        patches.append((importlib.import_module("transformers.utils.hub"), "_hf_api", None))
    with contextlib.suppress(ImportError):
        datasets_config = importlib.import_module("datasets.config")
        patches += [
            (datasets_config, "HF_ENDPOINT", endpoint),
            (datasets_config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"),
            (datasets_config, "HF_HUB_OFFLINE", False),
        ]
    return patches


@contextlib.contextmanager
def local_hub(tmp_dir: str | os.PathLike) -> Iterator[LocalHub]:
    """Serve an empty Hub from `tmp_dir` and point huggingface_hub, transformers and datasets at it for the block."""
    from huggingface_hub import HfFileSystem

    root = Path(tmp_dir)
    server = _HubServer(HubStore(root))
    cache_dir = root / "hf_cache"
    environment = {"HF_ENDPOINT": server.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_CACHE": str(cache_dir)}
    with contextlib.ExitStack() as stack:
        stack.callback(server.server_close)
        # A short poll interval: `shutdown` waits for the serving loop to notice (0.5 s by default).
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="local_hub", daemon=True)
        thread.start()
        stack.callback(thread.join)
        stack.callback(server.shutdown)
        stack.enter_context(mock.patch.dict(os.environ, {**environment, "HF_HUB_DISABLE_XET": "1"}))
        for target, name, value in _patches(server.endpoint, str(cache_dir)):
            stack.enter_context(mock.patch.object(target, name, value))
        HfFileSystem.clear_instance_cache()  # cached filesystems hold the old endpoint and listings
        stack.callback(HfFileSystem.clear_instance_cache)
        yield LocalHub(server.endpoint, server.store, cache_dir)
