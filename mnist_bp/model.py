"""A trained network, ready to use: the one place a checkpoint becomes a model.

    >>> import mnist_bp
    >>> model = mnist_bp.load("runs/x/checkpoints/best.npz")        # doctest: +SKIP
    >>> model.predict(images)[0]["digit"]                            # doctest: +SKIP

`load(path)` rebuilds the network a checkpoint's config describes, loads its parameters and
its input normalisation, and returns a `Model`. `evaluate`, `predict`, `report`, `serve`,
`export` and `train` (for its test score and its resume) all go through it, so a checkpoint
is read, checked and normalised the same way everywhere. `build_network` is the one place a
config becomes an MLP of the datasets' shape. Inference is always float32.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from mnist_bp import checkpoint, precision, rng
from mnist_bp.config import Config
from mnist_bp.data.batches import BatchMaker, Normalizer
from mnist_bp.data.registry import IMAGE_PIXELS, NUM_CLASSES, class_names
from mnist_bp.errors import UserError, check_bool, check_path, user_errors
from mnist_bp.imageprep import ImageError, inputs_of
from mnist_bp.nn.losses import make_loss, probabilities
from mnist_bp.nn.mlp import MLP
from mnist_bp.nn.reference import probability_gradient
from mnist_bp.prediction import Prediction, judged, predictions

CHUNK_IMAGES = 2000  # images per forward pass when predicting
NO_ANSWER = ("the network's outputs overflow on this image (no finite answer); the "
             "checkpoint's weights are unusable")


def build_network(cfg: Config, products: str) -> MLP:
    """The MLP `cfg.model` describes, 784 inputs and 10 outputs, initialised from the seed;
    its products by `products` (an nn.products.KINDS key, resolved at the edge:
    precision.resolve)."""
    return MLP(cfg.model, rng.stream(cfg.seed, rng.INIT), IMAGE_PIXELS, NUM_CLASSES,
               products=products)


def parameter_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """`layers.<i>.W` `(in, out)` and `layers.<i>.b` `(out,)` of the network `cfg` builds."""
    sizes = [IMAGE_PIXELS, *cfg.model.hidden, NUM_CLASSES]
    shapes = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shapes[f"layers.{i}.W"], shapes[f"layers.{i}.b"] = (d_in, d_out), (d_out,)
    return shapes


class Model:
    """A checkpoint's network, config and input normalisation, loaded once.

    The layers write into buffers they own, so forward passes hold a lock; reading and
    preprocessing images, the slow part of predicting, runs in parallel across threads.
    """

    def __init__(self, path: Path | str, network: MLP, cfg: Config, meta: dict):
        self.path = Path(path)
        self.network = network
        self.cfg = cfg
        self.meta = meta
        self.normalizer = Normalizer(**meta["normalization"])
        self.sigmoid_outputs = cfg.model.output_activation == "sigmoid"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        sizes = "-".join(str(s) for s in (IMAGE_PIXELS, *self.cfg.model.hidden, NUM_CLASSES))
        return f"<mnist_bp.Model {sizes} {self.cfg.model.activation} from {self.path.name}>"

    @property
    def classes(self) -> tuple[str, ...]:
        return class_names(self.cfg.data.dataset)

    # --- arrays in, probabilities out -----------------------------------------------------------

    def maker(self, images: np.ndarray, labels: np.ndarray) -> BatchMaker:
        """Batches of uint8 `images` `(N, 28, 28)` normalised as this network was trained."""
        return BatchMaker(images, labels, self.normalizer)

    def score(self, images: np.ndarray, labels: np.ndarray, transform=None,
              keep_outputs: bool = False) -> dict:
        """`scoring.evaluate` of uint8 `images` `(N, 28, 28)`: loss, accuracy, confusion
        matrix (and the outputs with `keep_outputs`), as every command scores a checkpoint."""
        from mnist_bp.scoring import evaluate
        return evaluate(self.network, make_loss(self.cfg.loss), self.maker(images, labels),
                        self.cfg.training.eval_batch_size, transform, keep_outputs)

    def outputs(self, images: np.ndarray) -> np.ndarray:
        """`images` `(N, 28, 28)` float in [0, 1] (light ink on dark) -> the network's raw
        outputs `(N, 10)` float32 (logits, or sigmoid activations)."""
        n = len(images)
        x = self.normalizer.from_unit(
            np.asarray(images, np.float32).reshape(n, IMAGE_PIXELS),
            np.empty((n, IMAGE_PIXELS), np.float32))
        out = np.empty((n, NUM_CLASSES), np.float32)
        for start in range(0, n, CHUNK_IMAGES):
            with self._lock:
                out[start:start + CHUNK_IMAGES] = self.network.forward(
                    x[start:start + CHUNK_IMAGES])
        return out

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """`images` `(N, 28, 28)` in [0, 1] -> `(N, 10)` float64, rows summing to 1 (softmax
        of the logits; sigmoid outputs divided by their sum). A row the network could not
        compute (its outputs overflowed) is all NaN; `answerable` tells them apart."""
        with np.errstate(over="ignore", invalid="ignore"):
            return probabilities(self.outputs(images), self.sigmoid_outputs)

    def gradient(self, pixels: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`pixels` `(N, 784)` in [0, 1] and a class per row `(N,)` -> (p_target `(N,)`
        float64, d p_target / d pixels `(N, 784)` float32): backpropagation carried to the
        input (MLP.input_gradient), then back through the input normalisation."""
        n = len(pixels)
        x = np.asarray(pixels, np.float32)
        p_t, grad = np.empty(n), np.empty((n, IMAGE_PIXELS), np.float32)
        for start in range(0, n, CHUNK_IMAGES):
            rows = slice(start, start + CHUNK_IMAGES)
            xn = self.normalizer.from_unit(x[rows], np.empty_like(x[rows]))
            with self._lock:  # the layers keep this pass's inputs and masks for backward
                outputs = self.network.forward(xn).astype(np.float64)
                p_t[rows], d_outputs = probability_gradient(outputs, targets[rows],
                                                            self.sigmoid_outputs)
                d_xn = self.network.input_gradient(d_outputs.astype(np.float32))
            grad[rows] = self.normalizer.backward(x[rows], xn, d_xn)
        return p_t, grad

    @user_errors
    def explain(self, images, target=None, method: str | None = None, steps: int = 64,
                baseline=None, invert: str = "auto") -> np.ndarray:
        """Attributions float32 `(N, 28, 28)`: how much each pixel of each image raises
        (positive) or lowers the probability of `target` (default: the predicted digit).

        `images` as `predict` takes them: an array `(N, 28, 28)` or `(28, 28)` in [0, 1]
        used as it is, or image paths read with `predict`'s preprocessing. `method`:
        "integrated-gradients" (the default; from `baseline`, blank unless given, in `steps`
        midpoints) or "gradient" (d p_target / d pixel; the default, and the only method,
        for checkpoints that standardise each image, where the path is degenerate).
        `invert` as for `predict`, for paths. explain.py has the details; UserError for
        anything a caller can fix."""
        from mnist_bp.explain import explain
        check_invert(invert)
        return explain(self, self.arrays_of(images, invert), target, method, steps,
                       baseline).attributions

    def arrays_of(self, images, invert: str = "auto") -> np.ndarray:
        """An array of images as it is, or paths read with `predict`'s preprocessing
        (UserError naming the first that cannot be read)."""
        if isinstance(images, (str, Path)):
            images = [images]
        if isinstance(images, (list, tuple)) and images \
                and all(isinstance(s, (str, Path)) for s in images):
            arrays = []
            for source in images:
                try:
                    arrays.append(self.prepare(source, invert)[0].image)
                except ImageError as exc:
                    raise UserError(f"{source}: {exc}") from None
            return np.stack(arrays)
        return images

    @staticmethod
    def answerable(probs: np.ndarray) -> np.ndarray:
        """`(N,)` bool: which rows of `probabilities` are real answers."""
        return np.isfinite(probs).all(axis=1)

    # --- the Python API -------------------------------------------------------------------------

    @user_errors
    def predict(self, images, invert: str = "auto") -> list[Prediction]:
        """One `Prediction` per image: `digit`, `confidence`, `probabilities` (10 floats), as
        attributes or keys (prediction.py).

        `images`: an array `(N, 28, 28)` or `(28, 28)` of MNIST-ready pixels in [0, 1] (white
        digit on black), used as they are, as `evaluate` and the exported ONNX model use
        them; or a list of image paths, read with `mnist-bp predict`'s preprocessing (then
        each also has `file` and `inverted`, or `file` and `error`).

        >>> import numpy as np
        >>> blank = np.zeros((2, 28, 28), np.float32)
        >>> [sorted(r) for r in model.predict(blank)]                # doctest: +SKIP
        [['confidence', 'digit', 'probabilities'], ['confidence', 'digit', 'probabilities']]
        """
        from mnist_bp.explain import as_images

        check_invert(invert)
        if isinstance(images, (str, Path)):
            images = [images]
        if isinstance(images, (list, tuple)) and images \
                and all(isinstance(s, (str, Path)) for s in images):
            return self.predict_paths(images, invert=invert)
        probs = self.probabilities(as_images(images))
        return predictions(probs, [None] * len(probs), None, False, self.answerable(probs),
                           NO_ANSWER)

    @user_errors
    def evaluate(self, dataset: str | None = None, split: str = "test", data_dir=None,
                 invert: bool = False, colors: str = "normal", seed: int = 0,
                 log=None) -> dict:
        """Accuracy, loss, per-class numbers and confusion matrix on a split of a dataset in
        the data dir (the checkpoint's own dataset by default), as `mnist-bp evaluate`
        reports them; `invert` / `colors="random"` score the transformed images."""
        from mnist_bp.data.datadir import load_dataset
        from mnist_bp.scoring import make_transform, per_class

        check_path(data_dir, "data_dir", optional=True)
        if split not in ("test", "train"):
            raise UserError(f"split must be 'test' or 'train', not {split!r}")
        if colors not in ("normal", "random"):
            raise UserError(f"colors must be 'normal' or 'random', not {colors!r}")
        if not isinstance(invert, (bool, np.bool_)):
            raise UserError(f"invert must be True or False, not {invert!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UserError(f"seed must be a whole number >= 0, not {seed!r}")
        name = dataset or self.cfg.data.dataset
        data = getattr(load_dataset(name, data_dir, log=log), split)
        result = self.score(data.images, data.labels,
                            make_transform(len(data), invert, colors, seed))
        images = ("inverted " if invert else "") + ("random-colour " if colors == "random"
                                                    else "")
        return {
            "checkpoint": str(self.path), "epoch": self.meta["progress"]["epoch"],
            "dataset": name, "split": split, "images": (images + "images").strip(),
            "invert": invert, "colors": colors,
            "accuracy": result["accuracy"], "loss": result["loss"], "n": result["n"],
            "per_class": per_class(result["confusion_matrix"]),
            "confusion_matrix": result["confusion_matrix"].tolist(),
        }

    @user_errors
    def export(self, out: Path | str, format: str | None = None, force: bool = False) -> Path:
        """Write this network as ONNX (`.onnx`) or safetensors (`.safetensors`); see
        docs/export.md."""
        from mnist_bp.export import export
        return export(self, Path(check_path(out, "out")), format, check_bool(force, "force"))

    # --- users' images (predict, serve) ---------------------------------------------------------

    def prepare(self, source, invert: str = "auto", number: bool = False,
                decoders=None, max_pixels: int | None = None) -> list:
        """Network inputs (`imageprep.Prepared`) of one image (a path, bytes, a file object,
        a PIL image or a 2-D array in [0, 1]): one, or one per digit with `number` (the
        network judging which heavy parts are two digits: `prediction.judged`). Paths and
        bytes are decoded in a worker process with a time limit (decoding.py)."""
        from mnist_bp.decoding import shared

        if isinstance(source, (str, Path, bytes, bytearray, memoryview)):
            inputs = (decoders or shared()).prepare(source, invert, number, max_pixels)
        else:
            inputs = inputs_of(source, invert, number, max_pixels)
        return judged(inputs, self.probabilities)

    def predict_image(self, source, invert: str = "auto", number: bool = False,
                      decoders=None) -> Prediction:
        """The `Prediction` for one image (a path, bytes, a file object, a PIL image or a 2-D
        array in [0, 1]); raises ImageError for a bad or blank one."""
        inputs = self.prepare(source, invert, number, decoders)
        probs = self.probabilities(np.stack([p.image for p in inputs]))
        [result] = predictions(probs, [inputs], None, number, self.answerable(probs),
                               NO_ANSWER)
        if not result.ok:
            raise ImageError(result.error)
        return result

    def predict_paths(self, sources, invert: str = "auto", number: bool = False,
                      names=None) -> list[Prediction]:
        """One `Prediction` per source, in order, with its `file` (`names`, or the source);
        an image that failed has `error` instead of the answer.

        The images are prepared by the decoding workers, two at a time (each in a process
        with a time limit: decoding.py), and predicted in chunks."""
        from concurrent.futures import ThreadPoolExecutor

        check_invert(invert)
        names = names or [str(s) for s in sources]

        def prepared_or_error(source, here: bool = False):
            try:
                if here:  # already found small and linear to decode: no second look
                    inputs = prepare_here(source, invert, number)
                    if inputs is not None:
                        return judged(inputs, self.probabilities)
                return self.prepare(source, invert, number)
            except ImageError as exc:
                return str(exc)

        # small PNG/GIF/BMP files of one digit are prepared here, one after the other
        # (threads would only contend for the GIL); the others wait for a decoding worker,
        # two at a time
        from mnist_bp.decoding import prepare_here, skips_worker

        local = [isinstance(s, (str, Path)) and skips_worker(s, number) for s in sources]
        prepared = [prepared_or_error(s, here=True) if here else None
                    for s, here in zip(sources, local, strict=True)]
        remote = [i for i, here in enumerate(local) if not here]
        if remote:
            with ThreadPoolExecutor(2, thread_name_prefix="mnist-bp-prepare") as pool:
                for i, item in zip(remote, pool.map(prepared_or_error,
                                                     [sources[i] for i in remote]), strict=True):
                    prepared[i] = item
        flat = [p.image for item in prepared if not isinstance(item, str) for p in item]
        probs = self.probabilities(np.stack(flat)) if flat else np.empty((0, NUM_CLASSES))
        return predictions(probs, prepared, names, number, self.answerable(probs), NO_ANSWER)


def check_invert(invert) -> None:
    if invert not in ("auto", "yes", "no"):
        raise UserError(f"invert must be 'auto', 'yes' or 'no', not {invert!r}")


def read(path: Path | str, products: str | None = None) -> tuple[MLP, Config, dict, dict]:
    """(network, config, meta, optimizer state) of a checkpoint, every parameter checked
    against the network its config builds and loaded into it; a CheckpointError naming the
    file otherwise. Inference multiplies in float32 by `products` (default: resolved here,
    the edge of `mnist_bp.load`)."""
    path = Path(path)
    products = products or precision.resolve().float32
    params, optim_state, meta = checkpoint.load(path)
    cfg = checkpoint.config_of(path, meta)
    checkpoint.check_shapes(path, parameter_shapes(cfg), params)  # before building anything
    network = build_network(cfg, products)
    network.load_parameters(params)
    return network, cfg, meta, optim_state


def load(path: Path | str) -> Model:
    """The trained network in a checkpoint (`RUN/checkpoints/best.npz`), ready to predict."""
    network, cfg, meta, _ = read(path)
    return Model(path, network, cfg, meta)
