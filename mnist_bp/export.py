"""`mnist-bp export`: a trained network for other runtimes, as ONNX or safetensors.

    mnist-bp export runs/x/checkpoints/best.npz x.onnx
    mnist-bp export runs/x/checkpoints/best.npz x.safetensors

ONNX: one graph from raw pixels to answers, so that any ONNX runtime needs nothing from
mnist-bp. Input `images` float32 `[N, 28, 28]`, pixel values in [0, 1] as MNIST stores them
(white digit on black); the checkpoint's input normalisation (dataset mean/std, or each image
standardised on its own) is inside the graph, then every Linear layer and activation; outputs
`probabilities` float32 `[N, 10]` (softmax of the logits, or the classic network's sigmoid
outputs divided by their sum, as mnist-bp computes them) and `digit` int64 `[N]`. The batch
dimension is dynamic; class names, the config and the normalisation are in the metadata.

safetensors: the parameters under the checkpoint's names (`layers.<i>.W` `(in, out)`,
`layers.<i>.b`), float32, with the config and normalisation as JSON metadata.

Both are optional (the `export` extra: onnx, safetensors) and imported only here. The file
is written to a temporary name and renamed; an existing OUT is replaced only with `force`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mnist_bp.config import to_dict
from mnist_bp.data.batches import MIN_STD
from mnist_bp.data.registry import IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES
from mnist_bp.errors import UserError
from mnist_bp.fsutil import atomic_write

FORMATS = {".onnx": "onnx", ".safetensors": "safetensors"}
# The lowest opset whose operators are the ones the graph is written with: Softmax over one
# axis and ArgMax as defined in opset 13, ReduceSum with its axes as an input (13); nothing in
# the graph needs a later definition. The IR version is then the lowest that opset needs
# (onnx.helper.find_min_ir_version_for: 7), not the newest the installed onnx package knows,
# so runtimes pinned to older releases load the file (docs/export.md's table).
OPSET = 13
INSTALL_HINT = "install the export extra: pip install 'mnist-bp[export]' (onnx, safetensors)"


def format_of(out: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS.values():
            raise UserError(f"unknown export format {fmt!r}; use onnx or safetensors")
        return fmt
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"{out}: cannot tell the format from the suffix; name it .onnx or "
                        f".safetensors, or pass --format onnx|safetensors")
    return FORMATS[out.suffix.lower()]


def export(model, out: Path, fmt: str | None = None, force: bool = False) -> Path:
    """Write `model` (a `model.Model`) to `out` as ONNX or safetensors; returns `out`."""
    out = Path(out)
    fmt = format_of(out, fmt)
    if out.exists() and not force:
        raise UserError(f"{out}: already exists; pass --force to replace it")
    if out.is_dir():
        raise UserError(f"{out}: is a directory; give a file name")
    data = onnx_bytes(model) if fmt == "onnx" else safetensors_bytes(model)
    try:
        with atomic_write(out) as f:
            f.write(data)
    except OSError as exc:
        raise UserError(f"{out}: cannot write it ({exc.strerror or exc}); choose a folder you "
                        f"can write to") from None
    return out


def parameters(model) -> dict[str, np.ndarray]:
    """`layers.<i>.W` / `layers.<i>.b` in layer order, float32."""
    return {name: np.ascontiguousarray(array, np.float32)
            for name, array in model.network.parameters().items()}


def metadata(model) -> dict[str, str]:
    return {"format": "mnist-bp", "config": json.dumps(to_dict(model.cfg)),
            "normalization": json.dumps(model.normalizer.to_dict()),
            "classes": json.dumps(list(model.classes)),
            "input": "images float32 [N, 28, 28], pixels in [0, 1], white digit on black"}


# --- safetensors ---------------------------------------------------------------------------------

def safetensors_bytes(model) -> bytes:
    try:
        from safetensors.numpy import save
    except ImportError:
        raise UserError(f"safetensors export needs the safetensors package; {INSTALL_HINT}") \
            from None
    return save(parameters(model), metadata=metadata(model))


# --- ONNX ----------------------------------------------------------------------------------------

class _Graph:
    """Nodes and constants of an ONNX graph, named as they are added."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0

    def const(self, name: str, value) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self.count += 1
        output = output or f"{op_type.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], **attrs))
        return output


