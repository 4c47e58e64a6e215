"""Latency of `mnist-bp serve`'s POST /api/predict under concurrent clients.

    python benchmarks/serve_latency.py CHECKPOINT [--clients 16] [--requests 800]

Starts `mnist-bp serve CHECKPOINT --port 0` as a user would, sends drawn-digit PNGs (280x280,
black on white, like the page's canvas) from CLIENTS threads, each request timed from send to
parsed answer, and prints p50/p90/p99 and the throughput. Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image, ImageDraw


def canvases(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = Image.new("L", (280, 280), 255)
        points = [tuple(p) for p in rng.integers(40, 240, (4, 2))]
        ImageDraw.Draw(im).line(points, fill=0, width=18, joint="curve")
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=800)
    args = parser.parse_args()
    proc = subprocess.Popen([sys.executable, "-m", "mnist_bp", "serve", args.checkpoint,
                             "--port", "0"], stdout=subprocess.PIPE, text=True)
    host, port = proc.stdout.readline().strip().removeprefix("serving on http://").split(":")
    bodies = canvases(64)
    times: list[float] = []
    lock = threading.Lock()
    counter = iter(range(args.requests))

    def client():
        # one keep-alive connection per client; http.client sends a bytes body in the same
        # write as the headers (no Nagle / delayed-ACK stall, which a plain requests loop hits)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)

        def post(body):
            conn.request("POST", "/api/predict?invert=no", body=body,
                         headers={"Content-Type": "image/png"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200, answer

        post(bodies[0])  # warm up
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                conn.close()
                return
            start = time.perf_counter()
            post(bodies[i % len(bodies)])
            with lock:
                times.append(time.perf_counter() - start)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    proc.terminate()
    proc.wait(timeout=20)
    ms = np.array(times) * 1000
    print(f"{len(ms)} requests, {args.clients} clients: p50 {np.percentile(ms, 50):.1f} ms, "
          f"p90 {np.percentile(ms, 90):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
          f"{len(ms) / wall:.0f} requests/s")


if __name__ == "__main__":
    main()
