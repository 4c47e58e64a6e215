"""A user's image -> the 28x28 input an MNIST network expects.

MNIST digits are light ink on a black background, their longest side fitted into 20 pixels
(anti-aliased, keeping the aspect ratio) and placed in 28x28 with the centre of mass at the
centre. A photo or scan is dark ink on light, tinted, unevenly lit paper, anywhere in the frame,
at any size and stroke width. `prepare` closes that gap, step by step:

1. grayscale in [0, 1] (`read_image`: EXIF orientation, transparency, 16-bit);
2. polarity: the ink is whichever tail (darker or lighter than the local median) is heavier,
   and the network wants it light: ink = 1 - gray on light paper (`auto`);
3. the paper's own level, tint and shadow included, estimated per block and subtracted, in two
   passes (the second leaves out the ink the first found, so bold strokes keep their insides);
4. contrast: the ink's level (Otsu's threshold, then a high percentile of the ink) becomes 1;
5. the ink's connected pieces, traced with hysteresis (faint hairlines stay attached); specks,
   small against the largest piece, dropped;
6. at a working size of 80 pixels, strokes made like MNIST's pen line: cores saturated,
   outlined (hollow) strokes closed, very heavy and outlined ones redrawn at MNIST's width
   around their centre lines, thin ones dilated to it;
7. the longest side scaled to 20 px (area-averaged: anti-aliased), the core stretched to 1;
8. placed in 28x28 with the centre of mass at MNIST's average centre, (14, 14).

docs/predict.md shows each step on a photo and how well the whole reads photographed digits
(benchmarks/user_images.py).

An image that is already MNIST-like (28x28, dark background, digit centred in a 20-pixel box)
keeps its pixels: only the background level and contrast are normalised, which leaves a real
MNIST image unchanged.

`--number` (`prepare_number`) splits the ink into digits: outlined strokes closed on the whole
number, connected pieces grouped by the columns they cover (a detached stroke joins the digit
it lies over), heavy pieces cut at necks thinner than the pen (emboldened digits that touch),
pieces much wider than high cut where the least ink crosses (touching digits), narrower ones
cut at a waist between two full-height columns once stood upright (slanted touching digits)
or, heavy, when twice as wide as the number's other digits; parts too short to be digits
join their nearest neighbour or are dropped; heavy parts as wide as a digit are also offered
cut into two or three pieces, for the network to judge (`prediction.judged`); read left to
right.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mnist_bp import limits
from mnist_bp.data.registry import IMAGE_SIDE as SIZE
from mnist_bp.errors import UserError

BOX = 20  # MNIST fits the digit's longest side into 20 pixels
CENTRE = 14.0  # mean centre of mass of MNIST digits, in pixel indices (rows and columns)
# target stroke width / the digit's longest side: MNIST's median is 0.11, 0.09 read fonts best
STROKE = 0.09
WORK_SIDE = 240  # images are analysed at most this large (longest side)
NUMBER_SIDE = 600  # ...and a number's surroundings, looked at again, at most this large
# ...and the ink's surroundings (this share of its size around it) again from the full image
# when that shows it at least ZOOM_GAIN times larger
ZOOM_MARGIN, ZOOM_GAIN = 0.5, 1.5
ZOOM_AGREE = 0.1  # ...unless more than this share of the ink found there is new
MAX_PIXELS = limits.IMAGE_MAX_PIXELS  # larger images are refused (decompression bombs)
MAX_SIDE = limits.IMAGE_MAX_SIDE  # and images with a longer side
MAX_IMAGE_BYTES = limits.IMAGE_BYTES  # and files (or standard input) larger than this
MIN_CONTRAST = 0.08  # below this spread of gray levels an image counts as blank
BG_BLOCKS, BG_PERCENTILE = 16, 20  # background: blocks along the longest side, percentile
COARSE, MIDDLE = 4, 0.5  # the first pass also looks with blocks this many times as large
DARK, WIDEST = 0.8, 1.8  # ...for the middles of heavy strokes (first_ink)
POLARITY_BLOCKS = (BG_BLOCKS, BG_BLOCKS // 2, BG_BLOCKS // 4)  # the ink's side: a vote of 3
# a drawing: this share of the gray range from one of its two levels counts as at it, the
# levels this far apart, this share of the pixels at them and this share at its border's...
TWO_LEVELS = (0.1, 0.5, 0.95, 0.6)
BORDER_CLEAR = 0.3  # ...has its paper on the border's side, this far from the middle level
GROW = 0.5  # the first pass's ink is widened by this many blocks
SPECK = 0.05  # pieces of ink smaller than this share of the largest piece are dropped
LOW = 0.5  # share of the ink threshold down to which pieces are traced
NOISE_FLOOR, FLOOR_CAP = 8, 0.7  # the ink threshold: above the paper's noise, at most
KEEP_MARGIN = 0.01  # ink within this share of the image's side around a kept piece is kept
WORK_BOX = 80  # strokes are normalised with the digit's longest side at this many pixels
# holes that are the insides of outlined strokes (close_hollow): surrounding this share of
# their area...
RING = 0.1
SOLID = 0.7  # ...or less solid than this...
SPAN, CONVEX = 0.8, 0.9  # ...or spanning this share of the digit and less solid than this...
CONTOUR, NARROW = 0.4, 2.5  # ...or 1 / CONTOUR times as wide as the ink and NARROW elongated
DOT = 0.2  # solid ink alone inside a loop, below this share of the largest piece, is a dot
PINHOLE = 3  # holes at most this wide (WORK_BOX pixels) are filled: hatching, rough strokes
CLOSE_RADIUS = 4  # outlines that enclose no hole are closed over this radius (WORK_BOX pixels)
HOLLOW = 1.3  # ...when that adds this much ink
MAX_HOLES = 12  # the shapes of at most this many holes (the widest) are measured
# strokes heavier than this share of the target are redrawn at it: 24 % of MNIST training
# digits are that bold (at 1.6, 67 % are, and the handwriting photographed read worse)
HEAVY = 2.0
# ...their edge traced at this share of the ink's level: blur spreads a stroke's edge over
# the paper around it, and in a small heavy digit over its counters (a 0's, 8's, 9's loop, a
# 5's opening), which the faint level used for outlines closes. Half-way up the blur is the
# edge itself; the counters open further up, and strokes start to break at 0.7.
HEAVY_EDGE = 0.6
SATURATE = 0.5  # ink above this level counts as solid
OUTLINE_LEVEL = 0.5  # saturated ink above this level is traced for outlines
THIN = 0.75  # strokes thinner than this share of the target are dilated
MAX_DILATE = 5  # at most this many WORK_BOX pixels of dilation
MAX_DIGITS = limits.NUMBER_DIGITS  # a number has at most this many digits
MAX_MARKS = limits.NUMBER_MARKS  # ...and at most this many separate pieces of ink
MAX_SLANT = 0.5  # numbers are stood upright from at most this slant (columns per row)
SLANTS = 10  # ...tried in this many steps on each side
TOUCHING = 1.0  # a piece of a number wider than this share of its height is touching digits
WAIST, FULL = 0.5, 0.85  # a narrower piece narrows to this share of the height between two
# columns spanning this share: two digits touch there
PART = (0.3, 1.0)  # ...each of them this narrow to this wide (shares of the height)
INSIDE_SHARE = 0.25  # outlined digits in a number: insides this large count (inside_cut)
INSIDE_AREA = 0.04  # ...and at least this share of the row's height squared
COUNTER_SHARE = 0.7  # a cut between insides leaves this much of each counter to one side
OUTLINE_PEN = 0.12  # a number's outlines are this thin at most (mean width / the ink's height)
CORE, CORE_SHARE = 0.5, 0.2  # a number's piece is cut at faint joins between cores this solid
MAX_THIN = 30  # at most this many layers thinned off a heavy stroke
# before a redraw, a hole whose wall to the paper outside is thinner than this share of the
# stroke width is opened (at 0.5, an outlined 8 whose stroke thins at its start opened too)
PINCH = 0.4
# heavy strokes (mean width above this share of a number's height, MNIST's pen) that touch
# are cut where the ink breaks when eroded by this share of their width, into pieces each
# spanning this share of the height
HEAVY_PEN, NECK, NECK_SPAN = 0.1, 0.45, 0.6
# a heavy number's part this many times as wide as its widest other part (each at least this
# share of the height wide), and this share of the height wide itself, is touching digits
SIBLING, SIBLING_DIGIT, SIBLING_MIN = 1.6, 0.5, 0.9
# a part of a number spanning less than this share of its height is no digit; it joins a
# neighbour this near (a share of the height)
SHORT, JOIN_GAP = 0.4, 0.5
# a heavy number's part this wide (share of the row's height) or wider is also offered cut
# into two or three pieces, each a pen and JUDGE_SIDE of the height wide, at its JUDGE_CUTS
# cheapest local minima of the cut's cost and its JUDGE_CHEAPEST cheapest columns; a cut
# costing at most JUDGE_COST of the part's median column, and leaving each counter mostly
# to one side (COUNTER_SHARE), keeps to the paper between digits
JUDGE_WIDE, JUDGE_SIDE, JUDGE_CUTS, JUDGE_CHEAPEST, JUDGE_COST = 0.45, 0.15, 6, 3, 0.97
LEAN = 0.12  # a touching piece whose strokes lean this much (columns per row) is stood upright
LEAN_WINDOW = 0.5  # ...the lean taken from the edges this near the estimate (columns per row)
LEAN_PASSES = 3  # ...estimated this many times


class ImageError(UserError):
    """This image cannot be read, or holds no digit."""


class TooManyPixels(ImageError):
    """This image has more pixels than allowed (its header or its first frame says so)."""


@dataclass(frozen=True)
class Prepared:
    """One network input: `image` `(28, 28)` float32 in [0, 1], as the network sees it.

    `inverted`: whether it is the opposite of the image's own polarity (the network always
    wants light ink on dark). `light_background`: what the source image had.
    `cuts`: None, or the ways this input (a heavy number's part as wide as a digit) can be
    cut into two or three digits, for the network to judge (`prediction.judged`).
    """

    image: np.ndarray
    inverted: bool
    light_background: bool
    cuts: Cuts | None = None


@dataclass(frozen=True)
class Cuts:
    """A number's part offered cut into digits. `images` `(n, 28, 28)` float32: the distinct
    pieces its cuts make, as network inputs; `shapes` `(n, 2)` float32: each piece's ink
    width and height as shares of the row's height; `ways` `(m, 3)` int: each cut's pieces
    left to right (rows of `images`; -1 after the second piece of a cut in two); `clean`
    `(m,)` bool: whether each cut keeps to the paper between digits (`JUDGE_COST`), not
    through a round digit, which it crosses top and bottom, or through its counter."""

    images: np.ndarray
    shapes: np.ndarray
    ways: np.ndarray
    clean: np.ndarray


# --- reading ---------------------------------------------------------------------------------

# The formats a user sends; every other Pillow plugin is refused before it parses a byte
# (some, like ICO and ICNS, decode pixels while opening).
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF or WebP"
# Larger images are box-averaged by an integer factor right after decoding, before any float
# copy: the analysis works at WORK_SIDE pixels anyway, and it bounds the memory of a request.
REDUCE_ABOVE = 4_000_000


def read_image(source, max_pixels: int | None = None) -> np.ndarray:
    """Grayscale `(H, W)` float32 in [0, 1] from a path, a file object or bytes.

    Only `FORMATS` are opened; an image declaring more than `max_pixels` (default
    `MAX_PIXELS`) is refused from its header, before its pixels are decoded; multi-frame
    images give their first frame. Whatever goes wrong in a decoder becomes one ImageError.
    """
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    too_large = ImageError(f"more than {MAX_IMAGE_BYTES >> 20} MB; no photo of a digit is "
                           f"that large")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > MAX_IMAGE_BYTES:
            raise too_large
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:  # read once, bounded, from the open file (limits.read_bounded)
            source = io.BytesIO(limits.read_bounded(path, MAX_IMAGE_BYTES, "image"))
        except limits.TooLarge:
            raise too_large from None
        except UserError as exc:
            problem = str(exc).removeprefix(f"{path}: ").removesuffix("; is it the right file?")
            if problem == "image not found":
                problem = "cannot read the file (No such file or directory)"
            raise ImageError(problem) from None
    limit = max_pixels if max_pixels is not None else MAX_PIXELS
    try:
        with Image.open(source, formats=FORMATS) as im:
            width, height = im.size
            if width * height > limit:
                raise TooManyPixels(f"{width}x{height} pixels is more than the {limit:,} allowed "
                                 f"(a decompression bomb?); scale it down")
            if width < 1 or height < 1:
                raise ImageError(f"{width}x{height} pixels: an empty image")
            if max(width, height) > MAX_SIDE:  # decoders pay per line: 1 x 16,000,000 is costly
                raise ImageError(f"{width}x{height} pixels: a side longer than {MAX_SIDE:,}; "
                                 f"crop or scale it")
            check_tiles(im, limit)
            im = ImageOps.exif_transpose(im)  # also loads the pixels
            factor = int(np.ceil(np.sqrt(width * height / REDUCE_ABOVE)))
            if factor > 1:
                im = reduced(im, factor)
            return to_gray(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"not a {FORMAT_NAMES} image") from None
    except Image.DecompressionBombError:
        raise TooManyPixels(f"more than the {limit:,} pixels allowed (a decompression "
                         "bomb?); scale it down") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise ImageError(f"cannot read the file ({exc.strerror})") from None
    except MemoryError:
        raise ImageError("not enough memory to decode it; scale it down") from None
    except Exception as exc:  # any decoder's failure, whatever its type
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ImageError(f"truncated or corrupt image ({detail}); export it again") from None


def check_tiles(im, limit: int) -> None:
    """A TIFF's declared tiles, which libtiff allocates whole before decoding one (a 145-byte
    file can declare a 2 GB tile), must be of the image's order of size."""
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return
    tile = int(tags.get(322, 0) or 0) * int(tags.get(323, 0) or 0)  # TileWidth x TileLength
    if tile > min(limit, 4 * im.width * im.height + 65536):
        raise ImageError(f"TIFF tiles of {tags.get(322)}x{tags.get(323)} pixels for a "
                         f"{im.width}x{im.height} image (a decompression bomb?); save it again")


