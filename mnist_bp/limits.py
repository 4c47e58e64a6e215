"""Every limit on what comes from outside, in one table with the reason for each value, and
the one reader of files from outside that enforces them.

Files a user hands us (configs, search spaces, IDX data, images, checkpoints, a run's
metrics and summaries read back by `report`) can be anything: a FIFO that blocks the reader
for ever, a device, a file that grows while we read it, a gzip or PNG that expands a
thousandfold. `read_bounded` opens a path without blocking, checks the *open* file (no
stat-then-read race), refuses anything but a regular file, and reads at most limit + 1
bytes: one byte more than allowed is enough to refuse, and nothing larger is ever read.

The values are chosen to agree with each other: the largest checkpoint holds the largest
network `config.py` accepts (MAX_PARAMETERS), with Adam's two moments; the largest IDX file
holds the whole of Fashion-MNIST's training images; the server's uploads are one 16-megapixel
photo. docs/reliability.md shows this table; tests/test_docs.py checks that page against it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mnist_bp.errors import UserError

MB = 1 << 20

# --- configs and search spaces ---------------------------------------------------------------
CONFIG_BYTES = 1_000_000
YAML_DEPTH = 20
MAX_PARAMETERS = 50_000_000
MAX_LAYERS = 64
LARGE_COUNT = 1_000_000
# --- data --------------------------------------------------------------------------------------
IDX_BYTES = 160 * MB
DOWNLOAD_UNKNOWN_BYTES = 256 * MB
# --- checkpoints -------------------------------------------------------------------------------
CHECKPOINT_ENTRIES = 1_000
CHECKPOINT_ARRAY_BYTES = 4 * MAX_PARAMETERS
CHECKPOINT_META_CHARS = 16 * MB
CHECKPOINT_TOTAL_BYTES = 3 * 4 * MAX_PARAMETERS + CHECKPOINT_META_CHARS
WEIGHT_MAGNITUDE = 1e6
# --- run files read back -------------------------------------------------------------------
RUN_FILE_BYTES = 64 * MB
# --- images --------------------------------------------------------------------------------------
IMAGE_BYTES = 200 * MB
IMAGE_MAX_PIXELS = 50_000_000
IMAGE_MAX_SIDE = 20_000
NUMBER_DIGITS = 20
NUMBER_MARKS = 500
DECODE_SECONDS = 10.0
FAST_DECODE_PIXELS = 1_000_000
FAST_DECODE_BYTES = 512 * 1024
DECODE_MEMORY = 3 << 30
# --- the server ------------------------------------------------------------------------------
UPLOAD_BYTES = 4 * MB
UPLOAD_PIXELS = 16_000_000
UPLOAD_BUDGET = 16 * UPLOAD_BYTES
UPLOAD_FREE_BYTES = 64 * 1024
UPLOAD_WAIT = 5.0
SERVE_DECODE_SECONDS = 2.0
SERVE_DECODERS = 2
EXPLAINS_WAITING = 8
REQUEST_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
CONNECTIONS = 1000
# --- explain ------------------------------------------------------------------------------------
EXPLAIN_STEPS = 4096
EXPLAIN_IMAGES = 1_000_000

# name -> (what it bounds, why this value). The one table docs/reliability.md shows.
TABLE = {
    "CONFIG_BYTES": ("bytes of a config or search-space file",
                     "a config is a few hundred bytes; a space with 100,000 choices still fits, "
                     "and is validated in seconds"),
    "YAML_DEPTH": ("levels of nesting in YAML",
                   "a config has three; deeper nesting only serves to exhaust the parser"),
    "MAX_PARAMETERS": ("weights and biases of a network (config)",
                       "200 MB in float32: 27 times mnist-best.yaml's network, trained in "
                       "memory with its optimizer state on any laptop"),
    "MAX_LAYERS": ("hidden layers of a network", "an MLP deeper than this does not train"),
    "LARGE_COUNT": ("epochs, batch sizes and other counts in a config",
                    "a million is beyond any run on a CPU, and keeps every product of counts "
                    "in range"),
    "IDX_BYTES": ("bytes of one IDX file, after decompression (gzip bombs)",
                  "Fashion-MNIST's training images are 47 MB; room for larger drop-ins"),
    "DOWNLOAD_UNKNOWN_BYTES": ("bytes fetched for a file without a recorded size",
                               "above every official file; a mirror sending more is cut off"),
    "CHECKPOINT_ENTRIES": ("arrays in a checkpoint",
                           "a 64-layer network has 128 parameters and 256 optimizer arrays"),
    "CHECKPOINT_ARRAY_BYTES": ("bytes of one array in a checkpoint",
                               "4 x MAX_PARAMETERS: no layer is larger than the whole largest "
                               "network"),
    "CHECKPOINT_META_CHARS": ("characters of a checkpoint's JSON metadata",
                              "a config and a 10,000-epoch history are well under 16 MB"),
    "CHECKPOINT_TOTAL_BYTES": ("bytes of a checkpoint, decompressed",
                               "the largest network with Adam's two moments (3 x 4 x "
                               "MAX_PARAMETERS), plus its metadata"),
    "WEIGHT_MAGNITUDE": ("largest absolute weight in a checkpoint",
                         "trained weights are of order 1; far larger ones overflow float32 "
                         "outputs"),
    "RUN_FILE_BYTES": ("bytes of a run's config.yaml, metrics.jsonl or summary.json read back",
                       "a 10,000-epoch run's metrics are 3 MB"),
    "IMAGE_BYTES": ("bytes of an image file or of standard input (predict, explain)",
                    "a 50-megapixel photo is about 30 MB even uncompressed as PNG"),
    "IMAGE_MAX_PIXELS": ("pixels of an image, from its header, before decoding (predict)",
                     "a 50-megapixel camera's photo; decompression bombs declare more"),
    "IMAGE_MAX_SIDE": ("pixels along an image's longer side",
                   "decoders pay per line: 1 x 16,000,000 is costly and no photo"),
    "NUMBER_DIGITS": ("digits read in one image with --number",
                      "a number, not a page of text: each digit costs a few milliseconds of "
                      "stroke normalisation"),
    "NUMBER_MARKS": ("separate marks (pieces of ink) in one image with --number",
                     "20 digits of a few strokes each, broken or dotted; each mark costs a "
                     "pass, and a pattern of dots made to be slow has tens of thousands"),
    "DECODE_SECONDS": ("seconds to decode and prepare one image (predict, explain, API)",
                       "a 50-megapixel photo takes about 1 s; a file made to be slow is "
                       "killed with its worker process"),
    "FAST_DECODE_PIXELS": ("pixels up to which a PNG, GIF or BMP of one digit is decoded "
                           "in the calling process, not a worker (a row of digits, which "
                           "costs by its marks and cuts, always goes to a worker)",
                           "their decoding is linear in bytes and pixels: a megapixel takes "
                           "under 20 ms; a worker would add 2 ms to each drawn digit"),
    "FAST_DECODE_BYTES": ("bytes up to which such a PNG, GIF or BMP is decoded in the calling "
                          "process", "a drawn digit is a few kB; a file of millions of tiny "
                          "chunks or comment blocks costs time and memory per byte, and gets "
                          "a worker's limits"),
    "DECODE_MEMORY": ("bytes of address space of one decoding worker process",
                      "four decoded 50-megapixel images; a decoder that allocates without end "
                      "fails alone"),
    "UPLOAD_BYTES": ("bytes of one request body (serve)",
                     "a phone's photo; larger is 413"),
    "UPLOAD_PIXELS": ("pixels of one uploaded image, from its header (serve)",
                      "a 16-megapixel photo decodes in 0.3 s; bounds the server's memory"),
    "UPLOAD_BUDGET": ("bytes of request bodies held in memory at once, over all requests",
                      "16 full uploads; a slow client holds only the bytes it sent"),
    "UPLOAD_FREE_BYTES": ("bytes of each request body outside that budget",
                          "a drawn digit is a few kB: it never waits behind stalled large "
                          "uploads; at most CONNECTIONS x 64 kB = 64 MB more"),
    "UPLOAD_WAIT": ("seconds an upload waits for room in that budget (then 503)",
                    "uploads can never wait on each other for ever"),
    "SERVE_DECODE_SECONDS": ("seconds to decode and prepare one upload (serve; then 400)",
                             "a 16-megapixel photo takes 0.3 s; a normal request waits at "
                             "most this long behind a slow one"),
    "SERVE_DECODERS": ("worker processes decoding uploads", "one per core"),
    "EXPLAINS_WAITING": ("explanations queued or running at once (serve; more get 503)",
                         "each takes about 20 ms a network; they have a thread of their own"),
    "REQUEST_SECONDS": ("seconds for a client to send a whole request",
                        "idle and trickling connections cannot pile up"),
    "KEEP_ALIVE_SECONDS": ("seconds an idle kept-alive connection stays open",
                           "a page's next prediction comes within a second"),
    "CONNECTIONS": ("connections held at once (more get 503)",
                    "far more than a page and its users need; bounds file descriptors"),
    "EXPLAIN_STEPS": ("integrated gradients' steps", "completeness within 0.005 needs at "
                                                     "most a few hundred"),
    "EXPLAIN_IMAGES": ("images in one call of model.explain / predict (API)",
                       "3 GB of float32 input; pass more in parts"),
}


def shown(name: str) -> str:
    """A limit's value as docs/reliability.md writes it: 1,000,000; 4 MB; 2 s."""
    value = globals()[name]
    if name.endswith("SECONDS") or name.endswith("WAIT"):
        return f"{value:g} s"
    if (name.endswith("BYTES") or name.endswith("BUDGET") or name.endswith("MEMORY")) \
            and value % MB == 0:
        return f"{value // MB:,} MB"
    if isinstance(value, float):
        return f"{value:,g}"
    return f"{value:,}"


