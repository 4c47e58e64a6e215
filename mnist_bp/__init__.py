"""mnist-bp: multilayer perceptrons on MNIST, trained with backpropagation written in numpy.

    import mnist_bp
    model = mnist_bp.load("runs/x/checkpoints/best.npz")
    model.predict(images)            # (N, 28, 28) in [0, 1], or a list of image paths
    run = mnist_bp.train("default", training__epochs=5)

See docs/api.md. The heavy modules load on first use, so `mnist-bp --help` stays fast.
"""

from __future__ import annotations

from mnist_bp.version import __version__

__all__ = ["load", "train", "__version__"]


def load(checkpoint):
    """The trained network in `checkpoint` (a `.npz` written by `mnist-bp train`), ready to
    `.predict(images)`, `.evaluate(dataset)` and `.export(path)`: a `mnist_bp.model.Model`."""
    from mnist_bp.errors import check_path, user_errors
    from mnist_bp.model import load as load_model
    return user_errors(load_model)(check_path(checkpoint, "checkpoint"))


def train(config="default", **kwargs):
    """Train a config and return the run (`mnist_bp.api.Run`); see `mnist_bp.api.train`."""
    from mnist_bp.api import train as train_run
    return train_run(config, **kwargs)