def reduced(im, factor: int):
    """`im` box-averaged by `factor`, in its own depth: 16- and 32-bit images keep their
    levels (8 bits would clip them), colour and transparency go to RGBA, the rest to L."""
    if im.mode.startswith("I;16"):
        im = im.convert("I")
    elif im.mode not in ("I", "F"):
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "L")
    return im.reduce(factor)


def as_gray(source) -> np.ndarray:
    """Grayscale `(H, W)` float32 in [0, 1] of a path, bytes, a file object, a PIL image or a
    2-D array (integers scaled by their full level, `integer_full`; floats clipped to
    [0, 1])."""
    if isinstance(source, np.ndarray):
        if source.ndim != 2 or source.size == 0:
            raise ImageError(f"an array image must be 2-D (H, W) with pixels, not {source.shape}")
        if source.dtype.kind not in "biuf":
            raise ImageError(f"an array image must hold numbers (booleans, integers or "
                             f"floats), not {source.dtype}")
        if source.dtype.kind in "ui":
            full = integer_full(source)
            gray = source.astype(np.float32)  # float32 throughout: no float64 copy
            gray /= np.float32(full)
            return np.clip(gray, 0, 1, out=gray)
        lo, hi = source.min(), source.max()  # NaN and infinities show in them: one pass each
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ImageError("the array holds NaN or infinite values")
        if source.dtype == np.float32 and lo >= 0 and hi <= 1:
            return source  # already grayscale: used as it is (the steps read it, never write)
        return np.clip(source.astype(np.float32), 0, 1)
    if hasattr(source, "mode") and hasattr(source, "getbands"):  # a PIL image
        return to_gray(source)
    return read_image(source)


def integer_full(a: np.ndarray) -> int:
    """The full level of an array of integer levels: its type's maximum for the image types
    (uint8 255, uint16 65535); for other integers (numpy's default int64), 255 when every
    level fits in 0..255 and 65535 when it fits in 0..65535, else an ImageError."""
    if a.dtype in (np.uint8, np.uint16):
        return int(np.iinfo(a.dtype).max)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
        raise ImageError(f"integer levels must lie in 0..255 or 0..65535, not {lo}..{hi}; "
                         f"give floats in [0, 1] instead")
    return 255 if hi <= 255 else 65535


def to_gray(im) -> np.ndarray:
    """A loaded PIL image as grayscale float32 in [0, 1].

    Transparency: the image is laid on a background of the opposite brightness to its
    visible pixels (dark strokes on a transparent layer become dark on white). 16-bit and
    float images keep their full range.
    """
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), np.float32) / 255
        gray = np.asarray(rgba.convert("RGB").convert("L"), np.float32) / 255
        if alpha.min() > 0.99:
            return gray
        visible = alpha > 0.5
        if not visible.any():
            raise ImageError("blank image: every pixel is transparent")
        paper = 1.0 if gray[visible].mean() < 0.5 else 0.0
        return gray * alpha + paper * (1 - alpha)
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.float32)
        full = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        return np.clip(a / full, 0, 1)
    if mode == "F":
        a = np.asarray(im, np.float32)
        if not np.isfinite(a).all():
            raise ImageError("the image holds NaN or infinite pixel values")
        return np.clip(a / 255 if a.max() > 1 else a, 0, 1)
    if mode != "L":
        im = im.convert("L")
    return np.asarray(im, np.float32) / 255


# --- analysis --------------------------------------------------------------------------------

def shrink(gray: np.ndarray, side: int | None = None) -> np.ndarray:
    """Area-averaged downscale so that the longest side is at most `side` (`WORK_SIDE`)."""
    side = side or WORK_SIDE
    h, w = gray.shape
    if max(h, w) <= side:
        return gray
    s = side / max(h, w)
    return resize(gray, (max(1, round(h * s)), max(1, round(w * s))))


def resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Float image resized to `shape` (rows, cols): area-averaged when shrinking (anti-aliased),
    bilinear when enlarging."""
    from PIL import Image

    h, w = shape
    shrinking = h <= a.shape[0] and w <= a.shape[1]
    out = Image.fromarray(np.ascontiguousarray(a, np.float32), "F").resize(
        (w, h), Image.BOX if shrinking else Image.BILINEAR)
    return np.array(out, np.float32)  # writable


def border(a: np.ndarray) -> np.ndarray:
    """The outer ring of pixels (about 4 % of each side, at least one pixel)."""
    h, w = a.shape
    k = max(1, round(0.04 * min(h, w)))
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[:, :k].ravel(), a[:, -k:].ravel()])


def otsu(a: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of values in [0, 1]: the cut maximising the between-class variance."""
    hist, edges = np.histogram(a, bins=bins, range=(0.0, 1.0))
    p = hist / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    between = (mu[-1] * w0 - mu) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)
    return float(edges[int(np.argmax(between[:-1])) + 1])


