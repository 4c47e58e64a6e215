"""Users' images decoded where a time and a memory limit can stop them: worker processes.

No header check foresees every decoder pathology: a progressive JPEG with thousands of scans
costs by its scans, not its pixels, and a small file can keep a decoder busy for minutes.
So `predict`, `serve` and the API's paths read and preprocess each image
(`imageprep.inputs_of`) in a worker process of a `Decoders` pool (small PNG, GIF and BMP
images of one digit excepted: `linear_and_small`); a worker that takes longer
than its time limit is killed and replaced, and that image gets one ImageError (one line in
`predict`, a 400 in `serve`) while everything else goes on. A worker's address space is
limited too (`MEMORY`), so a decoder that allocates without end fails alone.

Requests and answers between the processes are bytes (a JSON header, then raw bytes: the
image or its path; the 28x28 float32 inputs back): nothing is pickled. Workers are forked
from a small server process started once (multiprocessing's "forkserver", with imageprep
imported in advance), so a replacement costs milliseconds and never forks a process that
runs threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from pathlib import Path

import numpy as np

from mnist_bp import limits
from mnist_bp.data.registry import IMAGE_SIDE
from mnist_bp.imageprep import Cuts, ImageError, Prepared, TooManyPixels, inputs_of

MEMORY = limits.DECODE_MEMORY  # address space of one worker (limits.py says why)
_HEADER = 4  # bytes of the JSON header's length, big-endian, before the header


def _message(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return len(head).to_bytes(_HEADER, "big") + head + payload


def _parse(data: bytes) -> tuple[dict, memoryview]:
    size = int.from_bytes(data[:_HEADER], "big")
    view = memoryview(data)
    return json.loads(bytes(view[_HEADER:_HEADER + size])), view[_HEADER + size:]


def _answer(header: dict, arrays: memoryview) -> list[Prepared]:
    """A worker's prepared inputs from its answer, each array a copy (an input kept in an
    answer holds no other input's buffer). The worker decoded an image from outside: its
    answer is checked to add up (ValueError, TypeError, KeyError, IndexError or
    OverflowError if not)."""
    if len(arrays) % (IMAGE_SIDE * IMAGE_SIDE * 4):
        raise ValueError("a partial image")
    images = np.frombuffer(arrays, "<f4").reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    inputs = header["inputs"]
    prepared, at = [], len(inputs)
    for i, (inv, light, offered) in enumerate(inputs):
        cuts = None
        if offered is not None:
            shapes = np.array(offered[0], np.float32).reshape(-1, 2)
            ways = np.array(offered[1], np.int64).reshape(-1, 3)
            clean = np.array(offered[2], bool).reshape(-1)
            if (not len(shapes) or not len(ways) or len(clean) != len(ways)
                    or at + len(shapes) > len(images) or (ways[:, :2] < 0).any()
                    or (ways < -1).any() or (ways >= len(shapes)).any()):
                raise ValueError("cuts that do not match their pieces")
            cuts = Cuts(images[at:at + len(shapes)].astype(np.float32), shapes, ways, clean)
            at += len(shapes)
        prepared.append(Prepared(images[i].astype(np.float32), bool(inv), bool(light), cuts))
    if at != len(images):
        raise ValueError("images that no input has")
    return prepared


def _worker(conn, memory: int) -> None:
    """A worker's loop: a request in, the prepared inputs (or the error) out, until EOF."""
    from mnist_bp.nn import blas

    # one image at a time, on one core: OpenBLAS's own threads would only compete (and, under
    # the address-space limit, made each image 2.5 ms slower)
    blas.set_threads(1)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (ImportError, ValueError, OSError):
        pass
    while True:
        try:
            request, payload = _parse(conn.recv_bytes())
        except (EOFError, OSError):
            return
        source = os.fsdecode(bytes(payload)) if request["kind"] == "path" else bytes(payload)
        try:
            inputs = inputs_of(source, request["invert"], request["number"],
                               max_pixels=request["max_pixels"])
            # each input's flags and its cuts' shapes and ways (their pieces' images follow
            # the inputs')
            header = {"inputs": [[bool(p.inverted), bool(p.light_background),
                                  None if p.cuts is None else
                                  [p.cuts.shapes.tolist(), p.cuts.ways.tolist(),
                                   p.cuts.clean.tolist()]]
                                 for p in inputs]}
            arrays = b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in
                              [p.image for p in inputs] +
                              [p.cuts.images for p in inputs if p.cuts is not None])
            conn.send_bytes(_message(header, arrays))
        except ImageError as exc:
            conn.send_bytes(_message({"error": str(exc)}))
        except MemoryError:
            conn.send_bytes(_message({"error": "not enough memory to read it; scale it "
                                               "down"}))


