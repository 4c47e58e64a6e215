"""The one prediction result: what `predict`, `serve` and the Python API answer for an image.

`Prediction` is both an object (`p.digit`) and a read-only mapping (`p["digit"]`,
`sorted(p)`, `dict(p)`) whose keys are the fields it holds, the same in every mode that
holds them:

- an array image (the API):        digit, confidence, probabilities
- an image file (predict, serve):  file, digit, confidence, probabilities, inverted
- a number (`--number`):           file, number, digits (one {digit, confidence,
                                   probabilities} per digit), inverted
- an image that failed:            file, error

The 28x28 inputs the network saw are attributes (`input`, `inputs`), not keys: arrays, for
`--save-inputs` and the page, not for JSON. `predictions` makes them, the one function every
caller goes through; for a number, `judged` first lets the network decide whether a heavy
part the preprocessing offers cut into digits is two or three digits (`Model.prepare` calls
it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from mnist_bp.imageprep import too_many_digits
from mnist_bp.limits import NUMBER_DIGITS

# a part of a number offered cut into digits (`Prepared.cuts`) is read as the two pieces of
# a cut when the network is this sure of both (neither read as a 1), and surer by this much
# than of the part as a whole...
SPLIT_SURE, SPLIT_MARGIN = 0.99, 0.3
# ...or, when it reads the whole part less sure than FAIR_WHOLE, as the pieces of a cut into
# two or three between digits (`Cuts.clean`) that it is SPLIT_FAIR sure of, and FAIR_MARGIN
# surer than of the whole, when they are shaped like a number's digits: each spans
# PIECE_SPAN of the row's height, a 1 is at most ONE_WIDE of it wide and any other digit at
# least DIGIT_WIDE
SPLIT_FAIR, FAIR_WHOLE, FAIR_MARGIN = 0.5, 0.85, 0.1
PIECE_SPAN, ONE_WIDE, DIGIT_WIDE = 0.8, 0.4, 0.25

KEYS = ("file", "digit", "number", "confidence", "probabilities", "digits", "inverted", "error")


def digit_fields(p: np.ndarray) -> dict:
    """`digit`, `confidence` and `probabilities` (10 floats) of one row of probabilities."""
    digit = int(np.argmax(p))
    return {"digit": digit, "confidence": float(p[digit]), "probabilities": p.tolist()}


@dataclass(frozen=True)
class Prediction(Mapping):
    file: str | None = None
    digit: int | None = None
    confidence: float | None = None
    probabilities: list[float] | None = None
    inverted: bool | None = None
    number: str | None = None
    digits: list[dict] | None = None
    error: str | None = None
    inputs: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def input(self) -> np.ndarray | None:
        """The 28x28 input the network saw (the first digit's, for a number)."""
        return self.inputs[0] if self.inputs else None

    def __getitem__(self, key: str):
        if key not in KEYS or getattr(self, key) is None:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return (key for key in KEYS if getattr(self, key) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Prediction({', '.join(f'{k}={self[k]!r}' for k in self)})"


def predictions(probs: np.ndarray, prepared: list, names: list | None, number: bool,
                answerable: np.ndarray, no_answer: str) -> list[Prediction]:
    """One Prediction per image, in order. `prepared[i]` is image i's list of
    `imageprep.Prepared` (one, or one per digit of a number), or its error (a string), or
    None for an array image (no file, no polarity); `probs` holds the rows of every prepared
    input in that order and `answerable` which rows the network could compute."""
    out, at = [], 0
    for i, item in enumerate(prepared):
        name = names[i] if names is not None else None
        if isinstance(item, str):
            out.append(Prediction(file=name, error=item))
            continue
        count = 1 if item is None else len(item)
        rows = slice(at, at + count)
        at += count
        if not answerable[rows].all():
            out.append(Prediction(file=name, error=no_answer))
            continue
        if item is None:
            out.append(Prediction(**digit_fields(probs[rows][0])))
            continue
        inverted = bool(item[0].inverted)
        images = [p.image for p in item]
        if number:
            digits = [digit_fields(p) for p in probs[rows]]
            out.append(Prediction(file=name, number="".join(str(d["digit"]) for d in digits),
                                  digits=digits, inverted=inverted, inputs=images))
        else:
            out.append(Prediction(file=name, **digit_fields(probs[rows][0]),
                                  inverted=inverted, inputs=images))
    return out


def judged(inputs: list, probabilities) -> list:
    """One image's `inputs` (`imageprep.Prepared`: one, or one per digit of a number) with
    each part offered cut into digits (`Prepared.cuts`) read as the pieces of the cut
    `best_cut` picks, or whole; the cuts are dropped either way. `probabilities` is the
    network (images -> rows). One forward pass per image: its answer does not depend on the
    images read beside it. ImageError when the number would have more than `NUMBER_DIGITS`
    digits."""
    asked = [p for p in inputs if p.cuts is not None]
    if not asked:
        return inputs
    probs = probabilities(np.concatenate([np.stack([p.image for p in asked]),
                                          *[p.cuts.images for p in asked]]))
    sure, digit = probs.max(axis=1), probs.argmax(axis=1)
    out, k, at = [], 0, len(asked)
    for p in inputs:
        if p.cuts is None:
            out.append(p)
            continue
        rows = slice(at, at + len(p.cuts.images))
        pieces = best_cut(p.cuts, sure[rows], digit[rows], float(sure[k]), int(digit[k]))
        if pieces is None:
            out.append(replace(p, cuts=None))
        else:
            out += [replace(p, image=p.cuts.images[i].copy(), cuts=None) for i in pieces]
        k, at = k + 1, rows.stop
    if len(out) > NUMBER_DIGITS:
        raise too_many_digits(len(out))
    return out


def best_cut(cuts, sure: np.ndarray, digit: np.ndarray, whole: float,
             whole_digit: int) -> list[int] | None:
    """The pieces (rows of `cuts.images`) of the cut of a part the network reads as digits,
    given how `sure` it is of each piece, the `digit` it reads, how sure it is of the
    `whole` part and the digit it reads it as; None to read the part whole.

    The network is seldom sure of digits merged into one, and a stroke cut off a digit reads
    as a 1 as surely as a 1 does. So a cut in two whose pieces it reads at least `SPLIT_SURE`
    sure, neither as a 1, and `SPLIT_MARGIN` surer than the whole, is taken at once. Failing
    that, when the network is unsure of the whole (less than `FAIR_WHOLE`: a part it reads
    surely is one digit), a cut into two or three that keeps to the paper between digits
    (`Cuts.clean`: the halves of a round digit read as digits too, a 6 as a 1 and a 3) is
    taken when the network is at least `SPLIT_FAIR` and `FAIR_MARGIN` surer of each piece
    than of the whole, and every piece is shaped like one of a number's digits: as tall as
    the row (`PIECE_SPAN`), a 1 a stroke's width (`ONE_WIDE`), any other digit wider than a
    stroke (`DIGIT_WIDE`), and not a digit's strokes: not all 1s (a flagged 1's two
    strokes), nor 1s beside the digit the whole part reads as (a 4 and its stem). Of the
    cuts each rule allows, the one whose least sure piece is the surest."""
    used = cuts.ways >= 0
    ones = digit == 1

    def least(score: np.ndarray) -> np.ndarray:  # each cut's least score over its pieces
        return np.where(used, score[cuts.ways], np.inf).min(axis=1)

    plain = np.where(used[:, 2], 0.0, least(np.where(ones, 0.0, sure)))
    best = int(np.argmax(plain))
    if plain[best] >= SPLIT_SURE and plain[best] >= whole + SPLIT_MARGIN:
        return [int(i) for i in cuts.ways[best, :2]]
    if whole >= FAIR_WHOLE:
        return None
    width, span = cuts.shapes.T
    shaped = (span >= PIECE_SPAN) & np.where(ones, width <= ONE_WIDE, width >= DIGIT_WIDE)
    fair = np.where(cuts.clean, least(np.where(shaped, sure, 0.0)), 0.0)
    # cuts of 1s only, or of 1s and one digit read as the whole was: strokes cut off a digit
    # (a flagged 1's, a 4's stem) read as 1s, and the rest of it as that digit still
    others = np.where(used, ~ones[cuts.ways], False)
    count, kept = others.sum(axis=1), np.where(others, digit[cuts.ways], -1).max(axis=1)
    fair[(count == 0) | ((count == 1) & (kept == whole_digit))] = 0.0
    best = int(np.argmax(fair))
    if fair[best] >= max(SPLIT_FAIR, whole + FAIR_MARGIN):
        return [int(i) for i in cuts.ways[best][used[best]]]
    return None