def block_field(a: np.ndarray, percentile: float, exclude: np.ndarray | None = None,
                blocks: int = BG_BLOCKS) -> np.ndarray:
    """A smooth field following the slow changes of `a` `(H, W)` (paper tint, shadows): a
    percentile of each block (`blocks` of them along the longest side), leaving out the
    `exclude` pixels (ink found by a first pass); blocks with too few pixels left take their
    neighbours' level; the median of each 3x3 neighbourhood of blocks; interpolated back to
    full size."""
    from scipy import ndimage

    h, w = a.shape
    bs = max(4, -(-max(h, w) // blocks))
    gh, gw = -(-h // bs), -(-w // bs)
    padding = ((0, gh * bs - h), (0, gw * bs - w))

    def blocks_of(x):
        return np.pad(x, padding, mode="edge").reshape(gh, bs, gw, bs).transpose(
            0, 2, 1, 3).reshape(gh, gw, -1)

    values = blocks_of(a)
    if exclude is None:
        low = np.percentile(values, percentile, axis=2)
    else:
        # the percentile of each block's remaining pixels: sorted, excluded ones last
        excluded = blocks_of(exclude)
        ranked = np.sort(np.where(excluded, np.inf, values), axis=2)
        left = np.sum(~excluded, axis=2)
        at = np.round(percentile / 100 * np.maximum(left - 1, 0)).astype(np.intp)
        low = np.take_along_axis(ranked, at[..., None], axis=2)[..., 0].astype(np.float64)
        low[left < 0.2 * ranked.shape[2]] = np.nan
        if np.isnan(low).all():
            low[:] = np.percentile(values, percentile)
        for _ in range(gh + gw):  # fill blocks that are nearly all ink from their neighbours
            missing = np.isnan(low)
            if not missing.any():
                break
            padded = np.pad(low, 1, constant_values=np.nan)
            around = np.stack([padded[dy:dy + gh, dx:dx + gw] for dy in range(3)
                               for dx in range(3)])
            counts = np.sum(~np.isnan(around), axis=0)
            sums = np.nansum(around, axis=0)
            fill = missing & (counts > 0)
            low[fill] = sums[fill] / counts[fill]
    low = ndimage.median_filter(low.astype(np.float32), size=3, mode="nearest")
    return resize(low, (h, w))


def drawing_side(g: np.ndarray) -> bool | None:
    """For a drawing, whether its paper is light; None for a photo.

    A drawing, where nearly every pixel is at one of two levels far apart (`TWO_LEVELS`) and
    the border is flat and at the level of most of the image, has the paper on its border's
    side (a line 40 pixels wide drawn on serve's page fills the two smaller blocks). Not a
    photo: its border can be a table; nor a sheet filling most of a dark desk."""
    lo, hi = np.percentile(g, [1, 99])
    mid, ring = (lo + hi) / 2, border(g)
    edge, (low_edge, high_edge) = float(np.median(ring)), np.percentile(ring, [10, 90])
    near = TWO_LEVELS[0] * (hi - lo)
    paper = np.abs(g - edge) < near  # the pixels at the border's level
    drawing = (hi - lo > TWO_LEVELS[1]  # a drawing: two levels far apart, and little else
               and np.mean((np.abs(g - lo) < near) | (np.abs(g - hi) < near)) > TWO_LEVELS[2]
               and high_edge - low_edge < near  # with a flat border
               and paper.mean() > TWO_LEVELS[3])  # whose level is most of the image
    if drawing and abs(edge - mid) > BORDER_CLEAR * (hi - lo):
        return bool(edge > mid)
    return None


def is_light_background(g: np.ndarray) -> bool:
    """Whether the ink is darker than the paper. Around the local median (the paper, shadows
    included), the ink is the heavier of the two tails. A stroke wide enough to fill the
    median's blocks fools that: inside it the median is the ink, and a heavy digit's
    counters stand out as the lighter tail. So the tails are weighed with blocks of three
    sizes (`POLARITY_BLOCKS` along the longest side), and two of the three decide: a heavy
    stroke fills the smallest blocks, rarely the larger ones unless the image is cropped to
    the digit; shading is slow enough for all three. A drawing's paper is on its border's
    side (`drawing_side`)."""
    side = drawing_side(g)
    return side if side is not None else tails_side(g)


def tails_side(g: np.ndarray) -> bool:
    """`is_light_background`'s vote of the tails, for a photo."""
    votes = 0
    for blocks in POLARITY_BLOCKS:
        r = g - block_field(g, 50, blocks=blocks)
        spread = 3 * float(np.median(np.abs(r))) + 0.02
        darker = float(np.clip(-r - spread, 0, None).sum())
        lighter = float(np.clip(r - spread, 0, None).sum())
        votes += darker > lighter
    return votes > len(POLARITY_BLOCKS) // 2


@dataclass
class Ink:
    """Ink-bright image `(H, W)` in [0, 1] with background 0, and its pieces."""

    image: np.ndarray
    labels: np.ndarray  # (H, W) int: piece number, 0 = background
    keep: list[int]  # the pieces that count (specks dropped)
    light_background: bool


def find_ink(gray: np.ndarray, closer_side: int = WORK_SIDE) -> Ink:
    """Polarity, background, contrast and pieces of a grayscale image (any size).

    The image is analysed at `WORK_SIDE`; when the ink found fills little of it and the
    image has more pixels, the ink's surroundings (`ZOOM_MARGIN` of its size around it) are
    analysed again from the full image, at up to `closer_side` (a number across a wide photo,
    a small digit on a page: their strokes, an outline's contours above all, keep their
    shape). The polarity is the whole image's.
    """
    from scipy import ndimage

    gray = np.asarray(gray, np.float32)  # an array of integers or booleans passed directly
    g = shrink(gray)
    ink = ink_of(g)
    kept = np.isin(ink.labels, ink.keep)
    rows, cols = ndimage.find_objects(kept.astype(np.int8))[0]
    side = max(rows.stop - rows.start, cols.stop - cols.start)
    pad = ZOOM_MARGIN * side
    # each axis has its own scale: shrink rounds the sides apart (a 300 x 7000 image is
    # 10 x 240 at the working size: rows 30 times as many, columns 29.2)
    scale_rows, scale_cols = (gray.shape[0] / g.shape[0], gray.shape[1] / g.shape[1])
    gain = min(closer_side / ((1 + 2 * ZOOM_MARGIN) * side), scale_rows, scale_cols)
    if gain < ZOOM_GAIN:
        return ink
    top, bottom = max(0, int(rows.start - pad)), min(g.shape[0], int(np.ceil(rows.stop + pad)))
    left, right = max(0, int(cols.start - pad)), min(g.shape[1], int(np.ceil(cols.stop + pad)))
    crop = gray[round(top * scale_rows):round(bottom * scale_rows),
                round(left * scale_cols):round(right * scale_cols)]
    if min(crop.shape) < 2:
        return ink
    zoomed = shrink(crop, closer_side)
    # the first analysis's ink, where the paper is not measured: in a crop that a heavy
    # digit fills, the paper's estimate alone would take a stroke's middle for paper
    found = resize((ink.labels[top:bottom, left:right] > 0).astype(np.float32),
                   zoomed.shape) > 0
    try:
        closer = ink_of(zoomed, ink.light_background, found)
    except ImageError:  # the surroundings alone are too flat to tell ink from paper
        return ink
    # The closer look refines the first one's ink, it does not add to it: noise and shading,
    # averaged away at the working size, stand out at full resolution. Ink found away from
    # the first look's (more than 2 working pixels) is a sign of that, and the first is kept.
    kept = resize(kept[top:bottom, left:right].astype(np.float32), zoomed.shape) > 0
    reach = max(1, round(2 * zoomed.shape[0] / (bottom - top)))
    near = ndimage.binary_dilation(kept, np.ones((3, 3), bool), iterations=reach)
    seen = np.where(np.isin(closer.labels, closer.keep), closer.image, 0)
    if seen[~near].sum() > ZOOM_AGREE * seen.sum():
        return ink
    return closer


def ink_of(g: np.ndarray, light: bool | None = None, found: np.ndarray | None = None) -> Ink:
    """find_ink's analysis of `g` (at most `WORK_SIDE`), with paper that is `light` and
    ink where `found` is (None: found from `g`)."""
    from scipy import ndimage

    lo, hi = np.percentile(g, [0.1, 99.9])  # a thin digit on a large page is 1 % of it or less
    if hi - lo < MIN_CONTRAST:
        raise ImageError("blank image: no ink found (the page is one flat colour)")
    # a drawing or a photo: the polarity, and how heavy strokes' middles are found
    side = drawing_side(g) if light is None or found is None else None
    if light is None:
        light = side if side is not None else tails_side(g)
    ink = (1 - g) if light else g.copy()
    # Two passes: the second estimates the paper without the ink the first one found, so
    # bold strokes that fill whole blocks keep their insides.
    if found is None:
        found = first_ink(ink, drawing=side is not None)
    # Inside a bold stroke the first pass sees paper: close the found ink over a block's width.
    grow = max(1, round(GROW * max(ink.shape) / BG_BLOCKS))
    found = ndimage.binary_fill_holes(ndimage.maximum_filter(found, size=2 * grow + 1))
    ink -= block_field(ink, BG_PERCENTILE, exclude=found)
    np.clip(ink, 0, None, out=ink)
    top = float(ink.max())
    if top < MIN_CONTRAST:
        raise ImageError("blank image: no ink found (nothing stands out from the paper)")
    ink /= top
    cut = max(otsu(ink), 0.2)
    # When the ink is a sliver of the image (a hairline) on mottled paper or under sensor
    # noise, Otsu's cut splits the paper's own spread. The ink must stand out of it: above the
    # median of what Otsu calls paper by `NOISE_FLOOR` robust standard deviations (1.4826
    # times the median absolute deviation), up to `FLOOR_CAP`.
    paper = ink[ink <= cut]
    if paper.size:
        middle = float(np.median(paper))
        spread = 1.4826 * float(np.median(np.abs(paper - middle)))
        cut = max(cut, min(middle + NOISE_FLOOR * spread, FLOOR_CAP))
    mask = ink > cut
    level = float(np.percentile(ink[mask], 90)) if mask.any() else 1.0
    ink = np.clip(ink / max(level, 1e-6), 0, 1)
    # Hysteresis, as in edge detection: pieces are traced down to a low threshold (faint
    # hairlines stay joined to their strokes) but count only if they reach the high one.
    strong = ink > max(cut / level, 0.25)
    labels, count = ndimage.label(ink > LOW * max(cut / level, 0.25), structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    has_strong = np.bincount(labels[strong], minlength=count + 1) > 0
    sizes[~has_strong] = 0
    sizes[0] = 0
    if count == 0 or sizes.max() < 4:
        raise ImageError("blank image: no ink found (only specks)")
    keep = [k for k in range(1, count + 1) if sizes[k] >= SPECK * sizes.max()]
    return Ink(ink, labels, keep, light)


def first_ink(ink: np.ndarray, drawing: bool) -> np.ndarray:
    """The first pass's ink (True) in ink-bright `ink`: what stands out from the paper
    estimated in blocks (`BG_BLOCKS`), and the middles of strokes too heavy for them. A
    stroke wider than a block or two (a marker photographed close, a line 40 pixels wide on
    serve's page) fills the small blocks, whose paper estimate inside it is the ink: only its
    edges stand out. Blocks `COARSE` times as large see the paper beside it: where the small
    blocks' estimate is above theirs by `MIDDLE` of the ink's level (the 90th percentile of
    the first ink, above the large blocks' paper) and the ink is too, in pieces that touch
    the first ink, a stroke may have its middle. In a `drawing` (two levels) it has. In a
    photo such a piece may also be a shadow, a table's edge or a pen lying on the page: it
    is a stroke's middle only if it is as dark as ink (its mean `DARK` of the ink's level or
    more; a shadow beside a faint outline is half of it), a stroke's width across (its
    inscribed circle at most `WIDEST` small blocks in radius) and clear of the border (the
    ring `border` measures, 4 % of the side: a table's edge, a ruler or a shadow across the
    photo reaches it, even inside a thin light frame; a digit photographed close keeps a
    margin). A dark object lying inside the frame as wide as a heavy stroke (an eraser, a
    blot) is not told from one."""
    from scipy import ndimage

    paper = block_field(ink, BG_PERCENTILE)
    rest = ink - paper
    fine = rest > max(otsu(np.clip(rest, 0, 1)), MIN_CONTRAST)
    if not fine.any():
        return fine
    coarse = block_field(ink, BG_PERCENTILE, blocks=max(1, BG_BLOCKS // COARSE))
    above = ink - coarse
    level = float(np.percentile(above[fine], 90))
    middles = (paper - coarse > MIDDLE * level) & (above > MIDDLE * level) & ~fine
    pieces, count = ndimage.label(middles)
    if count == 0:
        return fine
    index = np.arange(1, count + 1)
    near = ndimage.binary_dilation(fine, np.ones((3, 3), bool))
    chosen = ndimage.maximum(near, pieces, index).astype(bool)  # touching the first ink
    if not drawing:
        edge = np.zeros(count + 1, bool)
        edge[border(pieces)] = True
        chosen &= ~edge[1:]
        chosen &= np.asarray(ndimage.mean(above, pieces, index)) >= DARK * level
        radius = ndimage.maximum(ndimage.distance_transform_edt(middles), pieces, index)
        chosen &= np.asarray(radius) <= WIDEST * max(ink.shape) / BG_BLOCKS
    return fine | np.isin(pieces, index[chosen])


def stroke_width(a: np.ndarray) -> float:
    """Mean stroke width of ink `a` in pixels: twice the ink's mass over its edge length
    (total variation), which blur leaves nearly unchanged."""
    p = np.pad(a, 1)
    gy = np.diff(p, axis=0)[:, :-1]
    gx = np.diff(p, axis=1)[:-1]
    edge = float(np.sqrt(gx * gx + gy * gy).sum())
    return 2 * float(a.sum()) / max(edge, 1e-6)


def normalise_stroke(a: np.ndarray) -> np.ndarray:
    """Strokes of ink `a` (cropped, longest side `WORK_BOX`) made like MNIST's pen line.

    Solid cores first (ink above `SATURATE` is solid). Then the stroke style: outlined
    (hollow) strokes are closed (`close_hollow`); strokes that were hollow or are much heavier
    than MNIST's are redrawn at MNIST's width around their centre lines (`redraw`); thin ones
    (hairlines, fine pens) are dilated to it. Strokes of an ordinary pen's width, bold
    handwriting included, are left as they are.
    """
    from scipy import ndimage

    level = a
    a = drop_dots(np.clip(a / SATURATE, 0, 1))  # a stroke's core is solid ink, as in MNIST
    filled, hollow = close_hollow(a > OUTLINE_LEVEL)
    outlined = hollow
    if not hollow and CLOSE_RADIUS:  # outlines too thin or too blurred to enclose a hole:
        closed = ndimage.grey_closing(np.pad(a, CLOSE_RADIUS), footprint=_disk(CLOSE_RADIUS))
        if closed.sum() > HOLLOW * a.sum():  # a closing that adds this much ink fills them
            a = closed[CLOSE_RADIUS:-CLOSE_RADIUS, CLOSE_RADIUS:-CLOSE_RADIUS]
            filled = a > OUTLINE_LEVEL
            outlined = True
    target = STROKE * WORK_BOX
    width = stroke_width(filled.astype(np.float32)) if hollow else stroke_width(a)
    # faint ink alone (no solid core: a faint tail cut off in a number) has no strokes to redraw
    if (hollow or width > HEAVY * target) and filled.any():
        if not outlined:  # solid heavy strokes, traced at their edge (dots stay dropped)
            edge = (level > HEAVY_EDGE) & (a > 0)
            if edge.any():
                filled = close_hollow(edge)[0]
        return redraw(open_pinches(filled), target)
    radius = min(MAX_DILATE, round((target - width) / 2))
    if width < THIN * target and radius >= 1:
        return ndimage.grey_dilation(np.pad(a, radius), footprint=_disk(radius))
    return a


def drop_dots(a: np.ndarray, level: float = OUTLINE_LEVEL) -> np.ndarray:
    """Ink `a` without the dots in its loops: a piece of solid ink (above `level`) that a loop
    encloses, with no hole of its own and smaller than `DOT` of the largest piece (a dotted
    0's dot, a speck in a 6's loop), in a convex loop. MNIST's loops are empty; the
    enclosing hole would otherwise pass for an outlined stroke's inside (`close_hollow`),
    and the 0 be filled. An outline's inner contour encloses a hole of its own, or lies in
    the bent inside of a stroke, and stays."""
    from scipy import ndimage

    mask = a > level
    pieces, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count < 2:
        return a
    closed = ndimage.binary_fill_holes(mask)
    outside = ndimage.binary_dilation(~closed, np.ones((3, 3)))
    index = np.arange(1, count + 1)
    touches = ndimage.maximum(outside, pieces, index).astype(bool)
    area = ndimage.sum(mask, pieces, index)
    small = ~touches & (area < DOT * area.max())
    if not small.any():
        return a
    from skimage.morphology import convex_hull_image

    holes, _ = ndimage.label(closed & ~mask)
    hole_boxes = ndimage.find_objects(holes)
    dots = np.zeros(count + 1, bool)
    boxes = ndimage.find_objects(pieces)
    # at most the `MAX_HOLES` largest: a digit has a few loops, a crafted image thousands;
    # each is measured in its own box and its loop's
    for k in np.argsort(-np.where(small, area, 0), kind="stable")[:MAX_HOLES]:
        if not small[k] or any(b.start == 0 or b.stop == n
                               for b, n in zip(boxes[k], mask.shape, strict=True)):
            continue
        piece = pieces[boxes[k]] == k + 1
        if (ndimage.binary_fill_holes(piece) & ~piece).any():
            continue  # a contour around a hole of its own
        # enclosed, it lies at least one pixel inside the image: its box grown by one fits
        grown = tuple(slice(b.start - 1, b.stop + 1) for b in boxes[k])
        ring = ndimage.binary_dilation(np.pad(piece, 1), np.ones((3, 3)))
        around = np.unique(holes[grown][ring])
        around = around[around > 0]
        if around.size != 1:
            continue
        # the loop it sits in is a counter, convex with the dot in it; an outlined stroke's
        # inside is not (an outlined 4 around the solid triangle its counter closed to)
        loop = ndimage.binary_fill_holes(holes[hole_boxes[around[0] - 1]] == around[0])
        dots[k + 1] = loop.sum() >= CONVEX * convex_hull_image(loop).sum()
    if not dots.any():
        return a
    # the dot with its faint edge: the ink around it down to the paper
    edge = ndimage.binary_dilation(dots[pieces], np.ones((3, 3)), iterations=2)
    return np.where(edge & ~ndimage.binary_dilation(~dots[pieces] & mask), 0, a).astype(
        a.dtype, copy=False)


def close_hollow(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """`mask` with the insides of outlined strokes filled, and whether there were any
    (`stroke_insides` tells them)."""
    holes = stroke_insides(mask)
    if not (holes.insides.any() or holes.pinholes.any()):
        return mask, False
    return mask | holes.insides | holes.pinholes, bool(holes.insides.any())


@dataclass(frozen=True)
class Holes:
    """The holes of a mask, told apart (masks of its shape)."""

    insides: np.ndarray  # the insides of outlined strokes
    pinholes: np.ndarray  # holes a few pixels wide: gaps in a rough stroke
    unmeasured: np.ndarray  # holes beyond the `MAX_HOLES` widest, whose shape is not known


def stroke_insides(mask: np.ndarray, number: bool = False) -> Holes:
    """The holes in `mask`: the insides of outlined strokes, pinholes, and those not measured.

    A hole in the ink (paper enclosed by it) is a stroke's inside when it has a stroke's shape:
    - it surrounds ink of its own, `RING` of its area or more (a ring: the inside of a
      hollow 0, 6, 8 or 9's loop; a speck of noise is not enough);
    - or it is bent: its area less than `SOLID` of its convex hull's (an outlined 2, 3, 5, 7);
    - or it spans the digit (`SPAN` of its height and width) without being convex (area less
      than `CONVEX` of its hull's: a 0's inside is convex), as a heavy glyph's outline does;
    - or it is narrow (`NARROW`) and not convex, 1 / `CONTOUR` times as wide as the ink's mean
      width, beside the digit's outer contour (an outlined 1 with its flag; not a hollow
      digit's own loop, which lies beside the inner contour).
    In a row of digits (`number`) the width spanned is a digit's, not the mask's: once one hole
    is a stroke's inside, a hole spanning the ink's height without being convex is one too.
    A digit's own loops (0, 6, 8, 9, 4's triangle) are convex, round or oval, and stay open,
    however thin the pen: an outline is found in 9 of the first 6,000 MNIST training digits.
    A straight hollow stroke (an outlined 1 without a flag) is not told from a narrow 0 and
    stays as it is. Holes at most `PINHOLE` pixels wide (hatching inside an outline, a gap in
    a rough stroke) are pinholes: filled, without counting as outlines.
    """
    from scipy import ndimage
    from skimage.measure import regionprops

    holes = ndimage.binary_fill_holes(mask) & ~mask
    labels, count = ndimage.label(holes)
    if count == 0:
        return Holes(holes, holes, holes)
    index = np.arange(1, count + 1)
    width = 2 * ndimage.maximum(ndimage.distance_transform_edt(holes), labels, index)
    pinholes = width <= PINHOLE
    # Shapes are measured for the larger holes only, the `MAX_HOLES` widest: a digit has a
    # few, and a crafted image must not buy a measurement per pixel.
    measured = [k for k in np.argsort(-width, kind="stable")[:MAX_HOLES] if not pinholes[k]]
    unmeasured = ~pinholes
    unmeasured[measured] = False
    inside = np.zeros(count, bool)
    tall = np.zeros(count, bool)  # spanning the ink's height, not convex
    if measured:
        height_of, width_of = mask.shape  # the ink is cropped (a digit's)
        inked = np.flatnonzero(mask.any(axis=1))
        ink_height = inked[-1] - inked[0] + 1  # a number's
        contour = stroke_width(mask.astype(np.float32))
        # the holes next to an ink piece that touches the paper around the digit (an
        # outline's outer contour, not the inner one around a hollow digit's loop)
        pieces, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        outer = np.unique(pieces[ndimage.binary_dilation(~ndimage.binary_fill_holes(mask))
                                 & mask])
        outer_ink = np.isin(pieces, outer[outer > 0])
        beside = ndimage.maximum(ndimage.binary_dilation(outer_ink, np.ones((3, 3))), labels,
                                 index).astype(bool)
        shapes = regionprops(np.where(np.isin(labels, index[measured]), labels, 0))
        for p in shapes:
            k = p.label - 1
            rows, cols = p.bbox[2] - p.bbox[0], p.bbox[3] - p.bbox[1]
            ratio = p.axis_major_length / max(p.axis_minor_length, 1e-6)
            tall[k] = rows >= SPAN * ink_height and p.solidity < CONVEX
            inside[k] = (p.area_filled - p.area >= RING * p.area or p.solidity < SOLID
                         or (rows >= SPAN * height_of and cols >= SPAN * width_of
                             and p.solidity < CONVEX)
                         or (contour <= CONTOUR * width[k] and ratio >= NARROW
                             and p.solidity < CONVEX and beside[k]))
        if number and inside.any():
            inside |= tall
    return Holes(*(np.isin(labels, index[kind]) for kind in (inside, pinholes, unmeasured)))


def open_pinches(filled: np.ndarray) -> np.ndarray:
    """`filled` (strokes' insides filled) with the holes that a pinch closes opened: a 3's
    or 6's hook whose end touches the body, a heavy 3's slits, a 5's or 2's curl. Such a
    hole nears the paper outside at the pinch, through a wall thinner than `PINCH` of the
    stroke width, and the shortest path across it is cut. A digit's own loop is walled by
    the whole stroke."""
    from scipy import ndimage

    filled = np.pad(filled, 1)
    solid = ndimage.binary_fill_holes(filled)
    labels, count = ndimage.label(solid & ~filled)
    steps = int(PINCH * stroke_width(filled.astype(np.float32)))
    if count == 0 or steps < 2:  # a path of 1 step crosses no wall
        return filled[1:-1, 1:-1]
    from_outside = path_lengths(~solid, filled, steps)
    index = np.arange(1, count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    for k in index[np.argsort(-sizes, kind="stable")[:MAX_HOLES]]:
        across = from_outside + path_lengths(labels == k, filled, steps)
        shortest = across[filled].min()
        if shortest <= steps:
            filled &= ~(across <= shortest + 1)
    return filled[1:-1, 1:-1]


def path_lengths(seed: np.ndarray, through: np.ndarray, steps: int) -> np.ndarray:
    """Steps from `seed` to each pixel of `through` along paths inside it (8-connected), up
    to `steps`; farther pixels get a large number."""
    from scipy import ndimage

    lengths = np.full(seed.shape, 4 * steps + 4, np.int32)
    reached = seed.copy()
    for step in range(1, steps + 1):
        grown = ndimage.binary_dilation(reached, np.ones((3, 3), bool), mask=through | seed)
        lengths[grown & ~reached] = step
        if (grown == reached).all():
            break
        reached = grown
    return lengths


def redraw(mask: np.ndarray, pen: float) -> np.ndarray:
    """Strokes in `mask` redrawn `pen` pixels wide: thinned layer by layer without breaking a
    stroke (skimage's `thin`), stopped once their mean width is down to the pen's (so that
    ends shorten only by what the sides lose), over the centre lines (the full thinning,
    the skeleton) drawn with a round pen, which keeps the thin parts of a varying stroke at
    the pen's width."""
    from scipy import ndimage
    from skimage.morphology import thin

    pad = int(np.ceil(pen / 2)) + 1
    slimmed = np.pad(mask, pad)
    for _ in range(MAX_THIN):
        if stroke_width(slimmed.astype(np.float32)) <= pen:
            break
        slimmed = thin(slimmed, max_num_iter=1)
    lines = thin(slimmed)
    if not lines.any():  # no strokes: nothing to draw (the distance to none is not defined)
        return slimmed.astype(np.float32)
    drawn = np.clip(pen / 2 + 0.5 - ndimage.distance_transform_edt(~lines), 0, 1)
    return np.maximum(drawn, slimmed).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return yy * yy + xx * xx <= radius * radius + radius


def crop(a: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    rows = np.flatnonzero(a.max(axis=1) > threshold)
    cols = np.flatnonzero(a.max(axis=0) > threshold)
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    total = float(a.sum())
    rows = float((a.sum(axis=1) * np.arange(a.shape[0])).sum()) / total
    cols = float((a.sum(axis=0) * np.arange(a.shape[1])).sum()) / total
    return rows, cols


def place(digit: np.ndarray) -> np.ndarray:
    """Ink `(h, w)` (any size) -> `(28, 28)`: strokes normalised at `WORK_BOX` pixels, longest
    side 20 (area-averaged), strokes' core at 1, centre of mass at (14, 14).

    The 28x28 frame is cut from the normalised digit at a fractional offset, so the centre of
    mass lands on (14, 14) itself rather than within half a pixel of it (MNIST's own digits
    spread by that half pixel around it), without the blur of shifting the small image."""
    from PIL import Image

    digit = crop(digit)
    h, w = digit.shape
    s = WORK_BOX / max(h, w)
    digit = crop(normalise_stroke(resize(digit, (max(1, round(h * s)), max(1, round(w * s))))))
    h, w = digit.shape
    q = max(h, w) / BOX  # the digit's pixels per output pixel
    side = SIZE * q  # the frame, in the digit's pixels
    cy, cx = centre_of_mass(digit)
    # pixel i covers [i, i + 1): the frame's pixel CENTRE is on the centre of mass, and the
    # digit stays inside the frame
    top = min(max(cy + 0.5 - (CENTRE + 0.5) * q, h - side), 0.0)
    left = min(max(cx + 0.5 - (CENTRE + 0.5) * q, w - side), 0.0)
    pad = int(np.ceil(side))
    frame = (left + pad, top + pad, left + pad + side, top + pad + side)
    out = np.array(Image.fromarray(np.pad(digit.astype(np.float32), pad), "F").resize(
        (SIZE, SIZE), Image.BOX, box=frame), np.float32)
    np.clip(out, 0, None, out=out)
    # the strokes' core at 1: the level that all but 0.5 % of the digit's box is below
    rows = slice(int(-top / q), int(np.ceil((h - top) / q)))
    box = out[rows, int(-left / q):int(np.ceil((w - left) / q))]
    out /= max(float(np.percentile(box, 99.5)), 1e-6)
    return np.clip(out, 0, 1, out=out)


def mnist_like(gray: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """(ink-bright image, light background) for a 28x28 image whose digit already sits in a
    20-pixel box near the centre, else None (it goes through the full pipeline)."""
    if gray.shape != (SIZE, SIZE):
        return None
    ring = border(gray)
    lo, hi = float(gray.min()), float(gray.max())
    if hi - lo < MIN_CONTRAST:
        return None
    light = bool(np.median(ring) > (lo + hi) / 2)
    ink = (1 - gray) if light else gray
    bg = float(np.median(border(ink)))
    top = float(ink.max())
    ink = np.clip((ink - bg) / (top - bg), 0, 1) if (bg, top) != (0.0, 1.0) else ink.copy()
    rows = np.flatnonzero(ink.max(axis=1) > 0.1)
    cols = np.flatnonzero(ink.max(axis=0) > 0.1)
    if rows.size == 0 or max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 > BOX + 2:
        return None
    cy, cx = centre_of_mass(ink)
    if abs(cy - CENTRE) > 2.5 or abs(cx - CENTRE) > 2.5:
        return None
    return ink.astype(np.float32, copy=False), light


def polarity(image: np.ndarray, light: bool, invert: str) -> Prepared:
    """The ink-bright `image` as `invert` asks: auto keeps it (what MNIST looks like); no
    gives the source's own polarity; yes the opposite of the source's."""
    if invert == "auto":
        return Prepared(image, light, light)
    flip = light if invert == "no" else not light
    return Prepared((1 - image) if flip else image, invert == "yes", light)


def prepare(gray: np.ndarray, invert: str = "auto") -> Prepared:
    """The network input for a grayscale image of one digit (any 2-D array `as_gray` takes)."""
    gray = as_gray(gray)
    quick = mnist_like(gray)
    if quick is not None:
        return polarity(quick[0], quick[1], invert)
    ink = find_ink(gray)
    return polarity(place(only(ink, ink.keep)), ink.light_background, invert)


def only(ink: Ink, pieces: list[int], enclosed: np.ndarray | None = None) -> np.ndarray:
    """The ink of some pieces, with their faint edges (a margin around each piece) but not
    the other kept pieces' ink (a neighbouring digit in a number); and the pixels of
    `enclosed` (outlined strokes' filled insides) that the pieces enclose."""
    from scipy import ndimage

    mask = np.isin(ink.labels, pieces)
    if enclosed is not None:  # an inside wider than the margin is paper, not a piece's
        mask |= ndimage.binary_fill_holes(mask) & enclosed
    margin = max(1, round(KEEP_MARGIN * max(ink.labels.shape)))
    mask = ndimage.maximum_filter(mask, size=2 * margin + 1)
    mask &= ~np.isin(ink.labels, ink.keep) | np.isin(ink.labels, pieces)
    return np.where(mask, ink.image, 0).astype(np.float32)


def digit_groups(ink: Ink) -> list[list[int]]:
    """The kept pieces grouped into digits, left to right: a piece joins the digit whose
    columns overlap at least half of its own (or of the digit's) width."""
    return column_groups(ink.labels, ink.keep)


def column_groups(labels: np.ndarray, keep) -> list[list[int]]:
    """The pieces `keep` of `labels` grouped into digits, left to right (`one_digit`)."""
    from scipy import ndimage

    slices = ndimage.find_objects(labels)
    spans = sorted((slices[k - 1][1].start, slices[k - 1][1].stop, k) for k in keep)
    groups: list[tuple[int, int, list[int]]] = []
    for start, stop, k in spans:
        if groups:
            g0, g1, members = groups[-1]
            if one_digit((g0, g1), (start, stop)):
                groups[-1] = (min(g0, start), max(g1, stop), members + [k])
                continue
        groups.append((start, stop, [k]))
    return [members for _, _, members in groups]


def inside_owners(holes: Holes) -> np.ndarray:
    """The digit (1, 2, ...) each pixel of a number's outlined strokes' insides is part of:
    the insides grouped by their columns, as pieces of ink are. -1 on the holes whose shape
    was not measured (they could be insides too), 0 elsewhere."""
    from scipy import ndimage

    labels, count = ndimage.label(holes.insides, structure=np.ones((3, 3)))
    digit = np.zeros(count + 1, np.intp)
    for number, members in enumerate(column_groups(labels, range(1, count + 1)), start=1):
        digit[members] = number
    return np.where(holes.unmeasured, -1, digit[labels])


def one_digit(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two column spans (start, stop) belong to one digit: they overlap by at least
    half the narrower one's width."""
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    return overlap >= 0.5 * min(a[1] - a[0], b[1] - b[0])


def split_faint_joins(ink: Ink) -> Ink:
    """`ink` with each piece that joins digits only through faint ink cut apart. Pieces are
    traced down to a low threshold, so that hairlines stay whole; under blur, two digits side
    by side meet there. A piece whose solid cores (above `CORE`; those at least `CORE_SHARE`
    of the largest core) lie in columns of their own, as separate digits do, is cut into
    them, each faint pixel going to the nearest core."""
    from scipy import ndimage

    labels, keep = ink.labels.copy(), []
    new = int(labels.max())
    boxes = ndimage.find_objects(ink.labels)
    for k in ink.keep:
        box = boxes[k - 1]  # the work is done in the piece's box, not the whole image
        piece = ink.labels[box] == k
        cores, count = ndimage.label(piece & (ink.image[box] > CORE), structure=np.ones((3, 3)))
        if count < 2:
            keep.append(k)
            continue
        sizes = np.bincount(cores.ravel())[1:]
        big = np.flatnonzero(sizes >= CORE_SHARE * sizes.max()) + 1
        core_boxes = ndimage.find_objects(cores)
        spans = sorted((core_boxes[c - 1][1].start, core_boxes[c - 1][1].stop) for c in big)
        if len(big) < 2 or any(one_digit(a, b) for a, b in zip(spans, spans[1:], strict=False)):
            keep.append(k)
            continue
        seeds = np.where(np.isin(cores, big), cores, 0)
        nearest = seeds[tuple(ndimage.distance_transform_edt(seeds == 0, return_indices=True)[1])]
        region = labels[box]
        for c in big:
            new += 1
            region[piece & (nearest == c)] = new
            keep.append(new)
    return Ink(ink.image, labels, keep, ink.light_background)


def prepare_number(gray: np.ndarray, invert: str = "auto") -> list[Prepared]:
    """One network input per digit of a number written left to right (any 2-D array
    `as_gray` takes)."""
    from scipy import ndimage

    gray = as_gray(gray)
    # a row of digits is looked at closer than one digit: each digit keeps about as many
    # pixels as a digit alone (an outline's contours stay apart)
    ink = few_marks(split_faint_joins(few_marks(find_ink(gray, NUMBER_SIDE))))
    # dots in the kept pieces' loops (ink that was not kept encloses nothing)
    kept = np.isin(ink.labels, ink.keep)
    ink.image = np.where(kept & (drop_dots(np.where(kept, ink.image, 0),
                                           SATURATE * OUTLINE_LEVEL) == 0), 0,
                         ink.image).astype(np.float32, copy=False)
    # Outlined strokes are closed on the whole number: cut into digits first, their outlines
    # would be open. Their insides tell touching outlined digits apart (inside_cut).
    # Ink too small to keep is no outline (a dotted 0's dot would make its counter a ring, an
    # outlined stroke's inside) unless it rings paper of its own inside the kept ink: a thick
    # outline's inner contour around a small counter (an 8's), not specks on the paper
    solid = np.clip(ink.image / SATURATE, 0, 1) > OUTLINE_LEVEL
    solid &= kept | (rings(solid & ~kept) & ndimage.binary_fill_holes(solid & kept))
    holes = stroke_insides(solid, number=True)
    # outlines are thin: between heavy strokes, what looks like a stroke's inside is paper
    # that touching digits enclose (a 3's bay closed by its neighbour)
    pen = stroke_width(solid.astype(np.float32))
    hollow = bool(holes.insides.any()) and pen <= OUTLINE_PEN * extent(solid, 1)
    filled = holes.insides | holes.pinholes if hollow else None
    if hollow:
        ink.image = np.where(solid | filled, 1, ink.image).astype(np.float32)
    groups = digit_groups(ink)
    # a group of dots alone (dropped above) is no digit; the groups are counted before each
    # is drawn at the image's size
    inked = dict(zip(ink.keep, ndimage.maximum(ink.image, ink.labels, ink.keep), strict=True))
    groups = [members for members in groups if max(inked[k] for k in members) > 0.05]
    if len(groups) > MAX_DIGITS:
        raise too_many_digits(len(groups), more=True)
    digits = [d for d in (only(ink, members, filled) for members in groups)
              if (d > 0.05).any()]
    if not digits:
        raise ImageError("could not find a digit in it")
    rows = [np.flatnonzero(d.max(axis=1) > 0.05) for d in digits]
    height = max(r[-1] - r[0] + 1 for r in rows)
    owners = inside_owners(holes) if hollow else None
    # an outline's contours are no pen (eroded, they vanish): heavy is solid ink only
    heavy = not hollow and pen > HEAVY_PEN * height
    parts: list[np.ndarray] = []
    for d in digits:
        for piece in neck_cut(d, pen, height) if heavy else [d]:
            parts += split_touching(piece, height, owners)
        if len(parts) > MAX_DIGITS:
            raise too_many_digits(len(parts), more=d is not digits[-1])
    if heavy:
        parts = split_wider(parts, height)
    # a stroke cut off or broken off a digit (a 7's bar, a 2's tail) is no digit of its own
    parts = join_short(parts, height)
    if len(parts) > MAX_DIGITS:
        raise too_many_digits(len(parts))
    prepared = [polarity(place(part), ink.light_background, invert) for part in parts]
    # heavy digits can merge along their height with no neck or waist to cut at: each part
    # as wide as a digit is offered cut into digits too, and the network judges
    if heavy:
        prepared = [replace(p, cuts=cuts_of(part, pen, height, ink.light_background, invert))
                    for p, part in zip(prepared, parts, strict=True)]
    return prepared


def cuts_of(a: np.ndarray, pen: float, height: int, light: bool,
            invert: str) -> Cuts | None:
    """A heavy number's part `a` (full image coordinates) at least `JUDGE_WIDE` of the row's
    `height` wide, cut into two and into three pieces at its candidate columns, each piece at
    least a pen and `JUDGE_SIDE` of the height wide, as network inputs `invert` asks for.
    The candidates: the `JUDGE_CUTS` cheapest columns (`cut_costs`) no dearer than the two
    columns on each side (where the ink narrows between digits), and the `JUDGE_CHEAPEST`
    cheapest of all (but those next to one already taken). Heavy digits can merge along
    their height (a 1 beside a 3, or between a 1 and a 3) with no waist or neck to cut at;
    whether the part is one digit, two or three is the network's call
    (`prediction.judged`). None for a narrower part."""
    if extent(a, 0) < JUDGE_WIDE * height:
        return None
    start, stop, profile = cut_costs(a)
    side = max(1, round(max(pen, JUDGE_SIDE * height)))
    inner = np.arange(side, stop - start - side)
    lows = [int(c) for c in inner if profile[c] <= profile[max(c - 2, 0):c + 3].min()]
    columns = sorted(lows, key=lambda c: profile[c])[:JUDGE_CUTS]
    for c in inner[np.argsort(profile[inner], kind="stable")[:JUDGE_CHEAPEST]]:
        if all(abs(c - o) > 1 for o in columns):
            columns.append(int(c))
    columns = sorted(columns)
    clean = dict(zip(columns, (profile[columns] <= JUDGE_COST * np.median(profile))
                     & (counter_shares(a, [start + c for c in columns]) >= COUNTER_SHARE),
                     strict=True))
    pieces: dict[tuple[int, int], int | None] = {}  # columns [left, right) -> row of images
    images, shapes, ways, cleans = [], [], [], []
    for count in (1, 2):
        for cut in itertools.combinations([start + c for c in columns], count):
            if any(right - left < side for left, right in itertools.pairwise(cut)):
                continue
            edges = [start, *cut, stop]
            for span in itertools.pairwise(edges):
                if span not in pieces:
                    piece = a[:, span[0]:span[1]]
                    pieces[span] = None if piece.max() <= 0.05 else len(images)
                    if pieces[span] is not None:
                        images.append(polarity(place(piece), light, invert).image)
                        shapes.append((extent(piece, 0) / height, extent(piece, 1) / height))
            way = [pieces[span] for span in itertools.pairwise(edges)]
            if None not in way:
                ways.append(way + [-1] * (3 - len(way)))
                cleans.append(all(clean[c - start] for c in cut))
    if not ways:
        return None
    return Cuts(np.array(images, np.float32), np.array(shapes, np.float32),
                np.array(ways, np.int64), np.array(cleans, bool))


def counter_shares(a: np.ndarray, columns: list[int]) -> np.ndarray:
    """For each of `columns` (of `a`), the least share of a counter of `a` (paper its ink
    encloses, more than `PINHOLE` pixels wide) left on one side of a cut down it; 1 when
    `a` has no counter."""
    from scipy import ndimage

    ink = a > 0.05
    holes, count = ndimage.label(ndimage.binary_fill_holes(ink) & ~ink)
    if count == 0:
        return np.ones(len(columns))
    width = 2 * np.asarray(ndimage.maximum(ndimage.distance_transform_edt(holes > 0), holes,
                                           np.arange(1, count + 1)))
    rows, cols = np.nonzero(holes)
    # before[k, c]: the pixels of hole k left of column c
    before = np.zeros((count + 1, a.shape[1] + 1))
    np.add.at(before, (holes[rows, cols], cols + 1), 1)
    before = before.cumsum(axis=1)[1:][width > PINHOLE]
    if not len(before):
        return np.ones(len(columns))
    total, left = before[:, -1:], before[:, columns]
    return (np.maximum(left, total - left) / total).min(axis=0)


def extent(a: np.ndarray, axis: int) -> int:
    """How many columns (`axis` 0) or rows (1) the ink of `a` (> 0.05) spans, first to last."""
    return int(np.ptp(np.flatnonzero(a.max(axis=axis) > 0.05))) + 1


def split_wider(parts: list[np.ndarray], height: int) -> list[np.ndarray]:
    """Heavy `parts` of a number (left to right), with each part `SIBLING` times as wide as
    the widest other part at least `SIBLING_DIGIT` of the row's `height` wide, and at least
    `SIBLING_MIN` of the height wide itself, cut as touching digits (`split_touching`):
    a font's digits are about as wide as each other, and heavy condensed digits merged into
    one piece are narrower than the row is high. (Its narrow digits are no measure; a black
    face's 0 or 4 is 1.7 times as wide as its flagged 1, but narrower than the row.)"""
    widths = [extent(p, 0) for p in parts]
    out: list[np.ndarray] = []
    for i, part in enumerate(parts):
        others = [w for j, w in enumerate(widths) if j != i and w >= SIBLING_DIGIT * height]
        if others and widths[i] >= max(SIBLING * max(others), SIBLING_MIN * height):
            out += split_touching(part, height, touching=0)
        else:
            out.append(part)
        if len(out) > MAX_DIGITS:
            raise too_many_digits(len(out), more=True)
    return out


def join_short(parts: list[np.ndarray], height: int) -> list[np.ndarray]:
    """`parts` (left to right) with each part spanning less than `SHORT` of the row's
    `height`, the shortest first, joined to the neighbour whose ink is nearest: no digit of
    a number is that short. A mark farther than `JOIN_GAP` of the height from both, or that
    would make its neighbour wider than a digit (`PART`), belongs to neither (dots leading
    to a price, dashes between digits) and is dropped."""
    from scipy import ndimage

    parts = list(parts)
    spans = [extent(p, 1) for p in parts]
    while len(parts) > 1 and min(spans) < SHORT * height:
        i = int(np.argmin(spans))
        nearby = [j for j in (i - 1, i + 1) if 0 <= j < len(parts)]
        box = ndimage.find_objects(sum((parts[j] > 0.05).astype(np.int8)
                                       for j in (i, *nearby)))[0]
        gap = ndimage.distance_transform_edt(parts[i][box] <= 0.05)
        near = min((float(gap[parts[j][box] > 0.05].min()), j) for j in nearby)
        joined = np.maximum(parts[near[1]], parts[i])
        if near[0] <= JOIN_GAP * height and extent(joined, 0) <= PART[1] * height:
            parts[near[1]], spans[near[1]] = joined, extent(joined, 1)
        del parts[i], spans[i]
    return parts


def neck_cut(a: np.ndarray, pen: float, height: int) -> list[np.ndarray]:
    """Heavy touching digits in the piece of ink `a` (full image coordinates), in a row
    `height` pixels high written with a pen `pen` pixels wide: cut where the ink breaks
    when eroded by `NECK` of the pen. Emboldening grows each digit by the pen on every side
    and closes the gaps between them; the necks it leaves are narrower than a stroke. Only
    pieces left spanning `NECK_SPAN` of the height count (a stroke's tapered end or a 5's
    flag is no digit); each pixel goes to the nearest through the ink (else the nearest),
    and the cut must make parts as wide as digits (`digit_wide`) that keep their counters
    (`keeps_counters`). Else `[a]`."""
    from scipy import ndimage

    box = ndimage.find_objects((a > 0.05).astype(np.int8))[0]
    core = ndimage.distance_transform_edt(a[box] > SATURATE * OUTLINE_LEVEL) > NECK * pen
    labels, count = ndimage.label(core, np.ones((3, 3)))
    spans = [rows.stop - rows.start for rows, _ in ndimage.find_objects(labels)]
    tall = [k + 1 for k in range(count) if spans[k] >= NECK_SPAN * height]
    if len(tall) < 2:
        return [a]
    # each pixel to the core it is nearest through the ink (the straight line can cross
    # paper: a serif or a thin arm would go to the neighbour)
    from skimage.segmentation import watershed

    ink = a[box] > 0.05
    owner = watershed(np.zeros(ink.shape, np.uint8), np.where(np.isin(labels, tall), labels, 0),
                      mask=ink)
    parts = nearest_parts(a, box, owner, np.array(tall))
    return parts if digit_wide(parts, height) and keeps_counters(a, parts) else [a]


def nearest_parts(a: np.ndarray, box, owner: np.ndarray, keys: np.ndarray) -> list[np.ndarray]:
    """`a` (full image coordinates) cut into one part per key of `keys`, left to right: each
    pixel in `box` goes to the key of the nearest pixel of `owner` (`a[box]`'s shape, 0 for
    none) that holds one."""
    from scipy import ndimage

    rows, cols = ndimage.distance_transform_edt(owner == 0, return_distances=False,
                                                return_indices=True)
    nearest = owner[rows, cols]
    centres = ndimage.center_of_mass(owner > 0, owner, keys)
    parts = []
    for k in keys[np.argsort([c[1] for c in centres], kind="stable")]:
        part = np.zeros_like(a)
        part[box] = np.where(nearest == k, a[box], 0)
        parts.append(part)
    return parts


def rings(mask: np.ndarray) -> np.ndarray:
    """The pieces of `mask` that enclose a hole of their own."""
    from scipy import ndimage

    closed = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(closed, structure=np.ones((3, 3)))
    ring = (np.bincount(labels.ravel(), minlength=count + 1)
            > np.bincount(labels[mask], minlength=count + 1))
    ring[0] = False
    return mask & ring[labels]


def few_marks(ink: Ink) -> Ink:
    """`ink`, when it has at most `MAX_MARKS` kept pieces (a row of digits, each of a few
    strokes, broken or dotted); else an ImageError. Each piece costs a pass."""
    if len(ink.keep) > MAX_MARKS:
        raise ImageError(f"{len(ink.keep)} separate marks, more than the {MAX_MARKS} a number "
                         f"is read with; crop the image to the number")
    return ink


def too_many_digits(count: int, more: bool = False) -> ImageError:
    return ImageError(f"{count} digits{' or more' if more else ''} in a row, more than the "
                      f"{MAX_DIGITS} a number is read with; crop the image to the number")


def upright_shifts(mask: np.ndarray) -> np.ndarray:
    """Whole-pixel shifts of each row of `mask` (True = ink) that stand its strokes upright:
    of the shears up to `MAX_SLANT` columns per row, the one whose ink falls into the fewest,
    fullest columns (the largest sum of squared column counts)."""
    ys, xs = np.nonzero(mask)
    rows = np.arange(mask.shape[0])
    if len(ys) < 2:
        return np.zeros(len(rows), np.intp)
    middle = ys.mean()
    best = (-1.0, np.zeros(len(rows), np.intp))
    for slope in np.linspace(-MAX_SLANT, MAX_SLANT, 2 * SLANTS + 1):
        shifts = np.rint(slope * (rows - middle)).astype(np.intp)
        cols = xs + shifts[ys]
        counts = np.bincount(cols - cols.min()).astype(np.float64)
        score = float(counts @ counts)
        if score > best[0] + 1e-9 * score or (score >= best[0] and slope == 0):
            best = (score, shifts)
    return best[1]


def lean(a: np.ndarray) -> float:
    """How far the strokes of `a` (ink > 0, light on dark) lean right, in columns per row
    (negative: left): the median slope of its steep edges, weighted by their contrast. The
    edges counted are those within `LEAN_WINDOW` columns per row of the estimate, which
    starts upright and is taken again `LEAN_PASSES` times, so that it follows a strong lean.
    The edges of a ring or an upright stroke lean both ways alike: 0."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(a.astype(np.float32), 2.0)  # no pixel staircase
    gx, gy = ndimage.sobel(smooth, axis=1), ndimage.sobel(smooth, axis=0)
    contrast = np.hypot(gx, gy)
    steep = (np.abs(gx) > np.abs(gy)) & (contrast > 0.1 * contrast.max())
    # an edge leaning s columns per row has the gradient (1, s): s = gy / gx
    slopes, weights = gy[steep] / gx[steep], contrast[steep]
    estimate = 0.0
    for _ in range(LEAN_PASSES):
        near = np.abs(slopes - estimate) < LEAN_WINDOW
        if near.sum() < 10:
            return 0.0
        order = np.argsort(slopes[near])
        cumulative = np.cumsum(weights[near][order])
        estimate = float(slopes[near][order][np.searchsorted(cumulative, cumulative[-1] / 2)])
    return estimate


def shear(a: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """`a` with row r shifted right by `shifts[r]` pixels, widened to hold every shift."""
    low = min(int(shifts.min()), 0)
    out = np.zeros((a.shape[0], a.shape[1] + max(int(shifts.max()), 0) - low), a.dtype)
    out[np.arange(a.shape[0])[:, None], np.arange(a.shape[1]) + (shifts - low)[:, None]] = a
    return out


def unshear(a: np.ndarray, shifts: np.ndarray, width: int) -> np.ndarray:
    """The `width` columns of the image that `shear(image, shifts)` made into `a`."""
    low = min(int(shifts.min()), 0)
    return a[np.arange(a.shape[0])[:, None], np.arange(width) + (shifts - low)[:, None]]


def split_touching(a: np.ndarray, height: int, owners: np.ndarray | None = None,
                   touching: float | None = None) -> list[np.ndarray]:
    """The digits of one piece of ink `a` (full image coordinates) in a row of digits
    `height` pixels high. A piece wider than `TOUCHING` times the height holds digits that
    touch. Slanted digits touch along their slant: when its strokes lean (`lean`), the piece
    is stood upright (`upright_shifts`), cut (`cut_touching`), and its parts slanted back.
    A narrower piece of outlined digits (`owners`) is cut between their insides when that
    makes parts as wide as digits (`inside_cut`); any other goes to `waist_cut`. `touching`: the
    width in pixels above which a piece is cut as touching digits (None: `TOUCHING` times
    the height)."""
    touching = TOUCHING * height if touching is None else touching
    if extent(a, 0) <= touching:
        # condensed outlined digits: cut between their insides into parts as wide as digits
        inside = inside_cut(a, owners, height) if owners is not None else []
        if inside and digit_wide(inside, height) and keeps_counters(a, inside):
            return inside
        return waist_cut(a, height)
    # the shear that fills the fewest columns, taken alone, stands a row of upright rings on
    # a slant (their arcs line up): the strokes must lean that way
    slant = lean(a)
    shifts = upright_shifts(a > 0.05)
    if abs(slant) < LEAN or (shifts[-1] - shifts[0]) * slant <= 0:
        return cut_touching(a, height, owners, touching)
    upright = cut_touching(shear(a, shifts), height,
                           None if owners is None else shear(owners, shifts), touching)
    return [unshear(part, shifts, a.shape[1]) for part in upright]


def cut_touching(a: np.ndarray, height: int, owners: np.ndarray | None,
                 touching: float) -> list[np.ndarray]:
    """`split_touching`'s cut of a piece standing upright: one wider than `touching` pixels
    is cut into the parts, each `PART` (a share of the height) wide, whose cuts cost least on
    average: where two digits touch, a cut crosses a point of ink and the ink's outline
    narrows; through a digit, it crosses its strokes and its whole height.
    Outlined digits (`owners`: `inside_owners`) are cut between their strokes' insides
    instead, when that makes as many parts or parts as wide. A narrower piece (stood
    upright, a slanted pair can be) goes to `waist_cut`."""
    start, stop, profile = cut_costs(a)
    width = stop - start
    if width <= touching:
        return waist_cut(a, height)
    inside = inside_cut(a, owners, height) if owners is not None else []
    narrow, wide = max(1, round(PART[0] * height)), max(2, round(PART[1] * height))
    fewest = -(-width // wide)
    if fewest > MAX_DIGITS:
        raise too_many_digits(fewest, more=True)
    best = None
    for count in range(max(2, fewest), min(width // narrow, MAX_DIGITS) + 1):
        cuts = cheapest_cuts(profile, count, narrow, wide)
        if cuts is not None:
            cost = float(profile[cuts].mean())
            if best is None or cost < best[0]:
                best = (cost, cuts)
    # outlined digits cut between their insides: as many as the cheapest cuts make, or each
    # as wide as a digit (noise on the paper can break an inside in two)
    cheapest = len(best[1]) + 1 if best is not None else 0
    if inside and (len(inside) == cheapest or digit_wide(inside, height)):
        return inside
    if best is None:
        return [a]
    return cut_at(a, [start, *(start + int(c) for c in best[1]), stop])


def cut_costs(a: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The first and past-the-last columns of the ink of `a`, and the cost of a cut down each
    column between them: the ink it crosses, and the height of the ink's outline there (two
    digits touch where their outlines narrow; inside a digit the outline spans its height)."""
    cols = np.flatnonzero(a.max(axis=0) > 0.05)
    start, stop = int(cols[0]), int(cols[-1]) + 1
    piece = a[:, start:stop]
    profile = piece.sum(axis=0) + column_spans(piece > 0.05)
    return start, stop, profile.astype(np.float64)


def cut_at(a: np.ndarray, edges: list[int]) -> list[np.ndarray]:
    """`a` cut at the columns `edges` (first and last included): the parts holding ink."""
    parts = []
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        part = np.zeros_like(a)
        part[:, left:right] = a[:, left:right]
        if part.max() > 0.05:
            parts.append(part)
    return parts


def keeps_counters(a: np.ndarray, parts: list[np.ndarray]) -> bool:
    """Whether a cut of `a` into `parts` leaves each counter (paper that `a` encloses, more
    than `PINHOLE` pixels wide) mostly to one part: at least `COUNTER_SHARE` of its pixels
    nearer that part's ink than any other's. Between two digits, a counter is one digit's
    (or their outlines close one's bay); between the halves of one outlined digit's inside
    (a high-contrast 0, whose hairlines pinch it shut at top and bottom) the cut goes
    through the middle of its counter."""
    from scipy import ndimage

    box = ndimage.find_objects((a > 0.05).astype(np.int8))[0]
    ink = a[box] > 0.05
    holes, count = ndimage.label(ndimage.binary_fill_holes(ink) & ~ink)
    if count == 0:
        return True
    nearest = np.stack([ndimage.distance_transform_edt(p[box] <= 0.05)
                        for p in parts]).argmin(axis=0)
    # shares[k, i]: the pixels of hole k nearest part i (one pass, however many holes)
    shares = np.bincount((holes * len(parts) + nearest).ravel(),
                         minlength=(count + 1) * len(parts)).reshape(count + 1, len(parts))[1:]
    width = 2 * np.asarray(ndimage.maximum(ndimage.distance_transform_edt(holes > 0), holes,
                                           np.arange(1, count + 1)))
    counters = shares[width > PINHOLE]
    return bool((counters.max(axis=1) >= COUNTER_SHARE * counters.sum(axis=1)).all())


def digit_wide(parts: list[np.ndarray], height: int) -> bool:
    """Whether each of `parts` is as wide as a digit in a row `height` pixels high: `PART`."""
    narrow, wide = max(1, round(PART[0] * height)), max(2, round(PART[1] * height))
    return all(narrow <= extent(p, 0) <= wide
               for p in parts)


def inside_cut(a: np.ndarray, owners: np.ndarray, height: int) -> list[np.ndarray]:
    """Touching outlined digits in `a` cut between their strokes' insides (`owners`:
    `inside_owners`), left to right: each pixel goes to the digit whose inside is nearest.
    The outlines of two digits side by side merge into one piece of ink, but each keeps its
    own inside. Only insides that `a`'s ink borders count, and those at least `INSIDE_SHARE`
    of the largest and `INSIDE_AREA` of the row's `height` squared (not a stroke's inside
    pinched off at a joint, an 8's crossing). Empty when fewer than two digits have an
    inside in `a`, or when `a` encloses a hole whose shape was not measured."""
    from scipy import ndimage

    box = ndimage.find_objects((a > 0.05).astype(np.int8))[0]
    piece = a[box]
    ink = piece > 0.05
    owner = np.where(ndimage.binary_fill_holes(ink), owners[box], 0)
    if (owner < 0).any():
        return []
    bordered = np.unique(owner[ndimage.binary_dilation(ink, np.ones((3, 3), bool))])
    owner = np.where(np.isin(owner, bordered), owner, 0)
    digits, area = np.unique(owner[owner > 0], return_counts=True)
    if len(digits):
        digits = digits[(area >= INSIDE_SHARE * area.max()) & (area >= INSIDE_AREA * height ** 2)]
    if len(digits) < 2:
        return []
    parts = nearest_parts(a, box, np.where(np.isin(owner, digits), owner, 0), digits)
    # each part holds ink: an inside not enclosed by this piece's own outline (one inside
    # another digit's loop, its ring another piece) would give a part of paper alone
    return parts if all(part.max() > 0.05 for part in parts) else []


def waist_cut(a: np.ndarray, height: int) -> list[np.ndarray]:
    """A piece narrower than `TOUCHING` times the row's height: two touching digits when,
    stood upright, it narrows to a waist (a column whose ink spans at most `WAIST` of the
    height) between two columns that span `FULL` of it, each side at least `PART[0]` of the
    height wide. A single digit's columns span its height (0, 2, 3, 5, 6, 8, 9) or fall short
    of it on one side (4, 7: a bar alone). The piece is cut along the slanted line through
    the waist's thinnest column; otherwise it is one digit."""
    cols = np.flatnonzero(a.max(axis=0) > 0.05)
    start, stop = int(cols[0]), int(cols[-1]) + 1
    if stop - start < 2 * PART[0] * height:
        return [a]
    shifts = upright_shifts(a > 0.05)
    width = a.shape[1]
    b = shear(a, shifts)
    span = column_spans(b > 0.05)
    used = np.flatnonzero(span > 0)
    first, last = int(used[0]), int(used[-1]) + 1
    narrow = max(1, round(PART[0] * height))
    full = span >= FULL * height
    best = None
    for c in range(first + narrow, last - narrow + 1):
        if span[c] > WAIST * height or not full[first:c].any() or not full[c:last].any():
            continue
        cost = (float(b[:, c].sum()), span[c])
        if best is None or cost < best[0]:
            best = (cost, c)
    if best is None:
        return [a]
    c = best[1]
    left, right = b.copy(), b.copy()
    left[:, c:] = 0
    right[:, :c] = 0
    return [unshear(left, shifts, width), unshear(right, shifts, width)]


def column_spans(piece: np.ndarray) -> np.ndarray:
    """For each column of `piece` (True = ink), the rows from its first ink to its last
    (0 where it has none): the height of the ink's outline there."""
    rows = np.arange(piece.shape[0])[:, None]
    top = np.where(piece, rows, piece.shape[0]).min(axis=0)
    bottom = np.where(piece, rows, -1).max(axis=0)
    return np.maximum(bottom - top + 1, 0)


def cheapest_cuts(profile: np.ndarray, count: int, narrow: int, wide: int):
    """The `count - 1` columns cutting `profile` (each column's cost) into `count` parts each
    `narrow` to `wide` columns wide at the least cost in all, or None when no such cuts
    exist (dynamic programming over the columns)."""
    n = len(profile)
    inf = np.inf
    cost = np.full(n + 1, inf)  # cost[j]: the cheapest cuts of profile[:j] into parts so far
    cost[0] = 0.0
    back = []
    for part in range(count):
        last = part == count - 1
        new = np.full(n + 1, inf)
        came = np.zeros(n + 1, np.intp)
        for j in range(narrow, n + 1):
            lo, hi = max(0, j - wide), j - narrow
            if hi < lo:
                continue
            i = lo + int(np.argmin(cost[lo:hi + 1]))
            if cost[i] < inf:
                new[j] = cost[i] + (0.0 if last or j >= n else profile[j])
                came[j] = i
        back.append(came)
        cost = new
    if cost[n] == inf:
        return None
    cuts, j = [], n
    for came in reversed(back[1:]):
        j = int(came[j])
        cuts.append(j)
    return np.array(cuts[::-1], np.intp)


def inputs_of(source, invert: str = "auto", number: bool = False,
              max_pixels: int | None = None) -> list[Prepared]:
    """The network inputs of one image (a path, bytes, a file object, a PIL image or a 2-D
    array in [0, 1]): one, or one per digit with `number`. Whatever goes wrong, in reading
    or in any step of the preprocessing, is one ImageError: an image no rule foresaw is that
    image's error (for `predict`), a 400 (for `serve`), never a crash."""
    if invert not in ("auto", "yes", "no"):
        raise UserError(f"invert must be 'auto', 'yes' or 'no', not {invert!r}")
    try:
        gray = read_image(source, max_pixels) if max_pixels is not None else as_gray(source)
        return prepare_number(gray, invert) if number else [prepare(gray, invert)]
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("not enough memory to read it; scale it down") from None
    except Exception as exc:
        raise ImageError(f"could not find a digit in it ({type(exc).__name__})") from None
