"""Batch operations of the device pipeline (datasets/topdown/gpu.py), pure functions in plain torch ops so they run
on CUDA and, for the tests, on the CPU: which files the device decoder may take (`jpeg_needs_cpu`), batched JPEG
decode (nvjpeg through `torchvision.io.decode_jpeg`), the affine crop of a batch of images of any sizes
(`affine_grid` + `grid_sample`, cv2.warpAffine's INTER_LINEAR convention) and the painting of constant rectangles
(LJA's blocks). Equivalence with the CPU path: tests/datasets/test_gpu_augment.py.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from datasets.topdown.image_check import jpeg_segments

__all__ = ["jpeg_needs_cpu", "decode_images", "crop_batch", "paint_occlusions"]


_SOF_MARKERS = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman: what nvjpeg and torchvision decode


def jpeg_needs_cpu(data) -> bool:
    """True unless `data` is a Huffman-coded 8-bit JPEG of 1 or 3 components: other files (PNGs, CMYK or
    arithmetic-coded JPEGs) are decoded by the loader exactly as the CPU path does; the rest go to the device as
    bytes. An EXIF orientation tag does not matter: both decoders ignore it (image_check.py)."""
    buf = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    if len(buf) < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return True
    sof = components = None
    try:
        for marker, segment, _ in jpeg_segments(buf):
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                sof, components = (marker if segment[0] == 8 else None), segment[5]  # 8-bit samples only
        return sof not in _SOF_MARKERS or components not in (1, 3)
    except (IndexError, ValueError):
        return True


def _decode(data, device: torch.device):
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 deprecates its codecs for TorchCodec
        # The stored pixels, as the CPU path reads them (image_check.py): an EXIF orientation tag is not applied.
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=False)


def decode_images(sources: list[torch.Tensor], device) -> list[torch.Tensor | None]:
    """JPEG bytes (1-D uint8, on the CPU) -> (3, H, W) uint8 RGB on `device`, all JPEGs in one batched call (nvjpeg
    on CUDA: baseline files in the GPU's hardware decoder). Already decoded (3, H, W) images are moved as they are.
    A file the decoder rejects becomes None (the batch's other images are then decoded one by one)."""
    device = torch.device(device)
    out: list[torch.Tensor | None] = [None] * len(sources)
    jpegs = []
    for i, source in enumerate(sources):
        if source.dim() == 1:
            jpegs.append(i)
        else:
            out[i] = source.to(device, non_blocking=True)
    if jpegs:
        data = [sources[i] for i in jpegs]
        try:
            decoded = _decode(data, device)
        except RuntimeError:
            decoded = []
            for d in data:
                try:
                    decoded.append(_decode(d, device))
                except RuntimeError:
                    try:  # nvjpeg may refuse what libjpeg-turbo reads
                        decoded.append(_decode(d, torch.device("cpu")).to(device))
                    except RuntimeError:
                        decoded.append(None)
        for i, image in zip(jpegs, decoded):
            out[i] = image
    return out


def _windows(inverses: np.ndarray, image_hw: np.ndarray, output_hw: tuple[int, int]) -> np.ndarray:
    """(B, 4) x0, y0, x1, y1: the image pixels bilinear sampling of each crop can touch (its corners' bounding box,
    a pixel of margin for rounding), clipped to the image; all zeros where the crop misses the image."""
    out_h, out_w = output_hw
    corners = np.array([[0, 0, 1], [out_w - 1, 0, 1], [0, out_h - 1, 1], [out_w - 1, out_h - 1, 1]], np.float64)
    src = np.einsum("cj,bij->bci", corners, inverses)  # (B, 4 corners, xy)
    low, high = np.floor(src.min(axis=1)) - 1, np.floor(src.max(axis=1)) + 3
    size = image_hw[:, ::-1]  # (w, h)
    low, high = np.clip(low, 0, size).astype(np.int64), np.clip(high, 0, size).astype(np.int64)
    boxes = np.concatenate([low, high], axis=1)
    boxes[(high <= low).any(axis=1)] = 0
    return boxes


def _invert(matrices: np.ndarray) -> np.ndarray:
    """(B, 2, 3) affine maps -> their inverses, in float64 (cv2.invertAffineTransform's arithmetic)."""
    a, b, c = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2]
    d, e, f = matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2]
    det = a * e - b * d
    det = np.where(det != 0, 1.0 / np.where(det != 0, det, 1.0), 0.0)
    ia, ib, id_, ie = e * det, -b * det, -d * det, a * det
    return np.stack([np.stack([ia, ib, -ia * c - ib * f], -1), np.stack([id_, ie, -id_ * c - ie * f], -1)], 1)


