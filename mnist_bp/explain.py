"""`mnist-bp explain`: what the network looks at, by backpropagation carried to the pixels.

    mnist-bp explain runs/x/checkpoints/best.npz --test 16
    mnist-bp explain runs/x/checkpoints/best.npz photo.jpg --method gradient --json

Training carries the loss's gradient down to the weights; one step further, the same chain
rule gives the gradient of a class's probability with respect to each pixel (`Model.gradient`:
the network's `input_gradient`, then back through the checkpoint's input normalisation).
Two attributions, float32 `[28, 28]` in the pixel space of `predict`'s arrays ([0, 1], white
digit on black):

- `gradient`: d p_target / d x, the plain saliency map;
- `integrated-gradients` (Sundararajan, Taly & Yan 2017): (x - baseline) times the mean
  gradient along the straight path from the baseline (blank: all 0) to x, at the midpoints of
  `steps` equal intervals. Its attributions sum to p_target(x) - p_target(baseline) up to the
  midpoint rule's error: that sum is reported with every image, a check of the computation.

A checkpoint that standardises each image on its own (`data.normalize: image`) sees every
point of that path but the first few as the same input (a scaled image standardises to the
same thing), so the path integral collapses into its first interval: for such models the
default method is `gradient`, and asking for integrated gradients is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_bp import limits
from mnist_bp.data.registry import IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES
from mnist_bp.errors import UserError
from mnist_bp.fsutil import cut_name

METHODS = ("integrated-gradients", "gradient")
DEFAULT_STEPS = 64
MAX_STEPS = limits.EXPLAIN_STEPS
MAX_PIXELS_IN = limits.EXPLAIN_IMAGES * IMAGE_PIXELS  # 3 GB in float32 per call
ROWS_PER_PASS = 4096  # path points sent through the network at once
OVERFLOW = ("the network's outputs overflow on these {what} (no finite probability): are "
            "their pixel values far outside [0, 1]?")
DEGENERATE = ("integrated gradients from a blank image are degenerate for {name}: it "
              "standardises each image on its own (data.normalize: image), so every point of "
              "the path but the first few looks the same to it; use method 'gradient'")


@dataclass(frozen=True)
class Explanation:
    """Attributions of N images and what they explain."""

    method: str
    attributions: np.ndarray          # (N, 28, 28) float32
    digits: np.ndarray                # (N,) the predicted digits
    targets: np.ndarray               # (N,) the explained classes
    probabilities: np.ndarray         # (N,) p_target(x)
    baseline_probabilities: np.ndarray  # (N,) p_target(baseline); NaN for `gradient`

    @property
    def sums(self) -> np.ndarray:
        """(N,) the attributions' sums (float64)."""
        return self.attributions.reshape(len(self.attributions), -1).sum(axis=1,
                                                                         dtype=np.float64)


def default_method(model) -> str:
    return "gradient" if model.normalizer.per_image else "integrated-gradients"


def check_method(model, method: str | None) -> str:
    """The method to use (`None`: the model's default); UserError for one that cannot be."""
    if method is None:
        return default_method(model)
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; use {' or '.join(METHODS)}")
    if method == "integrated-gradients" and model.normalizer.per_image:
        raise UserError(DEGENERATE.format(name=model.path.name))
    return method


