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
part the preprocessing offers cut in two is two digits (`Model.prepare` calls it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from mnist_bp.imageprep import too_many_digits
from mnist_bp.limits import NUMBER_DIGITS

# a part of a number offered cut in two (`Prepared.halves`) is read as two digits when the
# network is this sure of both halves (neither read as a 1), and surer by this much than of
# the part as a whole
SPLIT_SURE, SPLIT_MARGIN = 0.99, 0.3

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
    each part offered cut in two (`Prepared.halves`) read as the two halves of its best cut
    (whose less sure half is the surest) when `probabilities` (the network: images -> rows)
    reads neither half as a 1, is at least `SPLIT_SURE` sure of both and `SPLIT_MARGIN`
    surer of the less sure half than of the whole part; otherwise the part stays whole.
    The network is seldom sure of two digits merged into one, and sure of a digit's half
    mostly when it is a stroke, which it reads as a 1. The halves are dropped either way.
    One forward pass per image: its answer does not depend on the images read beside it.
    ImageError when the number would have more than `NUMBER_DIGITS` digits."""
    asked = [p for p in inputs if p.halves is not None]
    if not asked:
        return inputs
    probs = probabilities(np.concatenate([np.stack([p.image for p in asked]),
                                          *[p.halves.reshape(-1, *p.image.shape)
                                            for p in asked]]))
    sure = probs.max(axis=1)
    # a stroke cut off a digit reads as a 1 as surely as a 1 does: no evidence of two digits
    halves_sure = np.where(probs.argmax(axis=1) == 1, 0.0, sure)
    out, k, at = [], 0, len(asked)
    for p in inputs:
        if p.halves is None:
            out.append(p)
            continue
        both = halves_sure[at:at + 2 * len(p.halves)].reshape(-1, 2).min(axis=1)
        best = int(np.argmax(both))
        if both[best] >= SPLIT_SURE and both[best] >= sure[k] + SPLIT_MARGIN:
            out += [replace(p, image=h.copy(), halves=None) for h in p.halves[best]]
        else:
            out.append(replace(p, halves=None))
        k, at = k + 1, at + 2 * len(p.halves)
    if len(out) > NUMBER_DIGITS:
        raise too_many_digits(len(out))
    return out