def table_markdown() -> str:
    """The limits table of docs/reliability.md."""
    rows = ["| limit | value | bounds | why this value |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {shown(name)} | {what} | {why} |"
             for name, (what, why) in TABLE.items()]
    return "\n".join(rows)


class TooLarge(UserError):
    pass


def regular_size(path: Path | str) -> int | None:
    """The size of the regular file at `path` (opened without blocking and checked as
    opened), None where there is nothing; UserError for anything that is there but is no
    regular file (a FIFO, a device, a folder)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise UserError(f"{path}: not a regular file (a folder); move it away") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}: not a regular file (a FIFO, a device or a folder); "
                            f"move it away")
        return info.st_size
    finally:
        os.close(fd)


def read_bounded(path: Path | str, limit: int, what: str = "file",
                 fix: str = "is it the right file?") -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them; a UserError
    "PATH: problem; fix" for anything else: missing, not a regular file (a FIFO, a device, a
    folder), unreadable, or larger than `limit` (found from the open file, and by reading one
    byte more than allowed, whatever the file says of itself)."""
    path = Path(path)

    def refuse(problem: str, kind=UserError):
        return kind(f"{path}: {problem}; {fix}")

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise refuse(f"{what} not found") from None
    except IsADirectoryError:
        raise refuse("not a regular file (a folder)") from None
    except OSError as exc:
        raise refuse(f"cannot read it ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise refuse("not a regular file (a folder)")
        if not stat.S_ISREG(info.st_mode):
            raise refuse("not a regular file (a FIFO or a device?)")
        if info.st_size > limit:
            raise refuse(f"{info.st_size:,} bytes is more than the {limit:,} a {what} may "
                         f"have", TooLarge)
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise refuse(f"more than the {limit:,} bytes a {what} may have (it grew while "
                         f"read?)", TooLarge)
        return b"".join(chunks)
    except OSError as exc:
        raise refuse(f"cannot read it ({exc.strerror})") from None
    finally:
        os.close(fd)
