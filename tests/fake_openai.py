"""A fake OpenAI-compatible server for the client's tests: real HTTP on 127.0.0.1, scripted replies."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import free_port


class FaultServer:
    """An OpenAI-compatible /v1/chat/completions endpoint with scripted faults.

    `mode`: "ok", "error" (500 always) or "hang" (sleeps `hang_s` first); the first `fail_first` calls
    answer 500. It replies `reply`, or echoes the last message when that is None, with `usage` tokens
    (prompt, completion); `calls` counts the calls it received, `arrivals` holds the time.monotonic() at
    which each arrived.
    """

    def __init__(self, mode: str, fail_first: int = 0, hang_s: float = 30.0, reply: str | None = None,
                 usage: tuple[int, int] = (1, 1)):
        self.mode, self.fail_first, self.hang_s = mode, fail_first, hang_s
        self.reply, self.usage = reply, usage
        self.calls = 0
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.arrivals.append(time.monotonic())
                    server.calls += 1
                    n = server.calls
                if server.mode == "hang":
                    time.sleep(server.hang_s)
                if server.mode == "error" or n <= server.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "injected failure"}}')
                    return
                text = server.reply if server.reply is not None else "echo: " + body["messages"][-1]["content"]
                payload = {
                    "id": f"c{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": server.usage[0], "completion_tokens": server.usage[1],
                              "total_tokens": sum(server.usage)},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        # socketserver's listen backlog is 5: a 6th connection made at once waited for the client's SYN
        # retransmission (1 s), which delayed calls the tests time.
        class Server(ThreadingHTTPServer):
            request_queue_size = 128

        self.httpd = Server(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        # Polls for shutdown every 0.05 s, not 0.5 s: each test's server stops at once.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
