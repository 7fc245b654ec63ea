"""Procedural multi-person pose dataset in COCO person_keypoints format: the embedded default dataset.

Every image holds 1..max_people articulated figures (forward kinematics with joint limits) drawn
back-to-front on a textured background, followed by 0..max_occluders random objects in front.
Each shape is drawn twice with the same rasterisation: its colour into the image and its owner id
into an int16 "owner" buffer (person index 0..n-1, OCCLUDER_ID for objects, BACKGROUND_ID for
nothing). Keypoint visibility then follows from the owner buffer alone:

* ``v=2``: inside the image and ``owner[py, px] == person`` (covering oneself still counts visible);
* ``v=1``: inside the image but something drawn later owns that pixel;
* ``v=0`` and ``x=y=0``: outside the image.

Coordinates are 0-based with pixel centres at integers, so a keypoint's pixel is
``(px, py) = floor(x + 0.5), floor(y + 0.5)`` (see :func:`pixel_index`).

Annotation conventions (documented because they differ from real COCO):

* ``bbox`` is tight around the figure's full drawn silhouette, hidden parts included, clipped to
  the image, in whole pixels: ``[x_min, y_min, x_max - x_min + 1, y_max - y_min + 1]``;
* ``area`` is ``bbox w * h`` (no segmentation exists; OCHuman uses the same convention), which
  is what COCOeval's OKS scale uses;
* ``head_box`` ``[x0, y0, x1, y1]`` bounds the head ellipses (not clipped to the image), for PCKh;
* persons with fewer than ``MIN_LABELLED`` labelled keypoints or a bbox lower than
  ``MIN_BOX_HEIGHT`` px stay drawn but are not annotated.

The generator is deterministic: image ``k`` of split ``s`` uses
``np.random.default_rng([spec.seed, split_index(s), k])``, so output does not depend on the
number of worker processes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from datasets.skeletons import COCO17

# Bump whenever rendering changes, so cached datasets from older code are not reused.
GENERATOR_VERSION = 2

GENERATED_SPLITS = ("train", "val")  # val_occ is a subset of val, not rendered separately
SPLITS = ("train", "val", "val_occ")

BACKGROUND_ID = -1
OCCLUDER_ID = -2
MIN_LABELLED = 5
MIN_BOX_HEIGHT = 24
OCCLUDED_FRACTION = 1 / 3  # val_occ: v==1 count / labelled count >= this (see is_occluded)
JPEG_QUALITY = 90

# Flat-mode colours (RGB), distinct so a test can read the owner back from the image.
FLAT_BACKGROUND = (0, 0, 0)
FLAT_OCCLUDER = (255, 255, 255)
_FLAT_PEOPLE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25),
                (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0))

# Subpixel drawing: cv2 takes fixed-point coordinates with this many fractional bits.
_SHIFT = 4
_ONE = 1 << _SHIFT
LEFT_SHADE = 0.6  # the person's left limbs are drawn darker so left/right is learnable

# Body proportions as fractions of the figure height H (nominal; jittered per person).
PROPORTIONS = {
    "torso": 0.30, "shoulder_half": 0.11, "hip_half": 0.075, "neck": 0.035,
    "upper_arm": 0.17, "forearm": 0.15, "thigh": 0.245, "shin": 0.235,
    "head_a": 0.062, "head_b": 0.078,
}
PROPORTION_JITTER = 0.08     # each proportion scaled by U(1 - j, 1 + j)
FORESHORTENING = (0.75, 1.0)  # each limb segment additionally scaled (3D pose seen in 2D)
ELBOW_FLEX = (0.0, 150.0)     # degrees
KNEE_FLEX = (0.0, 150.0)
SHOULDER_ABDUCTION = (-25.0, 170.0)  # from hanging down, positive = away from the body
HIP_ABDUCTION = (-15.0, 35.0)        # usual range; a few figures kick up to HIP_KICK
HIP_KICK = 80.0
FACE_YAW = 50.0
TORSO_LEAN = 15.0
HEAD_ROLL = 20.0
HEIGHT_RANGE = (0.35, 0.9)  # H as a fraction of the canvas height (90..230 px on 256)

_K = {name: i for i, name in enumerate(COCO17.keypoints)}


# --------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = 0
    num_train_images: int = 1500
    num_val_images: int = 250
    height: int = 256
    width: int = 256
    max_people: int = 4
    max_occluders: int = 3

    def key(self) -> str:
        """Short stable hash of the fields (and the generator version): the cache dir name."""
        payload = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]

    def num_images(self, split: str) -> int:
        return {"train": self.num_train_images, "val": self.num_val_images}[split]


@dataclass(frozen=True)
class SyntheticPaths:
    root: Path
    images: dict[str, Path]
    annotations: dict[str, Path]


@dataclass
class Scene:
    image: np.ndarray  # HxWx3 uint8 RGB
    owner: np.ndarray  # HxW int16
    # per person: keypoints (17,3) [x,y,v], bbox [x,y,w,h], head_box [x0,y0,x1,y1], annotated,
    # plus height (H, px), xy (17,2) keypoint positions even off-image, depth (0 = back-most)
    people: list[dict] = field(default_factory=list)


def split_index(split: str) -> int:
    return GENERATED_SPLITS.index(split)


def pixel_index(xy: np.ndarray) -> np.ndarray:
    """Integer pixel holding a point, with pixel centres at integer coordinates."""
    return np.floor(np.asarray(xy, dtype=np.float64) + 0.5).astype(np.int64)


def flat_person_color(i: int) -> tuple[int, int, int]:
    if i < len(_FLAT_PEOPLE):
        return _FLAT_PEOPLE[i]
    # Beyond the palette: still distinct from each other and from the background/occluder.
    return (16 + (i * 37) % 200, 16 + (i * 91) % 200, 16 + (i * 13) % 200)


def default_cache_dir() -> Path:
    env = os.environ.get("OCCPOSE_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent.parent / ".cache"


# --------------------------------------------------------------------------------------------
# Drawing


def _fixed(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


class _Painter:
    """Draws each shape into the image (colour) and the owner buffer (id) with identical pixels.

    In flat mode the requested colour is ignored and replaced by the owner's flat colour.
    """

    def __init__(self, image: np.ndarray, owner: np.ndarray, flat: bool):
        self.image, self.owner, self.flat = image, owner, flat

    def _colour(self, colour, oid: int) -> tuple[int, ...]:
        if self.flat:
            return FLAT_OCCLUDER if oid == OCCLUDER_ID else flat_person_color(oid)
        return tuple(int(min(255.0, max(0.0, c))) for c in colour)

    def _both(self, draw, colour, oid: int) -> None:
        draw(self.image, self._colour(colour, oid))
        draw(self.owner, oid)

    def capsule(self, p, q, radius: float, colour, oid: int) -> None:
        # cv2 draws thick lines with round caps, i.e. a capsule.
        thickness = max(1, int(round(2 * radius)))
        a, b = _fixed(p), _fixed(q)
        self._both(lambda buf, c: cv2.line(buf, a, b, c, thickness, cv2.LINE_8, _SHIFT), colour, oid)

    def disc(self, p, radius: float, colour, oid: int) -> None:
        centre, r = _fixed(p), max(_ONE, int(round(radius * _ONE)))
        self._both(lambda buf, c: cv2.circle(buf, centre, r, c, -1, cv2.LINE_8, _SHIFT), colour, oid)

    def ellipse(self, centre, axes, angle_deg: float, colour, oid: int) -> None:
        ctr = _fixed(centre)
        ax = (max(_ONE, int(round(axes[0] * _ONE))), max(_ONE, int(round(axes[1] * _ONE))))
        self._both(lambda buf, c: cv2.ellipse(buf, ctr, ax, angle_deg, 0, 360, c, -1, cv2.LINE_8, _SHIFT),
                   colour, oid)

    def polygon(self, points, colour, oid: int) -> None:
        pts = np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)
        self._both(lambda buf, c: cv2.fillPoly(buf, [pts], c, cv2.LINE_8, _SHIFT), colour, oid)


def _shade(colour, k: float) -> np.ndarray:
    return np.asarray(colour, dtype=np.float64) * k


def _mix(colour, other, t: float) -> np.ndarray:
    return (1 - t) * np.asarray(colour, dtype=np.float64) + t * np.asarray(other, dtype=np.float64)


def _clothing_colour(rng: np.random.Generator) -> np.ndarray:
    # Bright enough that the LEFT_SHADE darkening stays visible.
    c = rng.uniform(0, 255, 3)
    return c * rng.uniform(150, 240) / max(c.max(), 1.0)


_SKIN_TONES = np.array([(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66),
                        (141, 85, 36), (255, 205, 180)], dtype=np.float64)


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _ellipse_extent(axes, angle_deg: float) -> np.ndarray:
    """Half width and half height of a rotated ellipse's bounding box."""
    t = math.radians(angle_deg)
    a, b = axes
    return np.array([math.hypot(a * math.cos(t), b * math.sin(t)),
                     math.hypot(a * math.sin(t), b * math.cos(t))])


