"""The server's limits, measured: peak memory under concurrent large uploads, and how fast
it answers while hundreds of idle connections are open (docs/reliability.md).

    python benchmarks/serve_limits.py runs/default/checkpoints/best.npz [--uploads 8] [--idle 200]

Starts `mnist-bp serve` on a free port on 127.0.0.1, then (1) sends `--uploads` concurrent
uploads of a 16-megapixel RGBA PNG (4000 x 4000, under the 4 MB body limit) and reads the
server's peak resident memory (VmHWM) before and after; (2) opens `--idle` connections that
send nothing and times GET /healthz from a new client, five times.
"""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import requests
from PIL import Image


def sixteen_megapixels() -> bytes:
    a = np.full((4000, 4000, 4), 230, np.uint8)
    a[..., 3] = 128
    a[800:3200, 1800:2200, :3] = 20
    a[800:3200, 1800:2200, 3] = 255
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--uploads", type=int, default=8)
    ap.add_argument("--idle", type=int, default=200)
    args = ap.parse_args()
    proc = subprocess.Popen([sys.executable, "-m", "mnist_bp", "serve", args.checkpoint,
                             "--port", "0"], stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip().removeprefix("serving on ")
    port = int(url.rsplit(":", 1)[1])
    try:
        body = sixteen_megapixels()
        before = peak_rss_mb(proc.pid)
        codes = []
        start = time.monotonic()
        threads = [threading.Thread(target=lambda: codes.append(requests.post(
            f"{url}/api/predict", data=body, timeout=300).status_code))
            for _ in range(args.uploads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"{args.uploads} concurrent uploads of a 16-megapixel PNG ({len(body):,} bytes): "
              f"answers {sorted(set(codes))}, {time.monotonic() - start:.1f} s; server peak "
              f"RSS {before:.0f} MB before, {peak_rss_mb(proc.pid):.0f} MB after")
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.idle)]
        time.sleep(0.5)
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
            times.append(time.monotonic() - t0)
        print(f"GET /healthz with {args.idle} idle connections open: "
              f"{1000 * min(times):.1f}-{1000 * max(times):.1f} ms (5 requests)")
        for sock in idle:
            sock.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
