"""Where mnist-bp's training step spends the time the matrix products do not: the real step
(the Trainer on configs/bench.yaml) with one part taken out at a time, against the matmul floor
of `make bench` (the same products alone), alternating blocks of steps in one process.

    python benchmarks/step_parts.py --data-dir D [--blocks 15] [--steps 100]
    MNIST_BP_GEMM=numpy python benchmarks/step_parts.py --data-dir D   # numpy's products

The products are done as `mnist-bp train` would do them (MNIST_BP_GEMM, and `--set
training.precision=bfloat16` with `--precision bfloat16`), the floor the same way.

A part's cost is the whole step's ratio to the floor minus the ratio without that part. The
parts overlap a little (taking one out changes what is in the cache for the next), so the
costs need not add up to the gap exactly; "the products alone" takes every part out.

Every variant trains with a learning rate of 1e-9: the same work as 0.05 (the update is still
computed; OpenBLAS skips an axpy with a factor of exactly 0), but a net without activations
or with a fixed loss gradient cannot diverge.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from augment_share import step_seconds
from bench import floor_seconds, floor_step

from mnist_bp.config import load_config
from mnist_bp.data.batches import Normalizer
from mnist_bp.data.datadir import load_dataset, resolve_data_dir
from mnist_bp.nn.layers import Linear
from mnist_bp.training import Trainer


def without_update(trainer):
    trainer.optimizer.step = lambda params, grads, lr: None


def without_batch_preparation(trainer):
    x, y = trainer.prepare_batch(np.arange(len(trainer.train_maker)), 0, 0)
    fixed = (x.copy(), y.copy())
    trainer.prepare_batch = lambda order, epoch, step: fixed


def without_activations(trainer):
    for layer in trainer.model.layers:
        if not isinstance(layer, Linear):  # the ReLUs: the bench net has no dropout
            layer.forward = lambda x, training=False, rng=None: x
            layer.backward = lambda grad: grad


def without_biases(trainer):
    """Linear layers doing only their products (as in Linear, with the bias lines taken out)."""
    for layer in trainer.model.linears.values():
        def forward(x, training=False, rng=None, layer=layer):
            layer.x = x
            W = layer.params["W"]
            out = layer.buffer("out", (x.shape[0], W.shape[1]), x.dtype)
            layer.products.forward(x, W, out, training)
            return out

        def backward(grad, layer=layer):
            dx = layer.buffer("dx", layer.x.shape, grad.dtype) if layer.input_grad else None
            layer.products.backward(layer.x, grad, layer.params["W"], layer.grads["W"],
                                    layer.grad_decay, dx)
            return dx

        layer.forward, layer.backward = forward, backward


def without_loss(trainer):
    """A fixed gradient for the outputs instead of softmax, cross-entropy and its gradient."""
    grad = np.full((trainer.batch_size, 10), 1e-3, np.float32)
    trainer.loss.forward = lambda outputs, labels: 0.0
    trainer.loss.backward = lambda: grad


PARTS = {"the parameter update (p -= lr v)": without_update,
         "batch preparation (gather, convert)": without_batch_preparation,
         "activations (ReLU forward and backward)": without_activations,
         "biases (add, and their gradient)": without_biases,
         "softmax and cross-entropy (a fixed gradient)": without_loss}


def make_trainer(cfg, train, removed=()):
    trainer = Trainer(cfg, train, None, Normalizer.fit(cfg.data.normalize, train.images))
    trainer.lr = lambda global_step: 1e-9
    for remove in removed:
        remove(trainer)
    return trainer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    args = ap.parse_args()
    cfg, _ = load_config("bench", [f"training.precision={args.precision}"])
    train = load_dataset(cfg.data.dataset, resolve_data_dir(args.data_dir), fetch=False).train
    variants = {"the whole step": make_trainer(cfg, train)}
    variants |= {f"without {part}": make_trainer(cfg, train, [remove])
                 for part, remove in PARTS.items()}
    variants["the products alone (all five taken out)"] = make_trainer(cfg, train,
                                                                       PARTS.values())
    kind = variants["the whole step"].products  # numpy, onednn or onednn-bfloat16
    floor = floor_step(cfg.training.batch_size, (784, *cfg.model.hidden, 10), kind)
    print(f"products: {kind}")
    for trainer in variants.values():  # warm-up
        step_seconds(trainer, 20, prefetch=False)
    floor_seconds(floor, 20)
    seconds = {name: [] for name in variants}
    floors = []
    for _ in range(args.blocks):
        for name, trainer in variants.items():
            seconds[name].append(step_seconds(trainer, args.steps, prefetch=False))
        floors.append(floor_seconds(floor, args.steps))
    ratio = {name: statistics.median(s / f for s, f in zip(v, floors, strict=True))
             for name, v in seconds.items()}
    whole = ratio["the whole step"]
    print("| step | median (ms) | x matmul floor | cost of the part (x floor) |")
    print("|---|---|---|---|")
    for name, v in seconds.items():
        cost = f"{whole - ratio[name]:.3f}" if name != "the whole step" else "-"
        print(f"| {name} | {1000 * statistics.median(v):.2f} | {ratio[name]:.3f} | {cost} |")
    print(f"| matmul floor | {1000 * statistics.median(floors):.2f} | 1.000 | - |")


if __name__ == "__main__":
    main()
