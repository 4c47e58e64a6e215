"""`mnist-bp predict`: a trained network on the user's own images.

    mnist-bp predict runs/x/checkpoints/best.npz photo.jpg scans/ --top 3
    mnist-bp predict runs/x/checkpoints/best.npz cheque.png --number --json

From Python (a notebook, or `serve`), load the checkpoint once and predict many times; a
`Predictor` may be shared by threads:

    from mnist_bp.predict import Predictor
    predictor = Predictor("runs/x/checkpoints/best.npz")
    predictor.predict_paths(["seven.png"])[0]["digit"]          # 7
    predictor.predict_image(open("seven.png", "rb").read())      # bytes, a path or an array
    predictor.probabilities(images)                              # (N, 28, 28) in [0, 1] -> (N, 10)

Preprocessing (data/preprocess.py) turns each image into what MNIST looks like; this module
runs the network on the results and shapes the answers.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np

from mnist_bp import checkpoint
from mnist_bp.data.batches import Normalizer
from mnist_bp.data.preprocess import (
    ImageError,
    Prepared,
    prepare,
    prepare_number,
    read_image,
    to_gray,
)
from mnist_bp.fsutil import atomic_write
from mnist_bp.nn.losses import probabilities

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm", ".pbm", ".pnm"}
CHUNK = 2000  # images per forward pass


class Predictor:
    """A checkpoint loaded once, for predicting images.

    The layers write into buffers they own, so the forward pass holds a lock; reading and
    preprocessing images, the slow part, runs in parallel across threads.
    """

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.model, self.cfg, meta = checkpoint.load_model(Path(path))
        self.normalizer = Normalizer(**meta["normalization"])
        self.sigmoid_outputs = self.cfg.model.output_activation == "sigmoid"
        self._lock = threading.Lock()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """`images` `(N, 28, 28)` in [0, 1] (light ink on dark) -> `(N, 10)` float64, rows
        summing to 1 (softmax of the logits; sigmoid outputs divided by their sum)."""
        n = len(images)
        x = self.normalizer.from_unit(np.asarray(images, np.float32).reshape(n, 784),
                                      np.empty((n, 784), np.float32))
        out = np.empty((n, 10), np.float32)
        for start in range(0, n, CHUNK):
            with self._lock:
                out[start:start + CHUNK] = self.model.forward(x[start:start + CHUNK])
        return probabilities(out, self.sigmoid_outputs)

    def prepare(self, source, invert: str = "auto", number: bool = False) -> list[Prepared]:
        """Network inputs of one image (a path, bytes, a file object, a PIL image or a 2-D
        array in [0, 1]): one, or one per digit with `number`."""
        gray = as_gray(source)
        return prepare_number(gray, invert) if number else [prepare(gray, invert)]

    def predict_image(self, source, invert: str = "auto", number: bool = False) -> dict:
        """The prediction for one image (see `predict_paths` for the fields); raises
        ImageError for a bad or blank one."""
        inputs = self.prepare(source, invert, number)
        probs = self.probabilities(np.stack([p.image for p in inputs]))
        return result(inputs, probs, number)

    def predict_paths(self, sources, invert: str = "auto", number: bool = False,
                      names=None) -> list[dict]:
        """One dict per source, in order: `file`, then `digit`, `confidence`, `probabilities`
        (10 floats), `inverted`, `input` (the 28x28 array the network saw); with `number`,
        `number` and `digits` (one dict per digit) instead of `digit`; or `error`.

        The images are prepared one by one and predicted in chunks."""
        names = names or [str(s) for s in sources]
        prepared: list[list[Prepared] | str] = []
        for source in sources:
            try:
                prepared.append(self.prepare(source, invert, number))
            except ImageError as exc:
                prepared.append(str(exc))
        flat = [p.image for item in prepared if not isinstance(item, str) for p in item]
        probs = self.probabilities(np.stack(flat)) if flat else np.empty((0, 10))
        out, at = [], 0
        for name, item in zip(names, prepared, strict=True):
            if isinstance(item, str):
                out.append({"file": name, "error": item})
                continue
            out.append({"file": name, **result(item, probs[at:at + len(item)], number)})
            at += len(item)
        return out


def as_gray(source) -> np.ndarray:
    if isinstance(source, np.ndarray):
        if source.ndim != 2:
            raise ImageError(f"an array image must be 2-D (H, W), not {source.shape}")
        return np.clip(source.astype(np.float32), 0, 1)
    if hasattr(source, "mode") and hasattr(source, "getbands"):  # a PIL image
        return to_gray(source)
    return read_image(source)


def digit_fields(p: np.ndarray) -> dict:
    digit = int(np.argmax(p))
    return {"digit": digit, "confidence": float(p[digit]), "probabilities": p.tolist()}


def result(inputs: list[Prepared], probs: np.ndarray, number: bool) -> dict:
    inverted = bool(inputs[0].inverted)
    if not number:
        return {**digit_fields(probs[0]), "inverted": inverted, "input": inputs[0].image}
    digits = [digit_fields(p) for p in probs]
    return {"number": "".join(str(d["digit"]) for d in digits), "digits": digits,
            "inverted": inverted, "inputs": [p.image for p in inputs]}


# --- the command's edges: inputs, saved inputs, table -----------------------------------------

def expand_inputs(inputs) -> list[tuple[str, object]]:
    """(name, source) per image: files as given, a directory's images sorted by name, `-` for
    standard input (read as bytes). A path that does not exist stays, to be reported."""
    out = []
    for given in inputs:
        if given == "-":
            out.append(("-", sys.stdin.buffer.read()))
            continue
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            out += [(str(Path(given) / p.name), p) for p in files]
        else:
            out.append((given, path))
    return out


def write_inputs(results: list[dict], folder: Path) -> list[Path]:
    """The 28x28 images the network saw, as PNG files named after their inputs (`NAME.png`,
    `NAME-<i>.png` per digit of a number)."""
    from PIL import Image

    written, used = [], set()
    for r in results:
        if "error" in r:
            continue
        stem = "stdin" if r["file"] == "-" else Path(r["file"]).stem
        images = r["inputs"] if "inputs" in r else [r["input"]]
        for i, image in enumerate(images):
            name = f"{stem}-{i}" if "inputs" in r else stem
            base, k = name, 1
            while name in used:
                k += 1
                name = f"{base}~{k}"
            used.add(name)
            path = Path(folder) / f"{name}.png"
            with atomic_write(path) as f:
                Image.fromarray(np.round(image * 255).astype(np.uint8), "L").save(f, "PNG")
            written.append(path)
    return written


def top_k(probabilities, k: int) -> list[tuple[int, float]]:
    order = np.argsort(probabilities)[::-1][:k]
    return [(int(d), float(probabilities[d])) for d in order]


def format_table(results: list[dict], k: int) -> str:
    ok = [r for r in results if "error" not in r]
    width = max([len(r["file"]) for r in ok] + [4])
    number = any("number" in r for r in ok)
    head = f"{'file':<{width}}  {'number' if number else 'digit':<6}  confidence  " \
           f"{'top ' + str(k):<{12 * k}}inverted"
    lines = [head]
    for r in ok:
        parts = r["digits"] if number else [r]
        answer = r["number"] if number else str(r["digit"])
        confidence = float(np.prod([p["confidence"] for p in parts]))
        tops = "  ".join(" ".join(f"{d}:{p:.3f}" for d, p in top_k(p["probabilities"], k))
                         for p in parts)
        lines.append(f"{r['file']:<{width}}  {answer:<6}  {confidence:<10.4f}  "
                     f"{tops:<{12 * k}}{'yes' if r['inverted'] else 'no'}")
    return "\n".join(lines)


def with_top(fields: dict, k: int) -> dict:
    return {**fields, "top": [{"digit": d, "probability": p}
                              for d, p in top_k(fields["probabilities"], k)]}


def to_json(path: str, results: list[dict], k: int) -> dict:
    """The `--json` object: checkpoint, predictions (with the top `k` digits), errors."""
    predictions, errors = [], []
    for r in results:
        if "error" in r:
            errors.append({"file": r["file"], "error": r["error"]})
            continue
        item = {key: value for key, value in r.items() if key not in ("input", "inputs")}
        if "digits" in item:
            item["digits"] = [with_top(d, k) for d in item["digits"]]
        else:
            item = with_top(item, k)
        predictions.append(item)
    return {"checkpoint": path, "predictions": predictions, "errors": errors}