# --------------------------------------------------------------------------------------------
# Figures


@dataclass
class _Figure:
    kp: np.ndarray          # (17, 2) keypoint positions
    height: float           # H, px
    radii: dict[str, float]
    side: np.ndarray        # torso's unit vector towards the person's left (image right)
    up: np.ndarray          # torso's unit up vector
    head: tuple             # (centre, axes, angle_deg): hair/skull ellipse
    face: tuple             # (centre, axes, angle_deg): skin ellipse
    ear_behind: tuple[bool, bool]  # (left, right) ear turned away from the camera
    colours: dict[str, np.ndarray]
    long_sleeves: bool
    stripes: int            # number of shirt stripes (0: plain)
    left_first: tuple[bool, bool]  # (arms, legs): draw the left one first (behind)


def _limb(origin, down_angle, outward_sign, abduction, flex_signed, l1, l2) -> tuple[np.ndarray, np.ndarray]:
    """Two-segment forward kinematics. Angles in degrees; image coordinates (y down)."""
    a1 = down_angle - outward_sign * math.radians(abduction)
    mid = origin + l1 * _unit(a1)
    end = mid + l2 * _unit(a1 + math.radians(flex_signed))
    return mid, end


def _make_figure(rng: np.random.Generator, root: np.ndarray, height: float) -> _Figure:
    """Pose a figure with its pelvis at `root`, facing the camera, by forward kinematics."""
    L = {k: v * height * rng.uniform(1 - PROPORTION_JITTER, 1 + PROPORTION_JITTER)
         for k, v in PROPORTIONS.items()}
    lean = math.radians(rng.uniform(-TORSO_LEAN, TORSO_LEAN))
    up = np.array([math.sin(lean), -math.cos(lean)])
    side = np.array([math.cos(lean), math.sin(lean)])  # person's left = image right
    down_angle = math.atan2(-up[1], -up[0])
    narrow = rng.uniform(0.75, 1.0)  # body yaw narrows the shoulders and hips

    kp = np.zeros((17, 2))
    shoulder_mid = root + up * L["torso"]
    for name, sign in (("left", 1.0), ("right", -1.0)):
        kp[_K[f"{name}_shoulder"]] = shoulder_mid + sign * side * L["shoulder_half"] * narrow
        kp[_K[f"{name}_hip"]] = root + sign * side * L["hip_half"] * narrow
        f1, f2 = rng.uniform(*FORESHORTENING, size=2)
        flex = rng.uniform(*ELBOW_FLEX) * rng.choice([-1.0, 1.0])
        kp[_K[f"{name}_elbow"]], kp[_K[f"{name}_wrist"]] = _limb(
            kp[_K[f"{name}_shoulder"]], down_angle, sign, rng.uniform(*SHOULDER_ABDUCTION), flex,
            L["upper_arm"] * f1, L["forearm"] * f2)
        f1, f2 = rng.uniform(*FORESHORTENING, size=2)
        # Legs mostly point down with a mildly bent knee; a few kick or crouch.
        abduction = rng.uniform(*HIP_ABDUCTION) if rng.random() < 0.9 else rng.uniform(HIP_ABDUCTION[1], HIP_KICK)
        flex = KNEE_FLEX[0] + (KNEE_FLEX[1] - KNEE_FLEX[0]) * rng.random() ** 2
        kp[_K[f"{name}_knee"]], kp[_K[f"{name}_ankle"]] = _limb(
            kp[_K[f"{name}_hip"]], down_angle, sign, abduction, flex * rng.choice([-1.0, 1.0]),
            L["thigh"] * f1, L["shin"] * f2)

    # Head: skull ellipse on the neck, face ellipse shifted towards where the head turns.
    roll = lean + math.radians(rng.uniform(-HEAD_ROLL, HEAD_ROLL))
    head_side, head_down = _unit(roll), _unit(roll + math.pi / 2)
    a, b = L["head_a"], L["head_b"]
    head_centre = shoulder_mid + up * L["neck"] - head_down * b * 0.85
    yaw = math.radians(rng.uniform(-FACE_YAW, FACE_YAW))
    face_axes = (0.9 * a, 0.88 * b)
    face_centre = head_centre + head_side * (0.1 * a * math.sin(yaw)) + head_down * (0.1 * b)

    def face_point(x: float, y: float, z: float) -> np.ndarray:
        # A point on the face in head-local 3D (x to the person's left, y down, z to the camera),
        # yawed about the vertical axis and projected orthographically onto the face ellipse.
        xr = x * math.cos(yaw) + z * math.sin(yaw)
        return face_centre + head_side * (xr * face_axes[0]) + head_down * (y * face_axes[1])

    kp[_K["nose"]] = face_point(0.0, 0.3, 1.0)
    kp[_K["left_eye"]], kp[_K["right_eye"]] = face_point(0.4, -0.08, 0.9), face_point(-0.4, -0.08, 0.9)
    kp[_K["left_ear"]], kp[_K["right_ear"]] = face_point(1.0, 0.1, 0.0), face_point(-1.0, 0.1, 0.0)
    # Two decimals, as written to JSON, so labels computed here match the files exactly.
    kp = np.round(kp, 2)

    shirt, pants = _clothing_colour(rng), _clothing_colour(rng)
    colours = {
        "shirt": shirt, "pants": pants, "stripe": _mix(shirt, _clothing_colour(rng), 0.7),
        "skin": _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.85, 1.0),
        "hair": rng.uniform(10, 90, 3) * np.array([1.0, 0.8, 0.6]),
        "shoes": rng.uniform(20, 120, 3),
    }
    radii = {"upper_arm": 0.036 * height, "forearm": 0.03 * height, "thigh": 0.052 * height,
             "shin": 0.042 * height, "neck": 0.03 * height, "joint": max(1.6, 0.02 * height),
             "hand": 0.03 * height, "foot": 0.026 * height, "eye": max(1.0, 0.011 * height),
             "ear": max(1.2, 0.016 * height)}
    return _Figure(
        kp=kp, height=height, radii=radii, side=side, up=up,
        head=(head_centre, (a, b), math.degrees(roll)),
        face=(face_centre, face_axes, math.degrees(roll)),
        ear_behind=(yaw > 0.35, yaw < -0.35), colours=colours,
        long_sleeves=bool(rng.random() < 0.5), stripes=int(rng.choice([0, 0, 3, 4, 5])),
        left_first=(bool(rng.random() < 0.5), bool(rng.random() < 0.5)),
    )


