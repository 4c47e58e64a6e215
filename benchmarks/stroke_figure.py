"""Draw what `predict` makes of each stroke style, before and after stroke normalisation.

    python benchmarks/stroke_figure.py --before-tree DIR --out docs/stroke-styles.png

One row per stroke style (benchmarks/user_images.py's hollow, hairline and heavy fonts, and
an ordinary handwriting font), three digits each: the photo, the 28x28 input of the
preprocessing in `--before-tree` (a checkout of an earlier commit, e.g.
`git worktree add DIR b0d73ba`) and of this tree, each with `--checkpoint`'s reading.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from user_images import find_fonts, finish, render_text

from mnist_bp import imageprep


def load_imageprep(tree: Path):
    spec = importlib.util.spec_from_file_location("imageprep_before",
                                                  tree / "mnist_bp" / "imageprep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# one row per stroke style: its name, a font and how it is drawn, three digits
ROWS = [("ordinary pen", "ComicNeue-Regular", None, "472"),
        ("hollow\n(outline font)", "TrainOne", None, "253"),
        ("hollow\n(outlined font)", "Inter-Black.", "hollow", "548"),
        ("hairline", "Lato-Hairline.", None, "769"),
        ("heavy", "ReggaeOne", None, "306")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-tree", type=Path, required=True)
    parser.add_argument("--checkpoint", default="runs/mnist-best/checkpoints/best.npz")
    parser.add_argument("--out", type=Path, default=Path("docs/stroke-styles.png"))
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import mnist_bp

    before = load_imageprep(args.before_tree)
    model = mnist_bp.load(args.checkpoint)
    rng = np.random.default_rng(args.seed)
    fig, axes = plt.subplots(len(ROWS), 9, figsize=(12.6, 1.75 * len(ROWS)), squeeze=False)
    for (title, font, style, digits), ax in zip(ROWS, axes, strict=True):
        shown = []
        for digit in digits:
            photo = finish(render_text(digit, find_fonts([font])[0], rng, style), rng)
            gray = imageprep.as_gray(photo)
            shown.append(("", np.asarray(photo.convert("RGB"))))
            for name, module in (("before", before), ("after", imageprep)):
                image = module.prepare(gray).image
                read = model.predict(image[None])[0]
                shown.append((f"{name}: {read['digit']} ({read['confidence']:.2f})", image))
        for k, ((label, image), a) in enumerate(zip(shown, ax, strict=True)):
            a.imshow(image, cmap=None if image.ndim == 3 else "gray")
            a.set_title(label, fontsize=8)
            a.set_xticks([])
            a.set_yticks([])
            if k == 0:
                a.set_ylabel(title, fontsize=9)
    fig.suptitle(f"read by {Path(args.checkpoint).parent.parent.name}: before and after "
                 "stroke normalisation", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(args.out)


if __name__ == "__main__":
    main()
