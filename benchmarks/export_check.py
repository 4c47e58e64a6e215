"""Check an exported ONNX model against mnist-bp on a whole test set (docs/export.md).

    python benchmarks/export_check.py runs/default/checkpoints/best.npz --data-dir ./data

Exports the checkpoint to ONNX in a temporary folder, runs it in onnxruntime on the test
images of the checkpoint's dataset (pixels / 255, as MNIST stores them), and prints the
largest absolute difference from mnist-bp's probabilities, how many digits differ, and the
two accuracies next to `evaluate`'s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from mnist_bp.data.datadir import load_dataset
from mnist_bp.model import load


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data-dir", type=Path)
    args = ap.parse_args()
    import onnxruntime as ort

    model = load(args.checkpoint)
    test = load_dataset(model.cfg.data.dataset, args.data_dir).test
    images = np.asarray(test.images, np.float32) / 255
    labels = np.asarray(test.labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = model.export(Path(tmp) / "model.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        probabilities, digits = session.run(None, {"images": images})
    expected = model.probabilities(images)
    scores = model.evaluate(data_dir=args.data_dir)
    print(json.dumps({
        "checkpoint": str(args.checkpoint), "images": len(images),
        "max_abs_difference": float(np.abs(probabilities - expected).max()),
        "digits_differing": int(np.count_nonzero(digits != expected.argmax(axis=1))),
        "onnx_accuracy": float(np.mean(digits == labels)),
        "evaluate_accuracy": scores["accuracy"]}))


if __name__ == "__main__":
    main()