def _draw_limb_pair(p: _Painter, f: _Figure, oid: int, kind: str) -> None:
    """Both arms or both legs: capsules with an axial highlight, then joint discs."""
    r, c = f.radii, f.colours
    order = ("left", "right") if f.left_first[kind == "leg"] else ("right", "left")
    for side in order:
        k = LEFT_SHADE if side == "left" else 1.0
        if kind == "arm":
            a, b, e = (f.kp[_K[f"{side}_{j}"]] for j in ("shoulder", "elbow", "wrist"))
            r1, r2 = r["upper_arm"], r["forearm"]
            c1 = _shade(c["shirt"], k)
            c2 = c1 if f.long_sleeves else _shade(c["skin"], 0.75 + 0.25 * k)
        else:
            a, b, e = (f.kp[_K[f"{side}_{j}"]] for j in ("hip", "knee", "ankle"))
            r1, r2 = r["thigh"], r["shin"]
            c1 = c2 = _shade(c["pants"], k)
        for (p0, p1, rad, col) in ((a, b, r1, c1), (b, e, r2, c2)):
            p.capsule(p0, p1, rad, col, oid)
            # Off-axis lighter stroke: cheap cylindrical shading.
            p.capsule(p0 - f.side * rad * 0.3, p1 - f.side * rad * 0.3, rad * 0.35, _mix(col, (255, 255, 255), 0.25), oid)
        direction = (e - b) / max(np.linalg.norm(e - b), 1e-6)
        if kind == "arm":
            p.disc(e + direction * r["hand"] * 0.8, r["hand"], _shade(c["skin"], 0.75 + 0.25 * k), oid)
        else:
            outward = f.side if side == "left" else -f.side
            p.capsule(e, e + outward * r["foot"] * 1.8 - f.up * r["foot"] * 0.5, r["foot"], _shade(c["shoes"], k), oid)
        # Joint discs: dark on the left side, light on the right, so they differ from the limb.
        joint = _mix(c1, (0, 0, 0), 0.55) if side == "left" else _mix(c1, (255, 255, 255), 0.55)
        p.disc(b, r["joint"], joint, oid)
        p.disc(e, r["joint"], joint, oid)


