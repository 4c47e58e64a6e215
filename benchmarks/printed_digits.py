"""The printed digits that `data.printed: true` adds to the training images.

    python benchmarks/printed_digits.py --out mnist_bp/data/printed [--per-font 4] [--seed 1]
    python benchmarks/printed_digits.py --out mnist_bp/data/printed --wide --per-font 1 --seed 12

MNIST is handwriting only. A network trained on it alone reads a printed 1 with a flag as 7,
a closed 4 as 9, a narrow 0 as 1: shapes no MNIST writer made. This draws the digits of every
font Debian ships that has ten digits of its own (`apt-get install` the packages in
`PACKAGES` as well as user_images.py's), except the families the held-out sets of
user_images.py use (`HOLDOUT_FAMILIES`) and fonts whose digits are not ordinary digits
(`NOT_DIGITS`), and prepares each the way `predict` prepares a user's image:
- `--per-font` renderings of each digit per font, and twice as many numbers of 2-4 digits,
  whose digits are kept when `prepare_number` cuts the number into as many parts;
- a plain pen (half), outlined (a fifth) or emboldened (the rest), as user_images.py draws
  them, on plain or (three in ten) mottled paper, rotated, shaded, blurred and noisy;
- each through `imageprep.prepare` / `prepare_number`: the 28x28 inputs the network sees;
- `--wide` appends to the files there each font's digits drawn once more over a wider look
  (`draw_wide`: small or close, thin to thick pens, more blur and noise), which teaches the
  network the inputs that small, blurred or thickly outlined digits become.
It writes MNIST's IDX format (`printed-images-idx3-ubyte.gz`, `printed-labels-idx1-ubyte.gz`)
and `fonts.txt`, the fonts drawn, and prints the files' SHA-256, which `SHA256` in
mnist_bp/data/printed.py must hold for a run to load them. The same fonts, library
versions, preprocessing and seed give the same files.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import user_images as ui  # noqa: E402

from mnist_bp import imageprep  # noqa: E402
from mnist_bp.data import idx  # noqa: E402

IMAGES, LABELS = "printed-images-idx3-ubyte.gz", "printed-labels-idx1-ubyte.gz"
# every font of these families is left out: the held-out sets are read in them
HOLDOUT_FAMILIES = ("ComicNeue", "dkg", "breip", "BecauseWe", "DancingScript", "TrainOne",
                    "RampartOne", "CabinSketch", "Lato", "Inter", "LeagueSpartan", "Quicksand",
                    "Manrope", "DejaVu", "ReggaeOne", "RocknRollOne", "LeckerliOne", "Fantasma",
                    "Dosis")
# digits in key caps, dingbats, seven- and fourteen-segment displays, a display face's own
NOT_DIGITS = ("D050000L", "LinBiolinum_K", "DSEG", "le-murmure")
PACKAGES = ("fonts-humor-sans fonts-femkeklaver fonts-kristi fonts-kaushanscript "
            "fonts-ecolier-court fonts-freefont-ttf fonts-urw-base35 fonts-open-sans "
            "fonts-cantarell fonts-hack "
            "fonts-croscore fonts-texgyre fonts-linuxlibertine fonts-sil-andika "
            "fonts-anonymous-pro fonts-jetbrains-mono fonts-oflb-euterpe fonts-adf-accanthis "
            "fonts-ebgaramond fonts-kiloji fonts-havana fonts-joscelyn fonts-aoyagi-soseki "
            "fonts-ipafont-gothic fonts-noto-mono fonts-roboto-slab fonts-firacode "
            "fonts-adf-gillius fonts-adf-universalis fonts-adf-berenis fonts-oldstandard "
            "fonts-league-mono fonts-comfortaa fonts-klee fonts-liberation fonts-okolaks "
            "fonts-rufscript fonts-sjfonts fonts-tomsontalks fonts-beteckna fonts-ubuntu-title "
            "fonts-radisnoir fonts-solide-mirage")
STYLES, STYLE_P = (None, "hollow", "heavy"), (0.5, 0.2, 0.3)
MOTTLED = 0.3  # share drawn on mottled paper
# `--wide`: each font's digits once more, and WIDE_NUMBERS numbers, drawn over a wider range
# than the held-out sets: outlined and emboldened more often, small (half of them), close (a
# quarter), thin to thick pens, more blur and noise, mottled paper for half
WIDE_STYLE_P, WIDE_NUMBERS = (0.3, 0.35, 0.35), 4
WIDE_SMALL, WIDE_CLOSE, WIDE_MOTTLED = (0.5, (28, 70)), (0.25, (0.05, 0.2)), 0.5
WIDE_PENS = {"hollow": (0.006, 0.055), "heavy": (0.008, 0.07)}
WIDE_BLUR, WIDE_NOISE = (1.5, 3.0), (8, 16)


def held_out(name: str) -> bool:
    return any(name.lower().startswith(f.lower()) for f in HOLDOUT_FAMILIES + NOT_DIGITS)


def training_fonts() -> list[str]:
    """Font files with ten distinct, non-empty digits, outside the held-out families."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = []
    for path in sorted(glob.glob(f"{ui.FONT_DIRS}/**/*.[ot]tf", recursive=True)):
        if held_out(Path(path).name):
            continue
        try:
            font = ImageFont.truetype(path, 40)
        except OSError:
            continue
        glyphs = set()
        for digit in "0123456789":
            left, top, right, bottom = font.getbbox(digit)
            if right - left < 2 or bottom - top < 2:
                break
            canvas = Image.new("L", (right - left + 4, bottom - top + 4))
            ImageDraw.Draw(canvas).text((2 - left, 2 - top), digit, fill=255, font=font)
            glyphs.add(canvas.tobytes() + bytes(canvas.size))
        if len(glyphs) == 10:  # a font without digits draws one box for all ten
            fonts.append(path)
    return fonts


