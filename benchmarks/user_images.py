"""Sets of "user" images for `mnist-bp predict`, and its accuracy on them.

    python benchmarks/user_images.py make --out /tmp/sets --data-dir D [--fonts dev|holdout]
    python benchmarks/user_images.py score /tmp/sets CKPT... [--invert auto|no]

`make` writes these sets, each a folder of images and a `labels.csv` (file, label):
- `fonts/`: single digits in handwriting-style fonts that Debian ships (apt-get install
  fonts-comic-neue fonts-humor-sans fonts-dkg-handwriting fonts-breip fonts-bwht
  fonts-dancingscript fonts-femkeklaver fonts-kristi fonts-kaushanscript fonts-ecolier-court),
  dark ink on tinted paper, rotated, blurred, noisy, JPEG or PNG (`--paper mottled`:
  coloured, blotchy paper with dark specks, and blue, black, red or grey ink);
- `numbers/`: numbers of 2-4 digits in the same fonts, on the same kind of paper;
- `hollow/`, `hairline/`, `heavy/` and their `-numbers/`: the same for fonts of other stroke
  styles (`STYLE_FONTS`, apt-get install the `STYLE_PACKAGES`), and handwriting fonts drawn
  as outlines or emboldened (`PEN_FONTS`);
- `handwriting/`: real MNIST digits (the last 1,000 training images of the data dir, the
  validation split used for tuning; `--split test` for the test set) upscaled and printed as
  dark ink on tinted paper, off-centre, with a shadow across the page, noise and JPEG; their
  28x28 originals go to `handwriting-originals/` as PNG, to score the gap;
- `drawn/`: the same digits traced as `serve`'s page draws them (a mouse line 8-40 px wide on
  a 280x280 canvas);
`--sizes`, `--blur` and `--noise` draw smaller digits and worse photos (e.g. `--sizes 28 70
--blur 2.5 --noise 14`: font digits about 20-50 pixels high), `--margins` font digits
photographed closer (`--margins 0.05 0.2`: the text fills 70-90 % of the page),
`--outline-pen` and `--bold-pen` the stroke styles with other pens.
`score` prints the accuracy of each checkpoint on each set (numbers: whole number exactly
right). Everything is drawn from generators seeded by `--seed` (the font sets the same with
or without a data dir).
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
# Stroke styles other than a pen's: fonts drawn that way, and (`pen`) the handwriting fonts
# redrawn that way: outlined with a pen of a few percent of the size (hollow), or emboldened
# by one (heavy). Hairline fonts have no such pen: a font is only as thin as it was designed.
STYLE_FONTS = {
    "hollow": {"dev": ["CabinSketch-Bold"],
               "holdout": ["TrainOne", "RampartOne", "CabinSketch-Regular"]},
    "hairline": {"dev": ["Lato-Thin.", "Roboto-Thin.", "Dosis-ExtraLight", "Jura-Light",
                         "YanoneKaffeesatz-ExtraLight", "Sora-Thin"],
                 "holdout": ["Lato-Hairline.", "Inter-Thin.", "LeagueSpartan-ExtraLight",
                             "Quicksand-Light", "Manrope-ExtraLight", "DejaVuSans-ExtraLight"]},
    "heavy": {"dev": ["Roboto-Black.", "LeagueSpartan-Black", "CherryBomb", "StayPuft",
                      "lobster", "Sora-ExtraBold"],
              "holdout": ["Lato-Black.", "Inter-Black.", "ReggaeOne", "RocknRollOne",
                          "LeckerliOne", "Fantasma-Bold", "Dosis-ExtraBold"]},
}
# outlined: the heavy fonts (a thin font's outline closes up); emboldened: the handwriting fonts
PEN_FONTS = {"hollow": STYLE_FONTS["heavy"], "heavy": {"dev": DEV_FONTS, "holdout": HOLDOUT_FONTS}}
PEN = {"hollow": (0.015, 0.035), "heavy": (0.02, 0.045)}  # pen width / font size
BOLDER, OPEN = 2.5, 0.4  # emboldened: at most this many times the ink, this much of the loops
STYLE_PACKAGES = ("fonts-cabinsketch fonts-train fonts-rampart fonts-lato fonts-roboto-unhinted "
                  "fonts-dosis fonts-jura fonts-yanone-kaffeesatz fonts-sora fonts-inter "
                  "fonts-league-spartan fonts-quicksand fonts-manrope fonts-dejavu-extra "
                  "fonts-cherrybomb fonts-staypuft fonts-lobster fonts-reggae fonts-rocknroll "
                  "fonts-leckerli-one fonts-fantasma")


def find_fonts(names: list[str]) -> list[str]:
    files = sorted(glob.glob(f"{FONT_DIRS}/**/*.[ot]tf", recursive=True))
    return [f for f in files if any(Path(f).name.startswith(n) for n in names)]


def paper_and_ink(rng):
    """A light tinted paper colour and a dark ink colour (RGB 0..255)."""
    paper = rng.uniform(190, 255, 3) - rng.uniform(0, 25) * np.array([0, 0.3, 1.0])  # warm tints
    ink = rng.choice([np.array([20, 20, 25]), np.array([25, 35, 110]), np.array([60, 60, 60]),
                      np.array([10, 10, 60])]) + rng.uniform(-10, 10, 3)
    return np.clip(paper, 0, 255), np.clip(ink, 0, 255)


# --paper mottled: yellow, blue, pink, green-grey, grey and cream papers; blue, black, red
# and grey inks (RGB 0..255)
PAPERS = ((250, 240, 170), (200, 220, 245), (245, 205, 215), (200, 215, 195), (185, 185, 178),
          (235, 225, 205))
INKS = ((30, 40, 150), (20, 20, 25), (190, 30, 35), (60, 60, 70))


def finish(ink_alpha: np.ndarray, rng, shadow=True, paper_kind: str = "plain",
           blur: float = 1.5, noise: float = 8):
    """Turn an ink coverage map (H, W) in [0, 1] into a photo-like RGB PIL image: sensor
    noise of 2 to `noise` grey levels, and half the time a Gaussian blur of 0.3 to `blur`
    pixels. `paper_kind` "mottled": one of `PAPERS` with smooth blotches (2-6 % of its
    brightness, 4-12 pixels across) and dark specks, under one of `INKS`."""
    from PIL import Image, ImageFilter

    h, w = ink_alpha.shape
    if paper_kind == "mottled":
        paper = np.array(PAPERS[int(rng.integers(len(PAPERS)))], float) + rng.uniform(-8, 8, 3)
        ink = np.array(INKS[int(rng.integers(len(INKS)))], float) + rng.uniform(-10, 10, 3)
        paper, ink = np.clip(paper, 0, 255), np.clip(ink, 0, 255)
    else:
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
    img += rng.normal(0, rng.uniform(2, noise), img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.5:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, blur)))
    if paper_kind == "mottled":
        from scipy import ndimage

        img = np.asarray(pil, np.float32)
        blot = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), rng.uniform(4, 12))
        img = img * (1 + rng.uniform(0.02, 0.06) * blot / (blot.std() + 1e-6))[..., None]
        specks = rng.random((h, w)) < rng.uniform(0.0005, 0.003)
        img[specks] *= rng.uniform(0.6, 0.85)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    return pil


def save(pil, folder: Path, stem: str, rng) -> str:
    if rng.random() < 0.6:
        name = f"{stem}.jpg"
        pil.save(folder / name, quality=int(rng.integers(40, 90)))
    else:
        name = f"{stem}.png"
        pil.save(folder / name)
    return name


def render_text(text: str, font_file: str, rng, style: str | None = None,
                sizes: tuple[int, int] = (60, 180), margins: tuple[float, float] = (0.3, 1.5),
                pens: dict | None = None):
    """Ink coverage (H, W) of `text` in a font of a size in `sizes` (pixels, the upper end
    excluded), rotated a little, on a canvas with margins (each side a share in `margins` of
    the text's width or height, plus 10 pixels); `style` "hollow" draws only the glyphs'
    outlines, "heavy" emboldens them, each with a pen drawn from `pens` (default `PEN`)."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(*sizes))
    font = ImageFont.truetype(font_file, size)
    pen = max(1, round(size * rng.uniform(*{**PEN, **(pens or {})}[style]))) if style else 0
    if style == "heavy":  # still legible: loops open (`OPEN` of their area), `BOLDER` the ink
        plain = glyphs(text, font, 0)
        while pen > 1:
            bold = glyphs(text, font, pen)
            if bold[0] >= OPEN * plain[0] and bold[1] <= BOLDER * plain[1]:
                break
            pen -= 1
    left, top, right, bottom = font.getbbox(text, stroke_width=pen)
    tw, th = right - left, bottom - top
    margin_x = int(tw * rng.uniform(*margins)) + 10
    margin_y = int(th * rng.uniform(*margins)) + 10
    canvas = Image.new("L", (tw + 2 * margin_x, th + 2 * margin_y), 0)
    dx, dy = rng.integers(-margin_x // 2, margin_x // 2 + 1), rng.integers(-margin_y // 2,
                                                                          margin_y // 2 + 1)
    ImageDraw.Draw(canvas).text((margin_x - left + dx, margin_y - top + dy), text,
                                fill=0 if style == "hollow" else 255, font=font,
                                stroke_width=pen, stroke_fill=255)
    canvas = canvas.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC, expand=False)
    return np.asarray(canvas, np.float32) / 255


def glyphs(text: str, font, pen: int) -> tuple[int, int]:
    """The area of the closed loops (holes) of `text` in `font` emboldened by `pen` pixels,
    and of its ink, in pixels."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    left, top, right, bottom = font.getbbox(text, stroke_width=pen)
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, fill=255, font=font,
                                stroke_width=pen, stroke_fill=255)
    ink = np.asarray(canvas) > 127
    return int((ndimage.binary_fill_holes(ink) & ~ink).sum()), int(ink.sum())


def render_drawn(digit28: np.ndarray, rng) -> np.ndarray:
    """An MNIST digit as `serve`'s page draws one: its centre line traced with a round pen
    8-40 pixels wide (at most a fifth of the digit's height, or its loops close), black on a
    white 280x280 canvas, the digit 100-250 pixels high."""
    from PIL import Image
    from scipy import ndimage
    from skimage.morphology import skeletonize

    side = int(rng.integers(100, 251))
    big = np.asarray(Image.fromarray(digit28).resize((side, side), Image.BILINEAR)) > 100
    lines = np.zeros((280, 280), bool)
    y, x = rng.integers(0, 280 - side + 1, 2)
    lines[y:y + side, x:x + side] = skeletonize(big)
    pen = rng.uniform(8, min(40, 0.2 * side))
    ink = np.clip(pen / 2 + 0.5 - ndimage.distance_transform_edt(~lines), 0, 1)
    return (255 * (1 - ink)).astype(np.uint8)


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


def make(out: Path, data_dir, fonts: str, per_font: int, seed: int, split: str, count: int,
         paper: str = "plain", look: dict | None = None):
    """`look`: keyword arguments for the fonts' `render_text` (`sizes`, `margins`, `pens`)
    and every image's `finish` (`blur`, `noise`), to render other sizes, pens, closer and
    worse photos than the defaults."""
    from PIL import Image

    look = look or {}
    photo = {k: v for k, v in look.items() if k in ("blur", "noise")}

    rng = np.random.default_rng(seed)
    font_files = find_fonts(DEV_FONTS if fonts == "dev" else HOLDOUT_FONTS)
    if not font_files:
        sys.exit("no handwriting fonts found: apt-get install the font packages in this "
                 "script's docstring")
    for name in ("handwriting", "handwriting-originals"):
        (out / name).mkdir(parents=True, exist_ok=True)
    write_fonts(out / "fonts", out / "numbers", [(f, None) for f in font_files], per_font, rng,
                paper, look)

    if data_dir is not None:
        from mnist_bp.data.datadir import load_dataset

        ds = load_dataset("mnist", data_dir)
        images, labels = ((ds.train.images[-count:], ds.train.labels[-count:]) if split == "val"
                          else (ds.test.images[:count], ds.test.labels[:count]))
        rows, originals = [], []
        for i, (im, label) in enumerate(zip(images, labels, strict=True)):
            pil = finish(render_handwriting(np.asarray(im), rng), rng, paper_kind=paper,
                         **photo)
            rows.append((save(pil, out / "handwriting", f"h{i:04d}", rng), int(label)))
            Image.fromarray(np.asarray(im)).save(out / "handwriting-originals" / f"h{i:04d}.png")
            originals.append((f"h{i:04d}.png", int(label)))
        write_labels(out / "handwriting", rows)
        write_labels(out / "handwriting-originals", originals)
        (out / "drawn").mkdir(parents=True, exist_ok=True)
        rows = []
        for i, (im, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(render_drawn(np.asarray(im), rng)).save(out / "drawn" / f"d{i:04d}.png")
            rows.append((f"d{i:04d}.png", int(label)))
        write_labels(out / "drawn", rows)
    counts = [f"{len(font_files)} handwriting fonts"]
    rng = np.random.default_rng(seed + 1)  # the font sets do not depend on the data dir
    for style, names in STYLE_FONTS.items():
        drawn = [(f, None) for f in find_fonts(names[fonts])]
        drawn += [(f, style) for f in find_fonts(PEN_FONTS.get(style, {}).get(fonts, []))]
        if drawn:
            write_fonts(out / style, out / f"{style}-numbers", drawn, per_font, rng, paper,
                        look)
        counts.append(f"{len(drawn)} {style}")
    print(f"wrote {out} ({', '.join(counts)})")


def write_fonts(digits: Path, numbers: Path, drawn, per_font: int, rng, paper: str = "plain",
                look: dict | None = None):
    """Single digits (`per_font` of each per font) and numbers of 2-4 digits (3 x `per_font`
    per font) for (font file, style) pairs, drawn with `make`'s `look`."""
    look = look or {}
    text = {k: v for k, v in look.items() if k in ("sizes", "margins", "pens")}
    photo = {k: v for k, v in look.items() if k in ("blur", "noise")}
    for folder in (digits, numbers):
        folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for fi, (font_file, style) in enumerate(drawn):
        for digit in range(10):
            for k in range(per_font):
                pil = finish(render_text(str(digit), font_file, rng, style, **text), rng,
                             paper_kind=paper, **photo)
                rows.append((save(pil, digits, f"f{fi:02d}-{digit}-{k}", rng), digit))
    write_labels(digits, rows)
    rows = []
    for fi, (font_file, style) in enumerate(drawn):
        for k in range(per_font * 3):
            number = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(2, 5))))
            pil = finish(render_text(number, font_file, rng, style, **text), rng,
                         paper_kind=paper, **photo)
            rows.append((save(pil, numbers, f"n{fi:02d}-{k}-{number}", rng), number))
    write_labels(numbers, rows)


