"""The validator's errors, the drop-and-count tally, and the type checks every format shares."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from datasets.cli import input_file_problem


class ValidationError(ValueError):
    """A malformed input file; the message names the file, the entry and the field."""


class AnnotationError(ValidationError):
    """A malformed annotation file (ground truth or detector boxes)."""


class PredictionError(ValidationError):
    """A malformed COCO results file of keypoint predictions."""


class MpiiFormatError(ValidationError):
    """A .mat file that is not in the expected MPII layout (ground truth or predictions)."""


class Dropped(Counter):
    """Entries left out on load, by reason: what the reference pipelines (HRNet, MMPose) drop without a word, counted
    here so the caller can log it. `summary(what)` says it in one line ("" when nothing was dropped)."""

    def summary(self, what: str) -> str:
        if not self:
            return ""
        reasons = "; ".join(f"{count} {reason}" for reason, count in sorted(self.items()))
        return f"dropped {sum(self.values())} {what}: {reasons}"


def read_json(path: Path, what: str):
    """The parsed JSON of `path`; AnnotationError naming `what` and the file when it is missing or unreadable."""
    path = Path(path)
    if problem := input_file_problem(path):
        raise AnnotationError(f"{what} {problem}")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{what} {path}: not valid JSON ({err})") from None


def is_number(value) -> bool:
    """A JSON number that is finite (a bool, a string of digits, NaN or Infinity is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_id(value) -> bool:
    """What pycocotools indexes by: an integer or a string (a float or bool id would match by accident)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def numbers(values, size: int | None = None) -> np.ndarray | None:
    """`values` as a float64 array when it is a JSON list of finite numbers (of `size` items when given), else
    None. numpy would turn the strings "1.5" or "nan" into numbers: the element type is checked first."""
    if not isinstance(values, (list, tuple)) or (size is not None and len(values) != size):
        return None
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "iuf" or not np.isfinite(arr.astype(np.float64)).all():
        return None
    return arr.astype(np.float64)


def check_box(values, source, entry: str, field: str, xywh: bool = True) -> tuple[float, float, float, float]:
    """Four finite numbers (x y w h, or x0 y0 x1 y1 with `xywh=False`); AnnotationError naming source, entry and
    field otherwise. The extent is not checked here: a degenerate box is dropped or refused by its consumer."""
    box = numbers(values, 4)
    if box is None:
        raise AnnotationError(f"{source}: {entry}: field {field!r} is not four finite numbers: {values!r}")
    return tuple(float(v) for v in box)


def box_extent(box, xywh: bool = True) -> tuple[float, float]:
    """(width, height) of a box given as x y w h, or x0 y0 x1 y1 with `xywh=False`."""
    return (box[2], box[3]) if xywh else (box[2] - box[0], box[3] - box[1])


def require_fields(obj: dict, fields, where: str, error=None) -> None:
    """Raise `error` (AnnotationError by default) naming the first of `fields` that `obj` lacks; `where` prefixes
    the message ("FILE: ENTRY: ")."""
    for name in fields:
        if name not in obj:
            raise (error or AnnotationError)(f"{where}field {name!r} missing")


def check_reference(obj: dict, field: str, known, where: str, what: str, error=None) -> None:
    """Raise unless obj[field] is an id among `known` (the ids of the file's `what`, e.g. "an image of the file")."""
    if not is_id(obj[field]) or obj[field] not in known:
        raise (error or AnnotationError)(f"{where}field {field!r} {obj[field]!r} is not {what}")