def crop_batch(images: list[torch.Tensor], matrices, output_hw: tuple[int, int], round_pixels: bool = True,
               ) -> torch.Tensor:
    """cv2.warpAffine(image, matrix, (w, h), INTER_LINEAR) for a batch of images of any sizes, in one grid_sample.

    images: (3, H_i, W_i) uint8 on one device; matrices: (B, 2, 3) image -> crop pixels (the CPU path's matrices).
    Returns (B, 3, h, w) float32 with whole grey values (rounded half to even, as cv2 saturate_cast) unless
    round_pixels is off. Pixels sample the image at M^-1 (x, y) with pixel centres on integers, bilinearly, outside
    the image counting as 0 (cv2's BORDER_CONSTANT). Each image contributes only the window its crop can touch,
    zero-padded to the batch's largest window; grid_sample's align_corners=True normalisation then puts pixel
    centres exactly where cv2 has them, and the zero padding is the constant border."""
    matrices = np.asarray(matrices.cpu() if isinstance(matrices, torch.Tensor) else matrices, np.float64)
    out_h, out_w = output_hw
    n = len(images)
    device = images[0].device
    inverses = _invert(matrices)
    rois = _windows(inverses, np.array([image.shape[-2:] for image in images], np.int64), output_hw)
    win_h = max(2, int((rois[:, 3] - rois[:, 1]).max()))
    win_w = max(2, int((rois[:, 2] - rois[:, 0]).max()))
    windows = torch.zeros((n, 3, win_h, win_w), dtype=torch.uint8, device=device)
    for i, (x0, y0, x1, y1) in enumerate(rois.tolist()):
        if x1 > x0:
            windows[i, :, : y1 - y0, : x1 - x0] = images[i][:, y0:y1, x0:x1]
    inverses[:, :, 2] -= rois[:, :2]  # crop pixel -> window pixel
    # theta: normalised crop coordinates -> normalised window coordinates (align_corners=True: -1 and 1 are the
    # centres of the first and last pixel).
    to_window = np.array([[2 / (win_w - 1), 0, -1], [0, 2 / (win_h - 1), -1], [0, 0, 1]], np.float64)
    from_crop = np.array([[(out_w - 1) / 2, 0, (out_w - 1) / 2], [0, (out_h - 1) / 2, (out_h - 1) / 2], [0, 0, 1]],
                         np.float64)
    square = np.concatenate([inverses, np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], axis=1)
    theta = (to_window @ square @ from_crop)[:, :2]
    theta = torch.from_numpy(theta.astype(np.float32)).to(device, non_blocking=True)
    grid = F.affine_grid(theta, [n, 3, out_h, out_w], align_corners=True)
    crops = F.grid_sample(windows.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return crops.round_() if round_pixels else crops


def paint_occlusions(crops: torch.Tensor, occlusions: torch.Tensor) -> torch.Tensor:
    """Paint (B, M, 5) [x0, y0, x1, y1, fill] rectangles (crop pixels, x1/y1 exclusive) over (B, C, H, W) crops,
    all channels, in order (a later block covers an earlier one, as LJA's loop does). Empty boxes paint nothing."""
    if occlusions.shape[1] == 0:
        return crops
    occlusions = occlusions.to(crops.device, non_blocking=True)
    n, _, h, w = crops.shape
    ys = torch.arange(h, device=crops.device).view(1, 1, h)
    xs = torch.arange(w, device=crops.device).view(1, 1, w)
    # (B, M, H) rows and (B, M, W) columns inside each box; a pixel is covered where both are.
    rows = (ys >= occlusions[:, :, 1:2]) & (ys < occlusions[:, :, 3:4])
    cols = (xs >= occlusions[:, :, 0:1]) & (xs < occlusions[:, :, 2:3])
    fills = occlusions[:, :, 4].to(crops.dtype).view(n, -1, 1, 1, 1)
    for m in range(occlusions.shape[1]):
        inside = rows[:, m, None, :, None] & cols[:, m, None, None, :]  # (B, 1, H, W)
        crops = torch.where(inside, fills[:, m], crops)
    return crops