def _activation(g: _Graph, name: str, x: str, slope: float) -> str:
    if name == "relu":
        return g.op("Relu", [x])
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], alpha=float(slope))
    if name == "tanh":
        return g.op("Tanh", [x])
    if name == "sigmoid":
        return g.op("Sigmoid", [x])
    if name == "gelu":  # the tanh approximation mnist-bp uses
        f32 = np.float32
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const(f"gelu_k_{g.count}",
                                                          f32(0.044715))])])
        t = g.op("Tanh", [g.op("Mul", [inner, g.const(f"gelu_c_{g.count}",
                                                     f32(np.sqrt(2 / np.pi)))])])
        one_plus = g.op("Add", [t, g.const(f"one_{g.count}", f32(1))])
        return g.op("Mul", [g.op("Mul", [x, one_plus]), g.const(f"half_{g.count}", f32(0.5))])
    raise UserError(f"activation {name!r} has no ONNX export")


def onnx_bytes(model) -> bytes:
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise UserError(f"ONNX export needs the onnx package; {INSTALL_HINT}") from None
    cfg, norm = model.cfg, model.normalizer
    g = _Graph(helper, numpy_helper)
    x = g.op("Reshape", ["images", g.const("flat_shape", np.array([-1, IMAGE_PIXELS],
                                                                   np.int64))], "pixels")
    if norm.per_image:  # mean 0, standard deviation 1 per image, as in training
        centred = g.op("Sub", [x, g.op("ReduceMean", [x], axes=[1], keepdims=1)])
        var = g.op("ReduceMean", [g.op("Mul", [centred, centred])], axes=[1], keepdims=1)
        std = g.op("Max", [g.op("Sqrt", [var]), g.const("min_std", np.float32(MIN_STD))])
        x = g.op("Div", [centred, std], "normalized")
    elif norm.mean or norm.std != 1:
        x = g.op("Mul", [g.op("Sub", [x, g.const("mean", np.float32(norm.mean))]),
                         g.const("inv_std", np.float32(1 / norm.std))], "normalized")
    params = parameters(model)
    n_layers = len(params) // 2
    for i in range(n_layers):
        W = g.const(f"layers.{i}.W", params[f"layers.{i}.W"])
        b = g.const(f"layers.{i}.b", params[f"layers.{i}.b"])
        x = g.op("Add", [g.op("MatMul", [x, W]), b], f"layers.{i}.out")
        if i < n_layers - 1:
            x = _activation(g, cfg.model.activation, x, cfg.model.leaky_slope)
    if model.sigmoid_outputs:  # the classic network: sigmoid outputs divided by their sum
        s = g.op("Sigmoid", [x])
        total = g.op("ReduceSum", [s, g.const("sum_axes", np.array([1], np.int64))],
                     keepdims=1)
        g.op("Div", [s, g.op("Max", [total, g.const("tiny", np.float32(1e-12))])],
             "probabilities")
    else:
        g.op("Softmax", [x], "probabilities", axis=1)
    # ArgMax keeping its axis, then a Reshape to [N]: OpenCV 4's dnn module answers garbage
    # for ArgMax with keepdims=0 (docs/export.md), and every runtime reads this form.
    g.op("Reshape", [g.op("ArgMax", ["probabilities"], axis=1, keepdims=1),
                     g.const("digit_shape", np.array([-1], np.int64))], "digit")

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                           ["N", IMAGE_SIDE, IMAGE_SIDE])
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                             ["N", NUM_CLASSES]),
               helper.make_tensor_value_info("digit", TensorProto.INT64, ["N"])]
    graph = helper.make_graph(g.nodes, "mnist_bp_mlp", [images], outputs, g.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="mnist-bp",
                                   ir_version=helper.find_min_ir_version_for(opsets))
    onnx_model.doc_string = (
        "MLP trained with mnist-bp. Input 'images': float32 [N, 28, 28], pixel values in "
        "[0, 1] as MNIST stores them (white digit on black background); the input "
        "normalisation is inside the graph. Outputs 'probabilities' float32 [N, 10] and "
        "'digit' int64 [N].")
    helper.set_model_props(onnx_model, metadata(model))
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model.SerializeToString()
