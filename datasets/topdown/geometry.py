"""Top-down geometry: person box -> centre/scale -> affine warp into a fixed-size crop.

Written by hand (the HRNet/SimpleBaseline convention; no library exposes it): the crop keeps the box's
centre, pads it by `padding`, fixes its aspect ratio to the input's, and may be scaled/rotated for augmentation.
Coordinates are pixels, x right / y down, 0-based; matrices are 2x3 float64 image -> crop unless told otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropGeometry:
    """Where a crop comes from: centre (x, y) and size (w, h) of the source region, rotation in degrees."""

    center: np.ndarray
    size: np.ndarray
    rotation: float = 0.0


def box_to_crop(bbox_xywh, input_hw: tuple[int, int], padding: float = 1.25) -> CropGeometry:
    """The unaugmented crop of a person box (x, y, w, h): its centre, its size widened or heightened to the input's
    aspect ratio (input_hw is (height, width)) and multiplied by `padding`."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    center = np.array([x + w * 0.5, y + h * 0.5])
    aspect = input_hw[1] / input_hw[0]
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return CropGeometry(center=center, size=np.array([w, h]) * padding)


def affine_matrix(geom: CropGeometry, output_hw: tuple[int, int], inverse: bool = False,
                  udp: bool = False) -> np.ndarray:
    """2x3 matrix mapping source pixels to output pixels (or back, with inverse=True).

    Built from three point pairs like the reference implementations, so pixel centres map consistently. `udp`:
    UDP's unbiased warp instead (`udp_affine_matrix`).
    """
    if udp:
        return udp_affine_matrix(geom, output_hw, inverse)
    out_h, out_w = output_hw
    theta = np.deg2rad(geom.rotation)
    src_w = geom.size[0]
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    src_dir = rot @ np.array([0.0, src_w * -0.5])
    dst_dir = np.array([0.0, out_w * -0.5])
    src = np.stack([geom.center, geom.center + src_dir, _third_point(geom.center, geom.center + src_dir)])
    dst_center = np.array([out_w * 0.5, out_h * 0.5])
    dst = np.stack([dst_center, dst_center + dst_dir, _third_point(dst_center, dst_center + dst_dir)])
    if inverse:
        return cv2.getAffineTransform(dst.astype(np.float32), src.astype(np.float32))
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))


def udp_affine_matrix(geom: CropGeometry, output_hw: tuple[int, int], inverse: bool = False) -> np.ndarray:
    """UDP's unbiased warp (Huang et al., CVPR 2020; MMPose's get_udp_warp_matrix): the box's extent maps onto the
    crop's pixel-centre span, (W_out - 1) / box_w per pixel, so the box's centre lands on the crop's centre pixel
    ((W_out - 1) / 2) whatever the resolution: p' = diag(sx, sy) R(rotation) (p - centre) + (box_w sx, box_h sy) / 2
    with sx = (W_out - 1) / box_w, sy = (H_out - 1) / box_h and R the counter-clockwise rotation matrix
    [[cos, -sin], [sin, cos]] (MMPose's sign; the HRNet warp turns the other way, immaterial for a random
    rotation). float64; inverse=True gives crop -> image."""
    out_h, out_w = output_hw
    theta = np.deg2rad(geom.rotation)
    cos, sin = np.cos(theta), np.sin(theta)
    sx, sy = (out_w - 1) / geom.size[0], (out_h - 1) / geom.size[1]
    linear = np.diag([sx, sy]) @ np.array([[cos, -sin], [sin, cos]])
    offset = np.array([sx * geom.size[0], sy * geom.size[1]]) * 0.5 - linear @ np.asarray(geom.center, np.float64)
    matrix = np.hstack([linear, offset[:, None]])
    return cv2.invertAffineTransform(matrix) if inverse else matrix


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]])


def warp_image(image: np.ndarray, matrix: np.ndarray, output_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear warp of an (H, W, C) image into (output_h, output_w, C); outside the image reads as 0."""
    return cv2.warpAffine(image, matrix, (output_hw[1], output_hw[0]), flags=cv2.INTER_LINEAR)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (..., 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def flip_matrix(width: int) -> np.ndarray:
    """2x3 horizontal mirror of a crop `width` pixels wide (pixel x -> width - 1 - x, as cv2.flip)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def box_corners(bbox_xywh) -> np.ndarray:
    """(4, 2) float64 corners of an (x, y, w, h) box."""
    x, y, w, h = bbox_xywh
    return np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], dtype=np.float64)


def bounds(points: np.ndarray) -> np.ndarray:
    """(4,) x0, y0, x1, y1: the bounding box of (N, 2) points."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)])