def draw(text: str, font: str, rng):
    style = STYLES[int(rng.choice(len(STYLES), p=STYLE_P))]
    paper = "mottled" if rng.random() < MOTTLED else "plain"
    pil = ui.finish(ui.render_text(text, font, rng, style), rng, paper_kind=paper)
    return imageprep.as_gray(pil)


def draw_wide(text: str, font: str, rng):
    style = STYLES[int(rng.choice(len(STYLES), p=WIDE_STYLE_P))]
    sizes = WIDE_SMALL[1] if rng.random() < WIDE_SMALL[0] else (60, 180)
    margins = WIDE_CLOSE[1] if rng.random() < WIDE_CLOSE[0] else (0.3, 1.5)
    coverage = ui.render_text(text, font, rng, style, sizes=sizes, margins=margins,
                              pens=WIDE_PENS)
    paper = "mottled" if rng.random() < WIDE_MOTTLED else "plain"
    pil = ui.finish(coverage, rng, paper_kind=paper, blur=float(rng.uniform(*WIDE_BLUR)),
                    noise=float(rng.uniform(*WIDE_NOISE)))
    return imageprep.as_gray(pil)


def render(args) -> tuple[np.ndarray, np.ndarray]:
    """The digits of some fonts: (images uint8 (N, 28, 28), labels (N,))."""
    fonts, per_font, seed, wide = args
    drawn, numbers = (draw_wide, WIDE_NUMBERS) if wide else (draw, 2 * per_font)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for font in fonts:
        for digit in range(10):
            for _ in range(per_font):
                try:
                    images.append(imageprep.prepare(drawn(str(digit), font, rng)).image)
                except imageprep.ImageError:
                    continue
                labels.append(digit)
        for _ in range(numbers):
            number = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(2, 5))))
            try:
                parts = imageprep.prepare_number(drawn(number, font, rng))
            except imageprep.ImageError:
                continue
            if len(parts) == len(number):
                images += [p.image for p in parts]
                labels += [int(d) for d in number]
    pixels = np.round(np.stack(images) * 255).astype(np.uint8)
    return pixels, np.array(labels, np.uint8)


def make(out: Path, per_font: int, seed: int, workers: int, wide: bool = False) -> None:
    """The printed digits into `out`; `wide`: the wider look's, appended to those there."""
    from multiprocessing import Pool

    fonts = training_fonts()
    if not fonts:
        sys.exit(f"no fonts found: apt-get install {PACKAGES}")
    chunks = 16  # fonts are dealt to chunks in turn; each chunk has its own generator
    seeds = np.random.SeedSequence(seed).spawn(chunks)
    jobs = [(fonts[i::chunks], per_font, seeds[i], wide) for i in range(chunks)]
    with Pool(workers) as pool:
        results = pool.map(render, jobs)
    images = np.concatenate([r[0] for r in results])
    labels = np.concatenate([r[1] for r in results])
    if wide:
        fix = "make them first without --wide"
        images = np.concatenate([idx.read_images(out / IMAGES, fix), images])
        labels = np.concatenate([idx.read_labels(out / LABELS, fix), labels])
    out.mkdir(parents=True, exist_ok=True)
    idx.write(out / IMAGES, images)
    idx.write(out / LABELS, labels)
    (out / "fonts.txt").write_text("".join(f"{Path(f).name}\n" for f in fonts))
    print(f"{len(images):,} digits of {len(fonts)} fonts -> {out} "
          f"(per digit: {np.bincount(labels, minlength=10).tolist()})")
    for name in (IMAGES, LABELS):  # for SHA256 in mnist_bp/data/printed.py
        print(f"{name}: {hashlib.sha256((out / name).read_bytes()).hexdigest()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-font", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--wide", action="store_true",
                        help="append each font's digits drawn over a wider look (once each, "
                             "and 4 numbers: --per-font 1) to the files in --out")
    args = parser.parse_args()
    make(args.out, args.per_font, args.seed, args.workers, args.wide)


if __name__ == "__main__":
    main()