SETS = ("fonts", "numbers", *(f"{style}{kind}" for style in STYLE_FONTS
                               for kind in ("", "-numbers")),
        "handwriting", "handwriting-originals", "drawn")


def read_labels(folder: Path) -> list[tuple[str, str]]:
    with open(folder / "labels.csv") as f:
        return [tuple(r) for r in list(csv.reader(f))[1:]]


def score(sets: Path, checkpoints: list[str], invert: str, names=None,
          confusions: bool = False, in_process: bool = False) -> dict:
    """Each checkpoint's share of each set read right; with `confusions`, a single-digit
    set's commonest misreadings too (digit -> read as, and how many). `in_process` prepares
    the images with `imageprep` in this process (no decoding workers), so that another
    checkout's preprocessing can be scored by putting it first on PYTHONPATH."""
    from collections import Counter

    from mnist_bp.model import load

    results = {}
    for ckpt in checkpoints:
        predictor = load(ckpt)
        for name in names or SETS:
            folder = sets / name
            if not (folder / "labels.csv").is_file():
                continue
            rows = read_labels(folder)
            number = name.endswith("numbers")
            paths = [folder / f for f, _ in rows]
            outcome = (prepared_here(predictor, paths, invert, number) if in_process else
                       predictor.predict_paths(paths, invert=invert, number=number))
            right, misread = 0, Counter()
            for (_, label), result in zip(rows, outcome, strict=True):
                if "error" in result:
                    continue
                got = result["number"] if number else str(result["digit"])
                right += got == label
                misread[(label, got)] += got != label
            results[(ckpt, name)] = right / len(rows)
            print(f"{ckpt}  {name:<22} invert={invert:<4} {right / len(rows):.4f} "
                  f"({right}/{len(rows)})", flush=True)
            if confusions and not number and +misread:
                common = ", ".join(f"{a} as {b}: {n}" for (a, b), n in
                                   (+misread).most_common(5))
                print(f"    {len(rows) - right} misses; commonest: {common}", flush=True)
    return results


