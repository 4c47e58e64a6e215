"""A local HTTP server on 127.0.0.1 with misbehaving modes, for download tests.

URLs look like http://127.0.0.1:PORT/<mode>/<filename>. Modes:
  good      serve the file, honouring Range requests
  e404/e500 answer with that status
  hang      send nothing until the client gives up (bounded sleep)
  corrupt   serve the file with one byte flipped
  trunc     first request for a file: full Content-Length, half the body, then close;
            later requests honour Range (so a client can resume)
  norange   like trunc, but later requests ignore Range and send the whole file
Requests are recorded as (mode, filename, Range header or None).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class FileServer:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []
        self.seen: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, mode=None, filename=None) -> int:
        return sum(1 for m, f, _ in self.requests
                   if (mode is None or m == mode) and (filename is None or f == filename))

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path  # absolute-form too (requests through a proxy)
        _, mode, filename = path.split("/", 2)
        range_header = h.headers.get("Range")
        with self.lock:
            self.requests.append((mode, filename, range_header))
            first = (mode, filename) not in self.seen
            self.seen.add((mode, filename))
        body = self.files.get(filename)
        if body is None or mode == "e404":
            return self._status(h, 404)
        if mode == "e500":
            return self._status(h, 500)
        if mode == "hang":
            time.sleep(1.5)  # longer than the client's timeout; bounded
            return self._status(h, 503)
        if mode == "endless":  # no Content-Length, and far more bytes than the file has
            h.send_response(200)
            h.end_headers()
            h.close_connection = True
            h.wfile.write(body)
            for _ in range(64):  # bounded: 4 MB more, then the connection closes
                h.wfile.write(b"\0" * 65536)
            return
        if mode == "corrupt":
            body = body[:10] + bytes([body[10] ^ 0xFF]) + body[11:]
        if mode in ("trunc", "norange") and first:
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        if range_header and mode != "norange":
            start = int(range_header.split("=")[1].split("-")[0])
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            h.send_header("Content-Length", str(len(body) - start))
            h.end_headers()
            h.wfile.write(body[start:])
            return
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    @staticmethod
    def _status(h, code):
        h.send_response(code)
        h.send_header("Content-Length", "0")
        h.end_headers()