def _draw_torso(p: _Painter, f: _Figure, oid: int) -> None:
    kp, h, s, u, c = f.kp, f.height, f.side, f.up, f.colours
    ls, rs, lh, rh = (kp[_K[n]] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    top, bottom = (ls + rs) / 2 + u * 0.02 * h, (lh + rh) / 2 - u * 0.05 * h
    # Pelvis/shorts in the trouser colour, below the shirt.
    p.polygon([lh + s * 0.03 * h, lh - u * 0.07 * h + s * 0.02 * h, rh - u * 0.07 * h - s * 0.02 * h,
               rh - s * 0.03 * h, rh + u * 0.03 * h, lh + u * 0.03 * h], c["pants"], oid)
    right_half = [top, rs + u * 0.02 * h, rs - s * 0.015 * h, rh - s * 0.025 * h, rh - u * 0.04 * h, bottom]
    left_half = [top, ls + u * 0.02 * h, ls + s * 0.015 * h, lh + s * 0.025 * h, lh - u * 0.04 * h, bottom]
    p.polygon(right_half, c["shirt"], oid)
    p.polygon(left_half, _shade(c["shirt"], 0.8), oid)  # the person's left half a little darker
    for t in np.linspace(0.25, 0.85, f.stripes):
        # Stripes run from each side edge to the midline, inset so they stay on the shirt.
        mid = top + (bottom - top) * t
        for edge, k in ((right_half, 1.0), (left_half, 0.8)):
            outer = edge[2] + (edge[3] - edge[2]) * t
            p.capsule(mid + (outer - mid) * 0.05, mid + (outer - mid) * 0.85, max(0.6, 0.008 * h),
                      _shade(c["stripe"], k), oid)


def _draw_head(p: _Painter, f: _Figure, oid: int) -> None:
    kp, r, c = f.kp, f.radii, f.colours
    head_centre, face_centre = f.head[0], f.face[0]
    neck_base = (kp[_K["left_shoulder"]] + kp[_K["right_shoulder"]]) / 2
    p.capsule(neck_base, neck_base + (head_centre - neck_base) * 0.7, r["neck"], _shade(c["skin"], 0.85), oid)
    p.ellipse(*f.head, c["hair"], oid)
    p.ellipse(*f.face, c["skin"], oid)
    for name, behind in (("left_ear", f.ear_behind[0]), ("right_ear", f.ear_behind[1])):
        # An ear turned away is drawn smaller and hair-tinted but still marks its keypoint.
        scale, colour = (0.7, _mix(c["skin"], c["hair"], 0.5)) if behind else (1.0, _shade(c["skin"], 0.75))
        p.ellipse(kp[_K[name]], (r["ear"] * 0.8 * scale, r["ear"] * 1.3 * scale), f.face[2], colour, oid)
    nose = kp[_K["nose"]]
    eye_mid, across = (kp[_K["left_eye"]] + kp[_K["right_eye"]]) / 2, kp[_K["left_eye"]] - kp[_K["right_eye"]]
    mouth = nose + (nose - eye_mid) * 0.6
    p.capsule(mouth - across * 0.25, mouth + across * 0.25, 0.5, (120, 30, 30), oid)  # first: never hides the nose
    for name in ("left_eye", "right_eye"):
        p.disc(kp[_K[name]], r["eye"], (25, 20, 20), oid)
    p.disc(nose, r["eye"], _mix(c["skin"], (150, 30, 20), 0.55), oid)


def _draw_figure(p: _Painter, f: _Figure, oid: int) -> None:
    _draw_limb_pair(p, f, oid, "leg")
    _draw_torso(p, f, oid)
    _draw_limb_pair(p, f, oid, "arm")
    _draw_head(p, f, oid)


def _head_box(f: _Figure) -> list[float]:
    lo, hi = [], []
    for centre, axes, angle in (f.head, f.face):
        ext = _ellipse_extent(axes, angle)
        lo.append(centre - ext)
        hi.append(centre + ext)
    x0, y0 = np.min(lo, axis=0)
    x1, y1 = np.max(hi, axis=0)
    return [round(float(v), 2) for v in (x0, y0, x1, y1)]


# --------------------------------------------------------------------------------------------
# Scenes


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random two-colour gradient + low-frequency blotches + stripes and blobs."""
    c0, c1 = rng.uniform(0, 255, (2, 3))
    theta = rng.uniform(0, 2 * math.pi)
    # Gradient and blotches on a coarse grid, upsampled in one go (cheap; the gradient is linear).
    grid = np.linspace(0, 1, 6)
    t = grid[None, :] * math.cos(theta) + grid[:, None] * math.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    coarse = c0 + t[..., None] * (c1 - c0) + rng.normal(0, 25, (6, 6, 3))
    img = cv2.resize(np.clip(coarse, 0, 255).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 4)):
        a, b = rng.uniform(-0.2, 1.2, (2, 2)) * (w, h)
        cv2.line(img, _fixed(a), _fixed(b), tuple(int(v) for v in rng.integers(0, 256, 3)),
                 int(rng.integers(1, 10)), cv2.LINE_AA, _SHIFT)
    for _ in range(rng.integers(0, 5)):
        centre = rng.uniform(0, 1, 2) * (w, h)
        axes = (int(rng.uniform(5, 40) * _ONE), int(rng.uniform(5, 40) * _ONE))
        cv2.ellipse(img, _fixed(centre), axes, float(rng.uniform(0, 180)), 0, 360,
                    tuple(int(v) for v in rng.integers(0, 256, 3)), -1, cv2.LINE_AA, _SHIFT)
    return img


def _place_people(rng: np.random.Generator, n: int, h: int, w: int) -> list[tuple[np.ndarray, float]]:
    """Pelvis positions and heights; about a third of the people stand close to an earlier one."""
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(n):
        if placed and rng.random() < 0.35:
            anchor, anchor_h = placed[rng.integers(len(placed))]
            height = float(np.clip(anchor_h * rng.uniform(0.8, 1.2), HEIGHT_RANGE[0] * h, HEIGHT_RANGE[1] * h))
            dx = rng.uniform(0.2, 0.6) * max(height, anchor_h) * rng.choice([-1.0, 1.0])
            root = anchor + np.array([dx, rng.normal(0, 0.08 * height)])
        else:
            height = rng.uniform(*HEIGHT_RANGE) * h
            # Pelvis at mid-height of the figure; allow ~15% of H to leave the image.
            root = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.3 * height, h - 0.3 * height)])
        placed.append((root, height))
    return placed


def _draw_occluder(p: _Painter, rng: np.random.Generator, centre: np.ndarray, size: float) -> None:
    """A rectangle, ellipse or star-shaped polygon with a concentric inner pattern."""
    kind = rng.integers(3)
    angle = rng.uniform(0, 180)
    aspect = rng.uniform(0.3, 1.0)
    colours = [rng.uniform(0, 255, 3) for _ in range(3)]
    corners = np.zeros((0, 2))  # unused for ellipses
    if kind == 0:
        half = np.array([size, size * aspect]) / 2
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    elif kind == 2:
        n = rng.integers(3, 8)
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        corners = np.stack([np.cos(ang), np.sin(ang)], 1) * rng.uniform(0.5, 1.0, (n, 1)) * size / 2
    rot = np.array([[math.cos(math.radians(angle)), -math.sin(math.radians(angle))],
                    [math.sin(math.radians(angle)), math.cos(math.radians(angle))]])
    for scale, colour in zip((1.0, 0.65, 0.3), colours):
        if kind == 1:
            p.ellipse(centre, (size / 2 * scale, size / 2 * aspect * scale), angle, colour, OCCLUDER_ID)
        else:
            p.polygon(centre + (corners * scale) @ rot.T, colour, OCCLUDER_ID)


def _labels(kp: np.ndarray, owner: np.ndarray, oid: int) -> np.ndarray:
    """[x, y, v] per keypoint from the owner buffer (see module docstring)."""
    h, w = owner.shape
    px = pixel_index(kp)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    out = np.zeros((len(kp), 3))
    out[inside, :2] = kp[inside]
    out[inside, 2] = np.where(owner[px[inside, 1], px[inside, 0]] == oid, 2, 1)
    return out


def _silhouette_bbox(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def render_scene(rng: np.random.Generator, spec: SyntheticSpec, flat: bool = False) -> Scene:
    """Render one image with its owner buffer and per-person labels.

    flat=True: background, each person and the occluders each get one flat colour (no texture,
    shading or noise), so the image is a colour map of the owner buffer.
    """
    h, w = spec.height, spec.width
    background = _background(rng, h, w)  # always drawn so flat and textured scenes share poses
    image = np.empty((h, w, 3), np.uint8)
    image[:] = FLAT_BACKGROUND if flat else background
    owner = np.full((h, w), BACKGROUND_ID, np.int16)
    painter = _Painter(image, owner, flat)

    # Fewer people are likelier (weights 1/k): crowded scenes stay present without dominating the data.
    weights = 1.0 / np.arange(1, spec.max_people + 1)
    n = int(rng.choice(np.arange(1, spec.max_people + 1), p=weights / weights.sum()))
    figures = [_make_figure(rng, root, height) for root, height in _place_people(rng, n, h, w)]
    bboxes: list[list[float]] = [[0.0] * 4] * n
    order = rng.permutation(n)  # back to front
    for oid in order:
        _draw_figure(painter, figures[oid], int(oid))
        # Right after drawing, every pixel of this figure is still its own: the full silhouette.
        bboxes[oid] = _silhouette_bbox(owner == oid)

    for _ in range(int(rng.integers(0, spec.max_occluders + 1))):
        size = rng.uniform(0.08, 0.25) * min(h, w)
        if rng.random() < 0.75:  # aim at a random body part, so occluders actually occlude
            centre = figures[rng.integers(n)].kp[rng.integers(17)] + rng.normal(0, 0.1 * size, 2)
        else:
            centre = rng.uniform(0, 1, 2) * (w, h)
        _draw_occluder(painter, rng, centre, size)

    if not flat:  # sensor-like grain over everything
        grain = rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(2, 7))
        image[:] = cv2.add(image, cv2.merge([grain] * 3), dtype=cv2.CV_8U)  # saturating

    people = []
    for oid, f in enumerate(figures):
        kps = _labels(f.kp, owner, oid)
        annotated = int((kps[:, 2] > 0).sum()) >= MIN_LABELLED and bboxes[oid][3] >= MIN_BOX_HEIGHT
        people.append({"keypoints": kps, "bbox": bboxes[oid], "head_box": _head_box(f),
                       "annotated": bool(annotated), "height": f.height, "xy": f.kp.copy(),
                       "depth": int(np.flatnonzero(order == oid)[0])})
    return Scene(image=image, owner=owner, people=people)


# --------------------------------------------------------------------------------------------
# Dataset files


def _file_name(k: int) -> str:
    return f"{k:06d}.jpg"


def _render_chunk(job: tuple[SyntheticSpec, str, int, int, str]) -> list[list[dict]]:
    """Worker: render images [start, stop) of a split, write the JPEGs, return annotated people."""
    spec, split, start, stop, image_dir = job
    cv2.setNumThreads(1)  # the pool provides the parallelism
    out = []
    for k in range(start, stop):
        scene = render_scene(np.random.default_rng([spec.seed, split_index(split), k]), spec)
        ok = cv2.imwrite(str(Path(image_dir) / _file_name(k)), np.ascontiguousarray(scene.image[:, :, ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"could not write {image_dir}/{_file_name(k)}")
        out.append([{"keypoints": pp["keypoints"], "bbox": pp["bbox"], "head_box": pp["head_box"]}
                    for pp in scene.people if pp["annotated"]])
    return out


def _categories() -> list[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person",
             "keypoints": list(COCO17.keypoints),
             "skeleton": [[a + 1, b + 1] for a, b in COCO17.bones]}]


def _annotation(ann_id: int, image_id: int, person: dict) -> dict:
    kps = person["keypoints"]
    flat: list[float] = []
    for x, y, v in kps:
        flat += [round(float(x), 2), round(float(y), 2), int(v)]
    x, y, bw, bh = person["bbox"]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [x, y, bw, bh],
            "area": float(bw * bh), "iscrowd": 0, "num_keypoints": int((kps[:, 2] > 0).sum()),
            "keypoints": flat, "head_box": person["head_box"], "segmentation": []}


def is_occluded(keypoints: list[float] | np.ndarray) -> bool:
    """val_occ criterion: at least a third of the labelled keypoints are hidden (v == 1)."""
    v = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)[:, 2]
    labelled = int((v > 0).sum())
    return labelled > 0 and 3 * int((v == 1).sum()) >= labelled  # exact integer form of >= 1/3


def _coco(spec: SyntheticSpec, split: str, people_per_image: list[list[dict]]) -> dict:
    images, anns = [], []
    for k, people in enumerate(people_per_image):
        images.append({"id": k + 1, "file_name": _file_name(k), "width": spec.width, "height": spec.height})
        for person in people:
            anns.append(_annotation(len(anns) + 1, k + 1, person))
    return {"info": {"description": f"synthetic {split}", "version": GENERATOR_VERSION, "spec": asdict(spec)},
            "images": images, "annotations": anns, "categories": _categories()}


def _occluded_subset(coco: dict) -> dict:
    anns = [a for a in coco["annotations"] if is_occluded(a["keypoints"])]
    keep = {a["image_id"] for a in anns}
    return {**coco, "info": {**coco["info"], "description": "synthetic val_occ"},
            "images": [im for im in coco["images"] if im["id"] in keep], "annotations": anns}


def _paths(root: Path) -> SyntheticPaths:
    images = {s: root / "images" / s for s in GENERATED_SPLITS}
    images["val_occ"] = images["val"]
    return SyntheticPaths(root=root, images=images,
                          annotations={s: root / "annotations" / f"{s}.json" for s in SPLITS})


def _generate(spec: SyntheticSpec, root: Path, workers: int, chunk: int = 64, progress=None) -> None:
    paths = _paths(root)
    jobs = []
    for split in GENERATED_SPLITS:
        paths.images[split].mkdir(parents=True, exist_ok=True)
        n = spec.num_images(split)
        jobs += [(spec, split, s, min(s + chunk, n), str(paths.images[split])) for s in range(0, n, chunk)]
    total, results = sum(job[3] - job[2] for job in jobs), []

    def collect(chunks) -> None:
        for result in chunks:
            results.append(result)
            if progress is not None:  # (images done, images in all): a caller's progress bar
                progress(sum(j[3] - j[2] for j in jobs[:len(results)]), total)
    if workers > 1 and len(jobs) > 1:
        # spawn: safe inside threaded parents (Ray workers); results come back in job order.
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            collect(pool.imap(_render_chunk, jobs, chunksize=1))
    else:
        collect(_render_chunk(job) for job in jobs)
    per_split: dict[str, list[list[dict]]] = {s: [] for s in GENERATED_SPLITS}
    for job, result in zip(jobs, results):
        per_split[job[1]] += result
    (root / "annotations").mkdir(exist_ok=True)
    cocos = {s: _coco(spec, s, per_split[s]) for s in GENERATED_SPLITS}
    cocos["val_occ"] = _occluded_subset(cocos["val"])
    for split, coco in cocos.items():
        paths.annotations[split].write_text(json.dumps(coco, separators=(",", ":")))
    (root / "spec.json").write_text(json.dumps({**asdict(spec), "version": GENERATOR_VERSION}, indent=1))


def ensure_dataset(spec: SyntheticSpec = SyntheticSpec(), cache_dir: Path | None = None,
                   workers: int = 2, progress=None) -> SyntheticPaths:
    """Generate the dataset once into cache_dir/synthetic-<key>/ and return its paths; `progress(done, total)` is
    called with the images rendered so far while it is generated (not at all when it is already cached).

    Safe for concurrent callers: each generates into its own temp dir and renames it into place
    atomically; whoever loses the race discards its copy and uses the winner's.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache_dir / f"synthetic-{spec.key()}"
    if root.is_dir():
        return _paths(root)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=cache_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final dir should read like any other
    try:
        _generate(spec, tmp, workers, progress=progress)
        try:
            os.replace(tmp, root)
        except OSError:
            if not root.is_dir():  # a real failure, not a lost race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _paths(root)


def _main() -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic pose dataset (or one sample).")
    parser.add_argument("--out", type=Path, default=None, help="cache dir (default: OCCPOSE_CACHE or .cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=SyntheticSpec.num_train_images)
    parser.add_argument("--val", type=int, default=SyntheticSpec.num_val_images)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=Path, default=None, help="only write one rendered scene to this JPEG")
    args = parser.parse_args()
    spec = SyntheticSpec(seed=args.seed, num_train_images=args.train, num_val_images=args.val)
    if args.sample is not None:
        scene = render_scene(np.random.default_rng([spec.seed, 0, 0]), spec)
        cv2.imwrite(str(args.sample), scene.image[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        print(args.sample)
        return
    print(ensure_dataset(spec, args.out, args.workers).root)


if __name__ == "__main__":
    _main()
