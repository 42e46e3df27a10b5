"""A real HTTP receiver on 127.0.0.1 for webhook tests: answers each POST with the next scripted status."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)  # answered in order; then 200
    location: str | None = None  # sent with 3xx answers
    hold_first: bool = False  # keep the first request open until `release` is set
    got: list[Received] = field(default_factory=list)
    server: Any = None
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if me.hold_first and not me.holding.is_set():
                    me.holding.set()
                    me.release.wait(60)
                n = int(self.headers.get("content-length") or 0)
                me.got.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n))
                )
                code = me.statuses.pop(0) if me.statuses else 200
                self.send_response(code)
                if me.location and 300 <= code < 400:
                    self.send_header("Location", me.location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