# Formats whose decoding costs time in proportion to their bytes and pixels, nothing else: a
# PNG (zlib, Adam7's seven passes at most), a GIF's first frame (LZW), a BMP (raw or RLE).
# Up to FAST_PIXELS they decode in well under 20 ms and are prepared in the calling process,
# saving a drawn digit the 2 ms a worker costs; JPEG (whose progressive scans cost per scan),
# TIFF, WebP and everything larger go to the workers.
LINEAR_FORMATS = {b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP"}


def linear_and_small(source) -> bool:
    """Whether `source` (bytes or a path) is a PNG, GIF or BMP of at most FAST_DECODE_PIXELS
    and FAST_DECODE_BYTES, from its size and header alone (a few dozen bytes; anything
    unusual: no). A file can still turn out larger once opened: `prepare_here`."""
    import struct

    try:
        if isinstance(source, (bytes, bytearray)):
            if len(source) > limits.FAST_DECODE_BYTES:
                return False
            head = bytes(source[:32])
        else:
            size = limits.regular_size(source)
            if size is None or size > limits.FAST_DECODE_BYTES:
                return False
            with open(source, "rb") as f:
                head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
        elif head[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", head[6:10])
        elif head[:2] == b"BM" and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            height = abs(height)
        else:
            return False
        return 0 < width * height <= limits.FAST_DECODE_PIXELS
    except (OSError, struct.error, limits.UserError):
        return False


def skips_worker(source, number: bool) -> bool:
    """Whether `source` (bytes or a path) is prepared in the calling process: one digit in
    a small PNG, GIF or BMP (`linear_and_small`). A row of digits costs by its marks and
    cuts, not its pixels: always a worker's."""
    return not number and linear_and_small(source)


def prepare_here(source, invert: str, number: bool, max_pixels: int | None = None):
    """`inputs_of` in the calling process, for a source `linear_and_small` found small; None
    when the opened image is larger than FAST_DECODE_PIXELS after all (a GIF's first frame
    can grow its canvas past the header's size), for a worker to take."""
    limit = limits.FAST_DECODE_PIXELS if max_pixels is None else min(
        max_pixels, limits.FAST_DECODE_PIXELS)
    try:
        return inputs_of(source, invert, number, max_pixels=limit)
    except TooManyPixels:
        return None


class _Process:
    """One worker process and our end of its pipe."""

    def __init__(self, ctx, memory: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, memory), daemon=True,
                                name="mnist-bp-decoder")
        with _without_main_file():
            self.proc.start()
        child.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class Decoders:
    """`workers` processes preparing images, each with `seconds` per image at most.
    Thread-safe: a caller waits for a free worker."""

    def __init__(self, workers: int = 2, seconds: float = limits.DECODE_SECONDS,
                 memory: int = MEMORY):
        self.seconds, self.memory = seconds, memory
        self.size = workers
        self.idle: queue.Queue = queue.Queue()
        self.started = 0
        self.lock = threading.Lock()
        self.ctx = None

    def _context(self):
        if self.ctx is None:
            import multiprocessing

            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(list(PRELOAD))
            _start_forkserver()
        return self.ctx

    def _get(self) -> _Process:
        with self.lock:
            if self.started < self.size and self.idle.empty():
                self.started += 1
                return _Process(self._context(), self.memory)
        return self.idle.get()

    def prepare(self, source, invert: str = "auto", number: bool = False,
                max_pixels: int | None = None) -> list[Prepared]:
        """`imageprep.inputs_of(source, ...)` in a worker: a path or bytes (anything else,
        arrays and PIL images, is prepared here: nothing to decode)."""
        here = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            kind, payload = "bytes", bytes(source)
            if skips_worker(payload, number):
                here = prepare_here(payload, invert, number, max_pixels)
        elif isinstance(source, (str, os.PathLike)):  # absolute: workers have their own cwd
            kind, payload = "path", os.fsencode(os.path.abspath(Path(source)))
            if skips_worker(source, number):
                here = prepare_here(source, invert, number, max_pixels)
        else:
            return inputs_of(source, invert, number, max_pixels=max_pixels)
        if here is not None:
            return here
        request = _message({"kind": kind, "invert": invert, "number": number,
                            "max_pixels": max_pixels}, payload)
        worker = self._get()
        try:
            worker.conn.send_bytes(request)
            if not worker.conn.poll(self.seconds):
                raise TimeoutError
            answer = worker.conn.recv_bytes()
        except TimeoutError:
            self._replace(worker)
            raise ImageError(f"took longer than {self.seconds:g} s to decode and prepare (an "
                             f"image made to be slow?); save it again as a plain PNG or JPEG"
                             ) from None
        except (EOFError, OSError):
            self._replace(worker)
            raise ImageError("its decoder crashed or ran out of memory; save it again as a "
                             "plain PNG or JPEG") from None
        try:
            header, arrays = _parse(answer)
            if not isinstance(header, dict):
                raise TypeError("no header")
            error = ImageError(str(header["error"])) if "error" in header else None
            if error is None:
                prepared = _answer(header, arrays)
        except (ValueError, TypeError, KeyError, IndexError, ArithmeticError, RecursionError):
            # the worker decoded an image from outside: an answer that does not parse or add
            # up ends that worker, and that image gets one line
            self._replace(worker)
            raise ImageError("its decoder gave an answer that does not add up; save it again "
                             "as a plain PNG or JPEG") from None
        self.idle.put(worker)
        if error is not None:
            raise error
        return prepared

    def _replace(self, worker: _Process) -> None:
        worker.kill()
        self.idle.put(_Process(self._context(), self.memory))

    def close(self) -> None:
        while True:
            try:
                self.idle.get_nowait().kill()
            except queue.Empty:
                return


@contextlib.contextmanager
def _without_main_file():
    """multiprocessing (fork server and each process it starts) would run `__main__`'s file
    again in the worker: a script without an `if __name__ == "__main__":` guard would run
    twice. The workers need only this module, so the file is hidden while they start."""
    import sys

    main = sys.modules.get("__main__")
    hidden = main is not None and hasattr(main, "__file__")
    saved = main.__file__ if hidden else None
    try:
        if hidden:
            del main.__file__
        yield
    finally:
        if hidden:
            main.__file__ = saved


# Imported once in the forkserver, so that every worker forked from it has them: imageprep
# imports its libraries when first used, and a worker must not spend its time limit (2 s in
# serve) importing them (skimage.morphology alone takes 0.1 s warm, more from a cold disk).
PRELOAD = ("mnist_bp.decoding", "PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin",
           "scipy.ndimage", "skimage.measure", "skimage.morphology", "skimage.segmentation")


def _start_forkserver() -> None:
    from multiprocessing import forkserver

    with _without_main_file():
        forkserver.ensure_running()


_shared: dict[tuple, Decoders] = {}
_shared_lock = threading.Lock()


def shared(workers: int = 2, seconds: float | None = None) -> Decoders:
    """One pool per (workers, seconds) in this process, started on first use."""
    seconds = limits.DECODE_SECONDS if seconds is None else seconds
    with _shared_lock:
        key = (workers, seconds)
        if key not in _shared:
            _shared[key] = Decoders(workers, seconds)
        return _shared[key]
