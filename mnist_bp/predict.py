"""`mnist-bp predict`: a trained network on the user's own images.

    mnist-bp predict runs/x/checkpoints/best.npz photo.jpg scans/ --top 3
    mnist-bp predict runs/x/checkpoints/best.npz cheque.png --number --json

Preprocessing (imageprep.py) turns each image into what MNIST looks like and the loaded
model (model.py: `Model.predict_paths`) runs the network; this module is the command's edges:
which files to read, the table, the JSON, the saved inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mnist_bp.fsutil import write_new
from mnist_bp.imageprep import MAX_IMAGE_BYTES

# a folder's files read as images: the suffixes of imageprep.FORMATS
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


# --- the command's edges: inputs, saved inputs, table -----------------------------------------

def expand_inputs(inputs) -> list[tuple[str, object]]:
    """(name, source) per image: files as given, a directory's images sorted by name, `-` for
    standard input (read as bytes). A path that does not exist stays, to be reported."""
    out = []
    for given in inputs:
        if given == "-":  # one byte over the limit is enough for read_image to refuse it
            out.append(("-", sys.stdin.buffer.read(MAX_IMAGE_BYTES + 1)))
            continue
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            out += [(str(Path(given) / p.name), p) for p in files]
        else:
            out.append((given, path))
    return out


def write_inputs(results: list, folder: Path) -> list[Path]:
    """The 28x28 images the network saw, as PNG files named after their inputs (`NAME.png`,
    `NAME-<i>.png` per digit of a number). An existing file is never replaced, an input
    included: a taken name gets `~2`, `~3`..."""
    import io

    from PIL import Image

    written = []
    for r in results:
        if not r.ok:
            continue
        stem = "stdin" if r.file == "-" else Path(r.file).stem
        for i, image in enumerate(r.inputs):
            buf = io.BytesIO()
            Image.fromarray(np.round(image * 255).astype(np.uint8), "L").save(buf, "PNG")
            name = f"{stem}-{i}" if r.number is not None else stem
            written.append(write_new(folder, name, ".png", buf.getvalue()))
    return written


def top_k(probabilities, k: int) -> list[tuple[int, float]]:
    order = np.argsort(probabilities)[::-1][:k]
    return [(int(d), float(probabilities[d])) for d in order]


def shown_name(name: str) -> str:
    """A file name as one table cell: control characters (a newline in a name) escaped."""
    return name if name.isprintable() else repr(name)[1:-1]


def format_table(results: list, k: int) -> str:
    """One row per read image; each column as wide as its widest cell (a number's top `k`
    lists every digit's)."""
    ok = [{**r, "file": shown_name(r.file)} for r in results if r.ok]
    number = any("number" in r for r in ok)
    rows = []
    for r in ok:
        parts = r["digits"] if number else [r]
        tops = "  ".join(" ".join(f"{d}:{p:.3f}" for d, p in top_k(p["probabilities"], k))
                         for p in parts)
        rows.append((r["file"], r["number"] if number else str(r["digit"]),
                     float(np.prod([p["confidence"] for p in parts])), tops,
                     "yes" if r["inverted"] else "no"))
    width = max([len(row[0]) for row in rows] + [4])
    answers = max([len(row[1]) for row in rows] + [6])
    top_width = max([len(row[3]) + 2 for row in rows] + [12 * k])
    lines = [f"{'file':<{width}}  {'number' if number else 'digit':<{answers}}  confidence  "
             f"{'top ' + str(k):<{top_width}}inverted"]
    for file, answer, confidence, tops, inverted in rows:
        lines.append(f"{file:<{width}}  {answer:<{answers}}  {confidence:<10.4f}  "
                     f"{tops:<{top_width}}{inverted}")
    return "\n".join(lines)


def with_top(fields: dict, k: int) -> dict:
    return {**fields, "top": [{"digit": d, "probability": p}
                              for d, p in top_k(fields["probabilities"], k)]}


def to_json(path: str, results: list, k: int) -> dict:
    """The `--json` object: checkpoint, predictions (with the top `k` digits), errors."""
    predictions, errors = [], []
    for r in results:
        if not r.ok:
            errors.append({"file": r.file, "error": r.error})
            continue
        item = dict(r)
        if "digits" in item:
            item["digits"] = [with_top(d, k) for d in item["digits"]]
        else:
            item = with_top(item, k)
        predictions.append(item)
    return {"checkpoint": path, "predictions": predictions, "errors": errors}
