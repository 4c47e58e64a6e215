"""Sets of "user" images for `mnist-bp predict`, and its accuracy on them.

    python benchmarks/user_images.py make --out /tmp/sets --data-dir D [--fonts dev|holdout]
    python benchmarks/user_images.py score /tmp/sets CKPT... [--invert auto|no]

`make` writes three sets, each a folder of images and a `labels.csv` (file, label):
- `fonts/`: single digits in handwriting-style fonts that Debian ships (apt-get install
  fonts-comic-neue fonts-humor-sans fonts-dkg-handwriting fonts-breip fonts-bwht
  fonts-dancingscript fonts-femkeklaver fonts-kristi fonts-kaushanscript fonts-ecolier-court),
  dark ink on tinted paper, rotated, blurred, noisy, JPEG or PNG;
- `numbers/`: numbers of 2-4 digits in the same fonts, on the same kind of paper;
- `handwriting/`: real MNIST digits (the last 1,000 training images of the data dir, the
  validation split used for tuning; `--split test` for the test set) upscaled and printed as
  dark ink on tinted paper, off-centre, with a shadow across the page, noise and JPEG; their
  28x28 originals go to `handwriting-originals/` as PNG, to score the gap.
`score` prints the accuracy of each checkpoint on each set (numbers: whole number exactly
right). Everything is drawn from one seeded generator.
"""

from __future__ import annotations

import argparse
import csv
import glob
import sys
from pathlib import Path

import numpy as np

FONT_DIRS = "/usr/share/fonts"
DEV_FONTS = ["ComicNeue-Regular", "ComicNeue-Bold", "Humor-Sans", "dkg.", "dkgBd", "Breip.",
             "BecauseWeLearn", "DancingScript-Regular", "femkeklaver", "Kristi", "KaushanScript",
             "Ecolier-court"]
HOLDOUT_FONTS = ["ComicNeue-Italic", "ComicNeue-Light.", "dkgIt", "dkgBI", "breipfont",
                 "BecauseWeBuild", "BecauseWeConnect", "BecauseWeCreate", "BecauseWeMentor",
                 "BecauseWeOrganize", "DancingScript-Bold"]


def find_fonts(names: list[str]) -> list[str]:
    files = sorted(glob.glob(f"{FONT_DIRS}/**/*.[ot]tf", recursive=True))
    return [f for f in files if any(Path(f).name.startswith(n) for n in names)]


def paper_and_ink(rng):
    """A light tinted paper colour and a dark ink colour (RGB 0..255)."""
    paper = rng.uniform(190, 255, 3) - rng.uniform(0, 25) * np.array([0, 0.3, 1.0])  # warm tints
    ink = rng.choice([np.array([20, 20, 25]), np.array([25, 35, 110]), np.array([60, 60, 60]),
                      np.array([10, 10, 60])]) + rng.uniform(-10, 10, 3)
    return np.clip(paper, 0, 255), np.clip(ink, 0, 255)


