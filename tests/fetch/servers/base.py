"""A stdlib HTTP server on 127.0.0.1 (port 0) in a thread, with fault injection.

Faults are queued per path prefix: `server.inject("/fapi/v1/klines", "429", times=2,
retry_after=1)`; each matching request consumes one. Kinds: "429", "418" (with
Retry-After), "500", "503", "hang" (sleeps `hang_s` before answering: a client timeout),
"malformed" (handler-specific: one bad row), "malformed_all" (every row bad). Every request is logged in `server.log`.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Fault:
    prefix: str
    kind: str
    times: int = 1
    retry_after: float | None = None
    hang_s: float = 2.0
    after: int = 0  # let this many matching requests through first


@dataclass
class Request:
    method: str
    path: str
    query: dict
    t: float = field(default_factory=time.time)


class LoopbackServer:
    """Subclass and implement `route(path, query) -> (status, headers, body_bytes)`."""

    def __init__(self):
        self.log: list[Request] = []
        self.faults: list[Fault] = []
        self.hangs_started = 0
        self._lock = threading.Lock()
        self._stop_hanging = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                outer._handle(self)

            def do_HEAD(self):
                outer._handle(self, head=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_hanging.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- faults and counting ----------------------------------------------------------
    def inject(self, prefix: str, kind: str, *, times: int = 1, retry_after: float | None = None,
               hang_s: float = 2.0, after: int = 0) -> None:
        with self._lock:
            self.faults.append(Fault(prefix, kind, times, retry_after, hang_s, after))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if path.startswith(f.prefix) and f.times > 0:
                    if f.after > 0:
                        f.after -= 1
                        continue
                    f.times -= 1
                    if f.kind == "hang":
                        self.hangs_started += 1
                    return f
        return None

    def count(self, prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for r in self.log if r.path.startswith(prefix))

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    # ---- dispatch ---------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, head: bool = False) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.log.append(Request("HEAD" if head else "GET", parts.path, query))
        fault = self._take_fault(parts.path)
        malformed = False
        if fault is not None:
            if fault.kind in ("429", "418"):
                body = json.dumps({"code": -1003, "msg": "Too many requests"}).encode()
                headers = {"Content-Type": "application/json"}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                return self._send(h, int(fault.kind), headers, body, head)
            if fault.kind in ("500", "502", "503", "504"):
                return self._send(h, int(fault.kind), {"Content-Type": "text/plain"},
                                  b"Internal Server Error", head)
            if fault.kind == "hang":
                self._stop_hanging.wait(fault.hang_s)
            if fault.kind in ("malformed", "malformed_all"):
                malformed = fault.kind
        try:
            status, headers, body = self.route(parts.path, query, malformed=malformed)
        except Exception as exc:  # a bug in a test server must show, not hang the client
            status, headers, body = 500, {"Content-Type": "text/plain"}, repr(exc).encode()
        self._send(h, status, headers, body, head)

    @staticmethod
    def _send(h, status: int, headers: dict, body: bytes, head: bool) -> None:
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if not head:
                h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self, path: str, query: dict, *, malformed: bool = False):
        raise NotImplementedError


def json_response(obj, status: int = 200):
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()
