"""Draw `predict`'s preprocessing step by step, for docs/predict.md.

    python benchmarks/preprocess_figure.py --out docs/preprocess-steps.png [--data-dir DIR]

Renders photo-like pages (a font digit and, with a data dir, an MNIST test digit printed
large) as benchmarks/user_images.py does, then shows each stage `prepare` goes through: the
photo, its grayscale, the ink once the paper is subtracted, the pieces kept, and the 28x28
input the network sees.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from user_images import find_fonts, finish, render_handwriting, render_text

from mnist_bp import imageprep as pp
from mnist_bp.imageprep import as_gray


def stages(photo) -> list[tuple[str, np.ndarray]]:
    gray = as_gray(photo)
    ink = pp.find_ink(gray)
    kept = pp.only(ink, ink.keep)
    return [("photo", np.asarray(photo.convert("RGB"))),
            ("grayscale", gray),
            ("paper subtracted,\nink light on dark", ink.image),
            ("pieces kept\n(specks dropped)", kept),
            ("28x28: 20 px box,\ncentre of mass", pp.place(kept))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/preprocess-steps.png"))
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(args.seed)
    fonts = find_fonts(["DejaVuSans-Bold", "DejaVuSerif."]) or find_fonts(["DejaVu"])
    photos = [finish(render_text("4", fonts[0], rng), rng)]
    if args.data_dir:
        from mnist_bp.data.datadir import load_dataset
        test = load_dataset("mnist", args.data_dir).test
        photos.append(finish(render_handwriting(np.asarray(test.images[0]), rng), rng))
    rows = [stages(p) for p in photos]
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(2.2 * len(rows[0]), 3.0 * len(rows)),
                             squeeze=False)
    for row, ax_row in zip(rows, axes, strict=True):
        for (title, image), ax in zip(row, ax_row, strict=True):
            ax.imshow(image, cmap=None if image.ndim == 3 else "gray", vmin=0, vmax=1 if
                      image.dtype != np.uint8 else 255)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