def finish(ink_alpha: np.ndarray, rng, shadow=True):
    """Turn an ink coverage map (H, W) in [0, 1] into a photo-like RGB PIL image."""
    from PIL import Image, ImageFilter

    h, w = ink_alpha.shape
    paper, ink = paper_and_ink(rng)
    alpha = ink_alpha[..., None]
    img = paper[None, None, :] * (1 - alpha) + ink[None, None, :] * alpha
    if shadow:  # a soft shadow across part of the page
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        d = (np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2)) / max(h, w)
        edge = rng.uniform(-0.3, 0.3)
        depth = rng.uniform(0.15, 0.4)
        img *= (1 - depth / (1 + np.exp(-(d - edge) * 12)))[..., None]
    img += rng.normal(0, rng.uniform(2, 8), img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.5:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return pil


def save(pil, folder: Path, stem: str, rng) -> str:
    if rng.random() < 0.6:
        name = f"{stem}.jpg"
        pil.save(folder / name, quality=int(rng.integers(40, 90)))
    else:
        name = f"{stem}.png"
        pil.save(folder / name)
    return name


def render_text(text: str, font_file: str, rng):
    """Ink coverage (H, W) of `text` in a font, rotated a little, on a canvas with margins."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(60, 180))
    font = ImageFont.truetype(font_file, size)
    left, top, right, bottom = font.getbbox(text)
    tw, th = right - left, bottom - top
    margin_x = int(tw * rng.uniform(0.3, 1.5)) + 10
    margin_y = int(th * rng.uniform(0.3, 1.5)) + 10
    canvas = Image.new("L", (tw + 2 * margin_x, th + 2 * margin_y), 0)
    dx, dy = rng.integers(-margin_x // 2, margin_x // 2 + 1), rng.integers(-margin_y // 2,
                                                                          margin_y // 2 + 1)
    ImageDraw.Draw(canvas).text((margin_x - left + dx, margin_y - top + dy), text, fill=255,
                                font=font)
    canvas = canvas.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC, expand=False)
    return np.asarray(canvas, np.float32) / 255


def render_handwriting(digit28: np.ndarray, rng):
    """A 28x28 MNIST digit printed large on a page, off-centre with margins."""
    from PIL import Image

    scale = rng.uniform(5, 14)
    side = int(28 * scale)
    big = Image.fromarray(digit28).resize((side, side), Image.BICUBIC)
    h = int(side * rng.uniform(1.1, 2.0))
    w = int(side * rng.uniform(1.1, 2.2))
    canvas = np.zeros((h, w), np.float32)
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    canvas[y:y + side, x:x + side] = np.asarray(big, np.float32) / 255
    return np.clip(canvas, 0, 1)


def write_labels(folder: Path, rows):
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "label"), *rows])


def make(out: Path, data_dir, fonts: str, per_font: int, seed: int, split: str, count: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    font_files = find_fonts(DEV_FONTS if fonts == "dev" else HOLDOUT_FONTS)
    if not font_files:
        sys.exit("no handwriting fonts found: apt-get install the font packages in this "
                 "script's docstring")
    for name in ("fonts", "numbers", "handwriting", "handwriting-originals"):
        (out / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for fi, font_file in enumerate(font_files):
        for digit in range(10):
            for k in range(per_font):
                pil = finish(render_text(str(digit), font_file, rng), rng)
                rows.append((save(pil, out / "fonts", f"f{fi:02d}-{digit}-{k}", rng), digit))
    write_labels(out / "fonts", rows)
    rows = []
    for fi, font_file in enumerate(font_files):
        for k in range(per_font * 3):
            number = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(2, 5))))
            pil = finish(render_text(number, font_file, rng), rng)
            rows.append((save(pil, out / "numbers", f"n{fi:02d}-{k}-{number}", rng), number))
    write_labels(out / "numbers", rows)

    if data_dir is not None:
        from mnist_bp.data.datadir import load_dataset

        ds = load_dataset("mnist", data_dir)
        images, labels = ((ds.train.images[-count:], ds.train.labels[-count:]) if split == "val"
                          else (ds.test.images[:count], ds.test.labels[:count]))
        rows, originals = [], []
        for i, (im, label) in enumerate(zip(images, labels, strict=True)):
            pil = finish(render_handwriting(np.asarray(im), rng), rng)
            rows.append((save(pil, out / "handwriting", f"h{i:04d}", rng), int(label)))
            Image.fromarray(np.asarray(im)).save(out / "handwriting-originals" / f"h{i:04d}.png")
            originals.append((f"h{i:04d}.png", int(label)))
        write_labels(out / "handwriting", rows)
        write_labels(out / "handwriting-originals", originals)
    print(f"wrote {out} ({len(font_files)} fonts)")


def read_labels(folder: Path) -> list[tuple[str, str]]:
    with open(folder / "labels.csv") as f:
        return [tuple(r) for r in list(csv.reader(f))[1:]]


def score(sets: Path, checkpoints: list[str], invert: str, names=None) -> dict:
    from mnist_bp.model import load

    results = {}
    for ckpt in checkpoints:
        predictor = load(ckpt)
        for name in names or ("fonts", "numbers", "handwriting", "handwriting-originals"):
            folder = sets / name
            if not (folder / "labels.csv").is_file():
                continue
            rows = read_labels(folder)
            number = name == "numbers"
            outcome = predictor.predict_paths([folder / f for f, _ in rows], invert=invert,
                                              number=number)
            right = 0
            for (_, label), result in zip(rows, outcome, strict=True):
                if "error" in result:
                    continue
                got = result["number"] if number else str(result["digit"])
                right += got == label
            results[(ckpt, name)] = right / len(rows)
            print(f"{ckpt}  {name:<22} invert={invert:<4} {right / len(rows):.4f} "
                  f"({right}/{len(rows)})", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--data-dir")
    m.add_argument("--fonts", choices=["dev", "holdout"], default="dev")
    m.add_argument("--per-font", type=int, default=5)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--split", choices=["val", "test"], default="val")
    m.add_argument("--count", type=int, default=1000)
    s = sub.add_parser("score")
    s.add_argument("sets", type=Path)
    s.add_argument("checkpoints", nargs="+")
    s.add_argument("--invert", default="auto", choices=["auto", "no", "yes"])
    s.add_argument("--only", nargs="*")
    args = parser.parse_args()
    if args.cmd == "make":
        make(args.out, args.data_dir, args.fonts, args.per_font, args.seed, args.split,
             args.count)
    else:
        score(args.sets, args.checkpoints, args.invert, args.only)


if __name__ == "__main__":
    main()