def prepared_here(predictor, paths, invert: str, number: bool) -> list[dict]:
    """`predict_paths`'s results (digit, or number), prepared in this process."""
    from mnist_bp import imageprep, prediction

    # the network's judgement of heavy parts as two digits (checkouts before it: none)
    judged = getattr(prediction, "judged", lambda inputs, probabilities: inputs)

    results = []
    for path in paths:
        try:
            gray = imageprep.read_image(path)
            inputs = judged(imageprep.prepare_number(gray, invert) if number
                            else [imageprep.prepare(gray, invert)], predictor.probabilities)
        except imageprep.ImageError as exc:
            results.append({"error": str(exc)})
            continue
        read = predictor.predict(np.stack([p.image for p in inputs]))
        results.append({"digit": read[0]["digit"],
                        "number": "".join(str(r["digit"]) for r in read)})
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
    m.add_argument("--paper", choices=["plain", "mottled"], default="plain",
                   help="mottled: coloured, blotchy paper with specks, and blue, black, red "
                        "or grey ink")
    m.add_argument("--sizes", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="font sizes in pixels (default 60 180: digits about 45-130 high)")
    m.add_argument("--margins", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="font sets' margins on each side, shares of the text's size (default "
                        "0.3 1.5; 0.05 0.2: photographed close)")
    m.add_argument("--outline-pen", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="hollow sets' outline pen, shares of the font size (default "
                        f"{PEN['hollow'][0]} {PEN['hollow'][1]})")
    m.add_argument("--bold-pen", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="heavy sets' emboldening pen, shares of the font size, narrowed "
                        "where it would close the loops (default "
                        f"{PEN['heavy'][0]} {PEN['heavy'][1]})")
    m.add_argument("--blur", type=float, help="the largest blur, in pixels (default 1.5)")
    m.add_argument("--noise", type=float, help="the largest sensor noise, in grey levels "
                   "(default 8)")
    s = sub.add_parser("score")
    s.add_argument("sets", type=Path)
    s.add_argument("checkpoints", nargs="+")
    s.add_argument("--invert", default="auto", choices=["auto", "no", "yes"])
    s.add_argument("--only", nargs="*")
    s.add_argument("--confusions", action="store_true",
                   help="also print each digit set's commonest misreadings")
    s.add_argument("--in-process", action="store_true",
                   help="prepare the images in this process (to score another checkout's "
                        "preprocessing, put it first on PYTHONPATH)")
    args = parser.parse_args()
    if args.cmd == "make":
        look = {k: v for k, v in (("sizes", args.sizes and tuple(args.sizes)),
                                  ("margins", args.margins and tuple(args.margins)),
                                  ("blur", args.blur), ("noise", args.noise)) if v}
        pens = {k: tuple(v) for k, v in (("hollow", args.outline_pen),
                                         ("heavy", args.bold_pen)) if v}
        if pens:
            look["pens"] = pens
        make(args.out, args.data_dir, args.fonts, args.per_font, args.seed, args.split,
             args.count, args.paper, look)
    else:
        score(args.sets, args.checkpoints, args.invert, args.only, args.confusions,
              args.in_process)


if __name__ == "__main__":
    main()