def as_images(images, what: str = "images") -> np.ndarray:
    """`(N, 28, 28)` or `(28, 28)` finite pixels -> `(N, 28, 28)` float32; UserError else."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            array = np.asarray(images)
            if np.iscomplexobj(array):
                raise TypeError("complex")
            array = array.astype(np.float32, copy=False)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{what} must be an array (N, 28, 28) of real pixel values in "
                        f"[0, 1]") from None
    except MemoryError:
        raise UserError(f"{what}: not enough memory for so many images; pass fewer") from None
    if array.shape == (IMAGE_SIDE, IMAGE_SIDE):
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise UserError(f"{what} must be (N, 28, 28) or (28, 28), not {array.shape}")
    if array.size > MAX_PIXELS_IN:
        raise UserError(f"{what}: {len(array):,} images at once is more than the "
                        f"{MAX_PIXELS_IN // IMAGE_PIXELS:,} allowed; pass them in parts")
    if not np.isfinite(array).all():
        raise UserError(f"{what} hold NaN or infinite pixel values (or values too large for "
                        f"float32)")
    return array


def explain(model, images, target=None, method: str | None = None,
            steps: int = DEFAULT_STEPS, baseline=None) -> Explanation:
    """Attributions of `images` `(N, 28, 28)` in [0, 1] for `target` (an int, N ints, or
    None: each image's predicted digit) by `method` (None: the model's default)."""
    method = check_method(model, method)
    x = as_images(images).reshape(-1, IMAGE_PIXELS)
    n = len(x)
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) \
            or not 1 <= steps <= MAX_STEPS:
        raise UserError(f"steps must be a whole number from 1 to {MAX_STEPS}, not {steps!r}")
    probs = model.probabilities(x.reshape(n, IMAGE_SIDE, IMAGE_SIDE))
    if not model.answerable(probs).all():
        raise UserError(OVERFLOW.format(what="images"))
    digits = probs.argmax(axis=1)
    targets = digits.copy() if target is None else _targets(target, n)
    p_x = probs[np.arange(n), targets]
    if method == "gradient":
        if baseline is not None:
            raise UserError("a baseline is used by integrated gradients only; leave it out for "
                            "method 'gradient'")
        _, grad = model.gradient(x, targets)
        return Explanation(method, grad.reshape(n, IMAGE_SIDE, IMAGE_SIDE), digits, targets,
                           p_x, np.full(n, np.nan))
    base = np.zeros_like(x) if baseline is None else _baseline(baseline, n)
    base_probs = model.probabilities(base.reshape(n, IMAGE_SIDE, IMAGE_SIDE))
    if not model.answerable(base_probs).all():
        raise UserError(OVERFLOW.format(what="baseline"))
    p_base = base_probs[np.arange(n), targets]
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)  # midpoints of the intervals
    mean_grad = np.empty_like(x)
    per_pass = max(1, ROWS_PER_PASS // steps)  # images whose whole path fits in one pass
    for start in range(0, n, per_pass):
        rows = slice(start, start + per_pass)
        diff = x[rows] - base[rows]                                   # (B, 784)
        path = base[rows, None, :] + alphas[None, :, None] * diff[:, None, :]  # (B, S, 784)
        b = len(diff)
        _, g = model.gradient(path.reshape(b * steps, IMAGE_PIXELS),
                              np.repeat(targets[rows], steps))
        mean_grad[rows] = g.reshape(b, steps, IMAGE_PIXELS).mean(axis=1)
    attributions = (x - base) * mean_grad
    return Explanation(method, attributions.reshape(n, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32),
                       digits, targets, p_x, p_base)


def _baseline(baseline, n: int) -> np.ndarray:
    """One baseline for all images `(28, 28)` / `(1, 28, 28)`, or one per image."""
    b = as_images(baseline, "baseline").reshape(-1, IMAGE_PIXELS)
    if len(b) not in (1, n):
        raise UserError(f"baseline must be one image (28, 28) or one per image ({n}, 28, 28), "
                        f"not {len(b)} images")
    return np.ascontiguousarray(np.broadcast_to(b, (n, IMAGE_PIXELS)), np.float32)


def _targets(target, n: int) -> np.ndarray:
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full(n, t)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer) \
            or ((t < 0) | (t >= NUM_CLASSES)).any():
        raise UserError(f"target must be a digit 0-9 (or one per image), not {target!r}")
    return t.astype(np.int64)


# --- pictures ------------------------------------------------------------------------------------

def diverging(values: np.ndarray, scale: float) -> np.ndarray:
    """Values -> RGB uint8 `(..., 3)`: blue below 0, white at 0, red above (RdBu, reversed),
    saturated at +-scale."""
    t = np.clip(values / (scale or 1.0), -1, 1)[..., None]
    white = np.array([247, 247, 247], np.float32)
    red, blue = np.array([178, 24, 43], np.float32), np.array([33, 102, 172], np.float32)
    rgb = np.where(t > 0, white + t * (red - white), white + (-t) * (blue - white))
    return rgb.astype(np.uint8)


def overlay(image: np.ndarray, attribution: np.ndarray, scale: float) -> np.ndarray:
    """The input `(28, 28)` in grey under the attribution's colours, RGB uint8 `(28, 28, 3)`:
    where the attribution is near 0 the digit shows through."""
    heat = diverging(attribution, scale).astype(np.float32)
    weight = np.clip(np.abs(attribution) / (scale or 1.0), 0, 1)[..., None] ** 0.5
    grey = (255 - 160 * image)[..., None].repeat(3, axis=2)  # the ink dark on light
    return (weight * heat + (1 - weight) * grey).astype(np.uint8)


def figure(image: np.ndarray, attribution: np.ndarray, title: str, zoom: int = 8) -> bytes:
    """One PNG: the 28x28 input as the network saw it, the attribution over it (red raises
    the target's probability, blue lowers it) and their shared colour bar, under a title.
    Drawn with Pillow: about a millisecond an image, where a matplotlib figure costs 50."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    side, pad, bar_w, title_h = IMAGE_SIDE * zoom, 12, 14, 26
    scale = float(np.abs(attribution).max())
    font = ImageFont.load_default(size=13)
    canvas = Image.new("RGB", (3 * pad + 2 * side + bar_w + 70, title_h + side + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), title, fill="black", font=font)
    seen = Image.fromarray(np.round(image * 255).astype(np.uint8), "L").convert("RGB")
    canvas.paste(seen.resize((side, side), Image.NEAREST), (pad, title_h))
    heat = Image.fromarray(overlay(image, attribution, scale), "RGB")
    x0 = 2 * pad + side
    canvas.paste(heat.resize((side, side), Image.NEAREST), (x0, title_h))
    draw.rectangle([x0 - 1, title_h - 1, x0 + side, title_h + side], outline="grey")
    ramp = np.linspace(scale, -scale, side, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    bar_x = x0 + side + pad // 2
    canvas.paste(Image.fromarray(diverging(ramp, scale), "RGB"), (bar_x, title_h))
    draw.rectangle([bar_x, title_h, bar_x + bar_w - 1, title_h + side - 1], outline="grey")
    for frac, value in ((0, scale), (0.5, 0.0), (1, -scale)):
        y = title_h + int(frac * (side - 12))
        draw.text((bar_x + bar_w + 4, y), f"{value:+.2g}", fill="black", font=font)
    buf = io.BytesIO()
    canvas.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def title_of(name: str, digit: int, target: int, probability: float, classes) -> str:
    shown = name if name.isprintable() else repr(name)[1:-1]
    shown = shown if len(shown) <= 32 else shown[:31] + "…"
    return (f"{shown}: read {classes[digit]}, target {classes[target]}, "
            f"p={probability:.3f}")


# --- the command's edges ------------------------------------------------------------------------

def free_stem(folder: Path, stem: str) -> str:
    """`stem`, or `stem~2`, `stem~3`...: the first for which neither NAME.png nor NAME.npy
    exists (write_new still never replaces one that appears meanwhile)."""
    stem = cut_name(stem, 180)
    k = 1
    while True:
        name = stem if k == 1 else f"{stem}~{k}"
        if not (folder / f"{name}.png").exists() and not (folder / f"{name}.npy").exists():
            return name
        k += 1


def write_explanation(folder: Path, stem: str, image: np.ndarray, attribution: np.ndarray,
                      title: str) -> tuple[Path, Path]:
    import io

    from mnist_bp.fsutil import write_new

    folder.mkdir(parents=True, exist_ok=True)
    name = free_stem(folder, stem)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(attribution, np.float32), allow_pickle=False)
    npy = write_new(folder, name, ".npy", buf.getvalue())
    png = write_new(folder, npy.stem, ".png", figure(image, attribution, title))
    return png, npy


def explain_named(model, named: list[tuple[str, np.ndarray]], out: Path, target=None,
                  method: str | None = None, steps: int = DEFAULT_STEPS,
                  errors: list | None = None) -> list[dict]:
    """Explain `(name, 28x28 image)` pairs; write NAME.png and NAME.npy into `out`; one dict
    per image as `--json` shows it. An image whose files cannot be written goes to
    `errors` (`{"file", "error"}`) and the others go on."""
    errors = [] if errors is None else errors
    if not named:
        return []
    images = np.stack([image for _, image in named])
    e = explain(model, images, target, method, steps)
    classes = model.classes
    results = []
    for i, (name, image) in enumerate(named):
        stem = "stdin" if name == "-" else Path(name).stem
        title = title_of(stem, int(e.digits[i]), int(e.targets[i]), float(e.probabilities[i]),
                         classes)
        try:
            png, npy = write_explanation(out, stem, image, e.attributions[i], title)
        except OSError as exc:
            errors.append({"file": name, "error": f"cannot write its files in {out} "
                                                  f"({exc.strerror or exc})"})
            continue
        base = float(e.baseline_probabilities[i])
        results.append({"file": name, "digit": int(e.digits[i]), "target": int(e.targets[i]),
                        "probability": float(e.probabilities[i]),
                        "baseline_probability": None if np.isnan(base) else base,
                        "attribution_sum": float(e.sums[i]), "png": str(png), "npy": str(npy)})
    return results


def format_table(results: list[dict], method: str) -> str:
    """One line per image: digit, target, p_target and, for integrated gradients, the
    completeness check (sum of attributions against p(x) - p(baseline))."""
    width = max([len(r["file"]) for r in results] + [4])
    ig = method == "integrated-gradients"
    head = f"{'file':<{width}}  digit  target  p(target)" + \
        ("  sum(attr)  p(x)-p(base)" if ig else "  sum(attr)") + "  picture"
    lines = [head]
    for r in results:
        line = (f"{r['file']:<{width}}  {r['digit']:<5}  {r['target']:<6}  "
                f"{r['probability']:<10.4f}  {r['attribution_sum']:<+9.4f}")
        if ig:
            line += f"  {r['probability'] - r['baseline_probability']:<+12.4f}"
        png = r["png"] if r["png"].isprintable() else repr(r["png"])[1:-1]
        lines.append(f"{line}  {png}")
    return "\n".join(lines)
