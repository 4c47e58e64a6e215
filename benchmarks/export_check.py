"""Check exported ONNX models in the runtimes people already have (docs/export.md's table).

    python benchmarks/export_check.py CKPT... --data-dir ./data
    python benchmarks/export_check.py CKPT... --data-dir ./data --runtimes all --markdown

Each checkpoint is exported to ONNX in a temporary folder and run on the whole test set of
its dataset (pixels / 255, as MNIST stores them) by:
- `onnxruntime`: the onnxruntime installed beside mnist-bp (the export extra);
- `reference`: onnx's own `ReferenceEvaluator` (numpy, from the onnx package);
- `onnxruntime-1.16`, `opencv`: with `--runtimes all` (or named), each in a throwaway venv of
  its own under `--venvs` (default: a temporary folder), built here with pip: onnxruntime
  1.16.3 (numpy < 2, as it was built against), and OpenCV's `cv2.dnn` (opencv-python-headless),
  the newest 4.x and the newest release.
For every runtime it prints the digits that differ from mnist-bp's, the largest absolute
difference of the probabilities, and the accuracy next to `evaluate`'s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mnist_bp.data.datadir import load_dataset
from mnist_bp.model import load

# runtime -> the pip requirements of its venv
VENV_RUNTIMES = {
    "onnxruntime-1.16": ["onnxruntime==1.16.3", "numpy<2"],
    "opencv-4": ["opencv-python-headless>=4.8,<5", "numpy<2.3"],
    "opencv": ["opencv-python-headless>=5", "numpy"],
}
LOCAL_RUNTIMES = ("onnxruntime", "reference")

# Run inside a runtime's venv: model, images.npy -> probabilities.npy, digits.npy, version
CHILD = r'''
import json, sys
import numpy as np
runtime, model, images, out = sys.argv[1:5]
x = np.load(images)
if runtime.startswith("onnxruntime"):
    import onnxruntime as ort
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    probs, digits = session.run(None, {"images": x})
    version = ort.__version__
else:
    import cv2
    net = cv2.dnn.readNetFromONNX(model)
    probs, digits = [], []
    for start in range(0, len(x), 1000):   # OpenCV's dnn keeps whole batches in its blobs
        net.setInput(x[start:start + 1000], "images")
        p, d = net.forward(["probabilities", "digit"])
        probs.append(np.asarray(p, np.float32)), digits.append(np.asarray(d).reshape(-1))
    probs, digits = np.concatenate(probs), np.concatenate(digits)
    version = cv2.__version__
np.save(out + "-probabilities.npy", probs)
np.save(out + "-digits.npy", np.asarray(digits, np.int64))
print(json.dumps({"version": version}))
'''


def venv_python(venvs: Path, runtime: str) -> Path:
    """The python of `runtime`'s venv, built (once) with its requirements."""
    folder = venvs / runtime
    python = folder / "bin" / "python"
    if not (folder / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *VENV_RUNTIMES[runtime]],
                       check=True, capture_output=True)
        (folder / ".installed").touch()
    return python


def run_local(runtime: str, model_path: Path, images: np.ndarray):
    import onnx
    if runtime == "onnxruntime":
        import onnxruntime as ort
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        probs, digits = session.run(None, {"images": images})
        return probs, digits, ort.__version__
    from onnx.reference import ReferenceEvaluator
    probs, digits = ReferenceEvaluator(onnx.load(model_path)).run(None, {"images": images})
    return probs, digits, onnx.__version__


def run_venv(runtime: str, venvs: Path, model_path: Path, images_path: Path):
    out = str(images_path.parent / runtime)
    done = subprocess.run([str(venv_python(venvs, runtime)), "-c", CHILD, runtime,
                           str(model_path), str(images_path), out],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    version = json.loads(done.stdout.strip().splitlines()[-1])["version"]
    return np.load(out + "-probabilities.npy"), np.load(out + "-digits.npy"), version


def check(checkpoint: Path, data_dir, runtimes: list[str], venvs: Path) -> list[dict]:
    model = load(checkpoint)
    test = load_dataset(model.cfg.data.dataset, data_dir).test
    images = np.asarray(test.images, np.float32) / 255
    labels = np.asarray(test.labels)
    expected = model.probabilities(images)
    scores = model.evaluate(data_dir=data_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = model.export(Path(tmp) / "model.onnx")
        images_path = Path(tmp) / "images.npy"
        np.save(images_path, images)
        for runtime in runtimes:
            start = time.perf_counter()
            try:
                if runtime in LOCAL_RUNTIMES:
                    probs, digits, version = run_local(runtime, path, images)
                else:
                    probs, digits, version = run_venv(runtime, venvs, path, images_path)
            except Exception as exc:  # a runtime that refuses the file is a result too
                rows.append({"checkpoint": str(checkpoint), "runtime": runtime,
                             "error": f"{type(exc).__name__}: {exc}"})
                continue
            rows.append({
                "checkpoint": str(checkpoint), "runtime": runtime, "version": version,
                "images": len(images), "seconds": round(time.perf_counter() - start, 2),
                "max_abs_difference": float(np.abs(probs - expected).max()),
                "digits_differing": int(np.count_nonzero(digits != expected.argmax(axis=1))),
                "onnx_accuracy": float(np.mean(digits == labels)),
                "evaluate_accuracy": scores["accuracy"]})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| checkpoint | runtime | loads | digits differing | max abs diff | accuracy "
             "| evaluate |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['checkpoint']} | {r['runtime']} | no: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['checkpoint']} | {r['runtime']} {r['version']} | yes | "
                     f"{r['digits_differing']} of {r['images']} | {r['max_abs_difference']:.1e} "
                     f"| {r['onnx_accuracy']:.4f} | {r['evaluate_accuracy']:.4f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--runtimes", default="onnxruntime,reference",
                    help="comma-separated, or 'all': "
                         + ", ".join([*LOCAL_RUNTIMES, *VENV_RUNTIMES]))
    ap.add_argument("--venvs", type=Path, help="folder for the runtimes' venvs (kept)")
    ap.add_argument("--markdown", action="store_true", help="print a table, not JSON lines")
    args = ap.parse_args()
    runtimes = ([*LOCAL_RUNTIMES, *VENV_RUNTIMES] if args.runtimes == "all"
                else args.runtimes.split(","))
    unknown = set(runtimes) - {*LOCAL_RUNTIMES, *VENV_RUNTIMES}
    if unknown:
        ap.error(f"unknown runtime(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as tmp:
        venvs = args.venvs or Path(tmp)
        rows = []
        for checkpoint in args.checkpoints:
            for row in check(checkpoint, args.data_dir, runtimes, venvs):
                rows.append(row)
                if not args.markdown:
                    print(json.dumps(row), flush=True)
    if args.markdown:
        print(markdown(rows))
    failed = [r for r in rows if "error" in r or r["digits_differing"]
              or r["onnx_accuracy"] != r["evaluate_accuracy"]]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
