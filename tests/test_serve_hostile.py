"""`mnist-bp serve` on a network: Host headers, idle and trickling connections, concurrent
large uploads, images meant to break a decoder. The server answers 4xx with a JSON error,
never 500, and goes on."""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from test_hostile import float_tiff, ico_with_huge_png, size_bombs, slow_jpeg
from test_serve import Server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from serve_limits import peak_rss_mb, sixteen_megapixels  # noqa: E402 - the benchmark's own

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    return trained_run / "checkpoints" / "best.npz"


@pytest.fixture(scope="module")
def server(checkpoint):
    s = Server(checkpoint)
    yield s
    s.stop()


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def raw_get(server, host_header: str | None) -> tuple[int, bytes]:
    """GET /healthz with exactly this Host header (None: none at all)."""
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
        head = "GET /healthz HTTP/1.1\r\n"
        if host_header is not None:
            head += f"Host: {host_header}\r\n"
        sock.sendall((head + "Connection: close\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_host_header_must_name_the_loopback(server):
    port = port_of(server)
    for good in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"localhost:{port}",
                 "[::1]", f"[::1]:{port}", "LOCALHOST"):
        assert raw_get(server, good)[0] == 200, good
    for bad in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example",
                "localhost.evil.example", "", "[::1].evil"):
        status, body = raw_get(server, bad)
        assert status == 403, bad
        assert b'"error"' in body
    r = requests.post(f"{server.url}/api/predict", data=b"x", timeout=10,
                      headers={"Host": "rebound.example"})
    assert r.status_code == 403 and "error" in r.json()


def test_allow_host_adds_names(checkpoint):
    s = Server(checkpoint, "--allow-host", "digits.example")
    try:
        assert raw_get(s, "digits.example:80")[0] == 200
        assert raw_get(s, "other.example")[0] == 403
    finally:
        s.stop()


def test_idle_connections_lock_nobody_out_and_trickles_are_cut(server):
    idle = [socket.create_connection(("127.0.0.1", port_of(server)), timeout=30)
            for _ in range(200)]
    try:
        time.sleep(0.5)
        start = time.monotonic()
        r = requests.get(f"{server.url}/healthz", timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert time.monotonic() - start < 5
        # a client sending one byte a second is closed by the request deadline (10 s)
        slow = socket.create_connection(("127.0.0.1", port_of(server)), timeout=30)
        start = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 30:
            try:
                slow.sendall(bytes([byte]))
                slow.settimeout(1.0)
                if slow.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - start < 20
        slow.close()
        # the idle ones were closed too, and the server still answers
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_eight_concurrent_16_megapixel_uploads_stay_under_1_gb(checkpoint):
    body = sixteen_megapixels()
    assert len(body) < 4 * 1024 * 1024
    s = Server(checkpoint)
    try:
        before = peak_rss_mb(s.proc.pid)
        answers = []

        def upload():
            answers.append(requests.post(f"{s.url}/api/predict", data=body, timeout=120))

        threads = [threading.Thread(target=upload) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200] * 8
        assert len({a.json()["predictions"][0]["digit"] for a in answers}) == 1
        peak = peak_rss_mb(s.proc.pid)
        assert peak < 1024, f"peak RSS {peak:.0f} MB (before: {before:.0f} MB)"
    finally:
        s.stop()


def test_images_meant_to_break_a_decoder_get_400_json(server):
    png = io.BytesIO()
    Image.new("L", (64, 64), 128).save(png, "PNG")
    cases = {**{f"bomb.{k}": v for k, v in size_bombs().items()},
             "ico with a huge png": ico_with_huge_png(),
             "nan tiff": float_tiff(np.full((28, 28), np.nan)),
             "truncated png": png.getvalue()[:60],
             "zero bytes of png": b"\x89PNG\r\n\x1a\n",
             "gif header only": b"GIF89a\xff\xff\xff\xff",
             "tiff header only": b"II*\x00\x08\x00\x00\x00\xff\xff",
             "webp riff only": b"RIFF\xff\xff\xff\x7fWEBPVP8L"}
    for name, data in cases.items():
        r = requests.post(f"{server.url}/api/predict", data=data, timeout=60)
        assert r.status_code == 400, (name, r.status_code, r.text[:200])
        assert set(r.json()) == {"error"} and r.json()["error"], name
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200


def small_png(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255  # a "1"
    image[rng.integers(0, 28, 5), rng.integers(0, 28, 5)] = 120
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def raw_upload(server, stop: threading.Event, declared: int, first: int = 0,
               trickle: bool = True) -> None:
    """A client that declares a `declared`-byte body, sends `first` bytes of it, then a
    little now and then (`trickle`) or nothing, until `stop`."""
    try:
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=30) as sock:
            sock.sendall(f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                         f"{declared}\r\n\r\n".encode() + b"\0" * first)
            while not stop.wait(0.2):
                if trickle:
                    sock.sendall(b"\0" * 64)
    except OSError:
        pass


@contextlib.contextmanager
def uploading(server, count: int, declared: int, **how):
    """`count` raw_upload clients running until the block ends, then stopped and joined."""
    stop = threading.Event()
    clients = [threading.Thread(target=raw_upload, args=(server, stop, declared), kwargs=how)
               for _ in range(count)]
    for t in clients:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in clients:
            t.join()


def test_slow_uploads_hold_no_slot_a_normal_prediction_needs(server):
    # clients that declare a large body and send a few bytes now and then
    with uploading(server, 24, 4_000_000):
        time.sleep(1.0)  # all 24 are sending
        for seed in range(3):
            start = time.monotonic()
            r = requests.post(f"{server.url}/api/predict", data=small_png(seed), timeout=30)
            assert r.status_code == 200
            assert time.monotonic() - start < 2.0


def test_a_client_hanging_up_mid_upload_is_one_log_line(checkpoint):
    s = Server(checkpoint)
    try:
        with socket.create_connection(("127.0.0.1", port_of(s)), timeout=10) as sock:
            sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b"\0" * 5000)
            time.sleep(0.3)
        time.sleep(0.5)
        assert requests.post(f"{s.url}/api/predict", data=small_png(), timeout=30
                             ).status_code == 200
    finally:
        s.stop()
    log = s.log
    assert "Traceback" not in log
    assert log.count("a client hung up during its upload to /api/predict") == 1, log


