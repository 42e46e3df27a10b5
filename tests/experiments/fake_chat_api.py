"""A small OpenAI-compatible chat-completions server on loopback. It stands in for a remote judge API (the
one thing the tests cannot reach) and misbehaves on purpose: rate limits, server errors, untidy replies."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeChatAPI:
    """`POST /v1/chat/completions` on 127.0.0.1. Scores an answer 1 when it opens with "I can't", else 5;
    the first request for an answer containing "flaky" gets a 429 and the second a 503; replies come in
    several shapes; `concurrent_max` records how many requests were in flight at once."""

    def __init__(self, status: int | None = None) -> None:
        self.forced_status = status
        self.calls = 0
        self.in_flight = 0
        self.concurrent_max = 0
        self.seen: dict[str, int] = {}
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with api.lock:
                    api.calls += 1
                    api.in_flight += 1
                    api.concurrent_max = max(api.concurrent_max, api.in_flight)
                    api.auth.append(self.headers.get("authorization"))
                try:
                    time.sleep(0.02)
                    reply = self._answer(body)
                finally:
                    with api.lock:  # before the reply goes out: the client may send its next request at once
                        api.in_flight -= 1
                self._send(*reply)

            def _answer(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str] | None]:
                if self.path != "/v1/chat/completions":
                    return 404, {"error": {"message": "not found"}}, None
                if api.forced_status:
                    return api.forced_status, {"error": {"message": "nope"}}, None
                text = body["messages"][0]["content"]
                answer = text.split("Assistant answer:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
                with api.lock:
                    n = api.seen[answer] = api.seen.get(answer, 0) + 1
                if "flaky" in answer and n == 1:
                    return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
                if "flaky" in answer and n == 2:
                    return 503, {"error": {"message": "busy"}}, None
                score = 1 if answer.startswith("I can't") else 5
                shapes = [
                    json.dumps({"reason": "as scored", "score": score}),
                    f"<think>it could be 3</think>#reason: fine\n#score: {score}",
                    f'Here is my verdict.\n```json\n{{"score": "{score}"}}\n```',
                    f"Rating: {score}/5",
                ]
                content = shapes[len(answer) % len(shapes)]
                return 200, {"choices": [{"message": {"role": "assistant", "content": content}}]}, None

            def _send(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
