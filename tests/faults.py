"""Real faults of the parts around a run (issue 7), for whichever backend a test's env uses:

- an object store that refuses writes under some prefixes: a read-only bind mount over those
  folders of a folder bucket; for S3, a small HTTP proxy in front of the endpoint that answers
  500 InternalError to the matching requests (all of them, or only the next N);
- a full disk under the work folder: a tiny tmpfs mounted there.

Mounting needs root (or CAP_SYS_ADMIN); without it the tests skip locally and fail in CI.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

from conftest import Env, need


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def can_mount(scratch: Path) -> bool:
    probe = scratch / "mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    ok = os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    if ok and ok.returncode == 0:
        _umount(probe)
        return True
    return False


@contextmanager
def full_disk(folder: Path, size: str) -> Iterator[None]:
    """`folder` becomes an empty filesystem of `size` bytes (k/m suffixes) until the end."""
    need(can_mount(folder.parent), "mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    result = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    assert result.returncode == 0, result.stderr
    try:
        yield
    finally:
        _umount(folder)


class StoreOutage:
    """Writes under `prefixes` fail while broken (or only the next `requests` of them, S3)."""

    def __init__(self, env: Env, prefixes: list[str]) -> None:
        self.env = env
        self.prefixes = prefixes
        self._mounted: list[Path] = []
        self._proxy: _FailingProxy | None = None
        if env.settings.storage.url.startswith("s3://"):
            endpoint = env.settings.storage.endpoint_url
            need(endpoint is not None, "an S3 outage needs an endpoint_url to stand in front of")
            self._proxy = _FailingProxy(str(endpoint), self._matches)
            self.env = env.with_settings(storage={"endpoint_url": self._proxy.url})
        else:
            self.root: Path = env.store.root  # type: ignore[attr-defined]
            need(can_mount(env.root), "a read-only bind mount needs root")
        self.failures_left: int | None = None  # None: every matching request fails

    @property
    def is_s3(self) -> bool:
        return self._proxy is not None

    def _matches(self, method: str, path: str) -> bool:
        if method in ("GET", "HEAD") or self.failures_left == 0:
            return False
        if not any(prefix in path for prefix in self.prefixes):
            return False
        if self.failures_left is not None:
            self.failures_left -= 1
        return True

    def fail(self, requests: int | None = None) -> None:
        """Start refusing writes: all of them, or (S3) only the next `requests`."""
        if self._proxy is not None:
            self.failures_left = requests
            self._proxy.failing = True
            return
        assert requests is None, "a folder bucket has no transient failures"
        for prefix in self.prefixes:
            folder = self.root / prefix
            folder.mkdir(parents=True, exist_ok=True)
            for options in (["--bind", str(folder)], ["-o", "remount,bind,ro"]):
                result = _mount(*options, str(folder))
                assert result.returncode == 0, result.stderr
            self._mounted.append(folder)

    def heal(self) -> None:
        if self._proxy is not None:
            self._proxy.failing = False
        while self._mounted:
            _umount(self._mounted.pop())

    def close(self) -> None:
        self.heal()
        if self._proxy is not None:
            self._proxy.close()


@contextmanager
def store_outage(env: Env, prefixes: list[str]) -> Iterator[StoreOutage]:
    outage = StoreOutage(env, prefixes)
    try:
        yield outage
    finally:
        outage.close()


class _FailingProxy:
    """Forwards HTTP to `target`; requests for which `should_fail(method, path)` holds get a
    500 InternalError instead, the way S3 answers when it is in trouble."""

    def __init__(self, target: str, should_fail) -> None:  # type: ignore[no-untyped-def]
        parsed = urlparse(target)
        self.failing = False
        self.failed = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _handle(self) -> None:
                body = self._body()
                if proxy.failing and should_fail(self.command, self.path):
                    proxy.failed += 1
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError'
                        b"</Code><Message>We encountered an internal error. Please try again."
                        b"</Message></Error>"
                    )
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("connection", "transfer-encoding", "content-length")
                    }
                    if body is not None:
                        headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    skip = {"transfer-encoding", "connection"}
                    if self.command != "HEAD":
                        skip.add("content-length")
                        self.send_header("Content-Length", str(len(data)))
                    for key, value in response.getheaders():
                        if key.lower() not in skip:
                            self.send_header(key, value)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