def test_explanations_never_hold_up_predictions(server):
    answers = []

    def explain():
        answers.append(requests.post(f"{server.url}/api/explain", data=small_png(),
                                     timeout=60).status_code)

    threads = [threading.Thread(target=explain) for _ in range(32)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        start = time.monotonic()
        r = requests.post(f"{server.url}/api/predict", data=small_png(1), timeout=30)
        assert r.status_code == 200 and time.monotonic() - start < 1.0
    finally:
        for t in threads:
            t.join()
    assert set(answers) <= {200, 503} and 200 in answers


def test_other_methods_and_paths_get_json_errors(server):
    for method, path, status in (("GET", "/api/explain", 405), ("PUT", "/api/predict", 405),
                                 ("GET", "/nowhere", 404)):
        r = requests.request(method, f"{server.url}{path}", timeout=10)
        assert r.status_code == status
        assert r.headers["content-type"] == "application/json"
        assert set(r.json()) == {"error"}


def test_images_made_to_be_slow_are_cut_off_and_others_answered(server):
    """Six uploads that take half a minute each to decode (progressive JPEGs with thousands
    of scans) are killed at the decode limit with a 400; a drawn digit sent meanwhile never
    queues behind them and is answered at once."""
    from mnist_bp.limits import SERVE_DECODE_SECONDS

    slow = slow_jpeg(4000, 3000)
    answers = {}

    def post(key, body):
        start = time.monotonic()
        r = requests.post(f"{server.url}/api/predict", data=body, timeout=120)
        answers[key] = (r.status_code, r.json(), time.monotonic() - start)

    keys = ("a", "b", "c", "d", "e", "f")
    threads = [threading.Thread(target=post, args=(k, slow)) for k in keys]
    for t in threads:
        t.start()
    time.sleep(0.3)
    post("normal", small_png())
    for t in threads:
        t.join()
    status, _, seconds = answers["normal"]
    assert status == 200 and seconds < 1.5
    for key in keys:  # they queue for the decoding workers, each cut at the limit
        status, body, seconds = answers[key]
        assert status == 400 and body["error"].startswith(
            f"took longer than {SERVE_DECODE_SECONDS:g} s to decode"), body
        assert seconds < 5 * SERVE_DECODE_SECONDS
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_stalled_large_uploads_never_hold_up_a_drawn_digit(server):
    # clients that send a 4 MB body but its last byte, then wait
    with uploading(server, 20, 4 * 1024 * 1024, first=4 * 1024 * 1024 - 1, trickle=False):
        time.sleep(2.0)  # all 20 hold their 4 MB, over the 64 MB budget
        start = time.monotonic()
        r = requests.post(f"{server.url}/api/predict", data=small_png(), timeout=30)
        assert r.status_code == 200 and time.monotonic() - start < 2.0
