"""Whether the pixels a decoder returns are the image the annotation describes: the one check every decode path
runs (the plain and the reduced JPEG decode of image_cache.py, the device path's bytes and its loader-side decode in
gpu.py).

OpenCV and PIL decode a truncated JPEG without an error (libjpeg only warns, "Premature end of JPEG file", and fills
the rest grey), so the file is judged before decoding, cheaply: a whole JPEG ends in its end-of-image marker
(FF D9), which cannot occur inside the entropy-coded data (every FF there is stuffed or a restart marker). The
common case costs one read of the file's last bytes; only a file that does not end in the marker (trailing bytes
after it, or none at all) is read whole, to look for the marker after the start of its scan. A PNG must hold its
IEND chunk. After decoding, the size must be the annotation's `width` x `height` (at 1/reduction for libjpeg's
scaled decode: ceil(size / reduction)). A file failing either is an ImageFault: the sample is skipped and counted,
and the log names the file and why.

Pixels are the file's as stored: an EXIF orientation tag is ignored (IMREAD_IGNORE_ORIENTATION), as HRNet's
loader reads COCO and MPII (`cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION`) and as torchvision's device decoder
does by default, because the annotations index the stored pixels; turning a tagged image upright would move every
joint off its pixel (a 180-degree tag keeps the size, so no size check could catch it). Grayscale, CMYK, 16-bit and
palette images are converted to 8-bit BGR by the decoder; the content, not the file name, decides the format.
"""
from __future__ import annotations

import functools
import math
import os

import cv2
import numpy as np

__all__ = ["ImageFault", "decode_bgr", "check_bytes", "check_file", "check_size", "is_jpeg", "jpeg_segments"]

_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of a whole PNG
_TAIL = 16


class ImageFault(Exception):
    """A file that is not the image its annotation describes (missing, unreadable, truncated, another size);
    str() says why."""


def decode_bgr(path: str, image_wh=None, reduction: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 BGR: cv2.imread of `path` (IMREAD_COLOR, or libjpeg's 1/`reduction` scaled decode; EXIF
    orientation ignored) after check_file, its size checked against `image_wh` (the annotation's (width, height);
    None or 0 where unknown). ImageFault otherwise."""
    check_file(path)
    flag = (_REDUCED_FLAGS[reduction] if reduction > 1 else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imread(str(path), flag)
    if image is None:
        raise ImageFault("the decoder cannot read it")
    check_size(image.shape[:2], image_wh, reduction)
    return image


@functools.lru_cache(maxsize=1 << 16)
def is_jpeg(path: str) -> bool:
    """Whether the file at `path` starts as a JPEG (FF D8 FF), whatever its name says: only a JPEG may take
    libjpeg's scaled decode (OpenCV resizes any other format, to floor(size / reduction), which is not the geometry
    the reduced crop assumes). Read once per path and process; False for a file that cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(3) == b"\xff\xd8\xff"
    except OSError:
        return False


def check_file(path) -> None:
    """ImageFault unless the file at `path` is a whole image as far as its end marker tells (JPEG, PNG; other
    formats are left to the decoder)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                raise ImageFault("empty file")
            f.seek(max(size - _TAIL, 0))
            if f.read().endswith((_EOI, _PNG_IEND)):
                return  # the common case: one small read
            f.seek(0)
            data = f.read()
    except OSError as e:
        raise ImageFault(f"cannot be read ({e.strerror or e})") from None
    check_bytes(data)


def check_bytes(data, image_wh=None) -> None:
    """check_file for a file's bytes in memory (the device path's), plus, for a JPEG, its frame size against
    `image_wh` read from the header (what the device decoder returns: it ignores EXIF orientation too)."""
    buf = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    if len(buf) == 0:
        raise ImageFault("empty file")
    head = bytes(buf[:8])
    if head.startswith(b"\xff\xd8"):
        scan, frame_hw = _jpeg_layout(buf)
        if bytes(buf[-2:]) != _EOI and (scan is None or bytes(buf[scan:]).find(_EOI) < 0):
            raise ImageFault(f"truncated JPEG: no end-of-image marker after its image data ({len(buf)} bytes)")
        if frame_hw is not None:
            check_size(frame_hw, image_wh)
    elif head == _PNG_SIGNATURE and bytes(buf[-_TAIL:]).find(_PNG_IEND) < 0 and bytes(buf).rfind(_PNG_IEND) < 0:
        raise ImageFault(f"truncated PNG: no IEND chunk ({len(buf)} bytes)")


def check_size(decoded_hw, image_wh, reduction: int = 1) -> None:
    """ImageFault when a decoded (height, width) is not the annotation's (width, height) at 1/`reduction`."""
    if image_wh is None or not all(image_wh):
        return
    w, h = (int(round(float(v))) for v in image_wh)
    expected = (math.ceil(h / reduction), math.ceil(w / reduction))
    if tuple(int(v) for v in decoded_hw[:2]) != expected:
        got = f"{decoded_hw[1]}x{decoded_hw[0]}" + (f" at 1/{reduction}" if reduction > 1 else "")
        raise ImageFault(f"decoded {got} px, the annotation says {w}x{h}")


def jpeg_segments(buf: memoryview):
    """(marker, segment payload, offset of the marker) of each marker segment of a JPEG up to and including its
    first start-of-scan (FF DA); ValueError where the header is not a sequence of marker segments."""
    n, i = len(buf), 2
    while i + 4 <= n:
        if buf[i] != 0xFF:
            raise ValueError(f"no marker at byte {i}")
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a payload
            i += 2
            continue
        length = (buf[i + 2] << 8) | buf[i + 3]
        yield marker, buf[i + 4: i + 2 + length], i
        if marker == 0xDA:
            return
        i += 2 + length


def _jpeg_layout(buf: memoryview) -> tuple[int | None, tuple[int, int] | None]:
    """(offset of the first scan's data or None, the frame's (height, width) or None) of a JPEG."""
    scan = frame = None
    try:
        for marker, segment, offset in jpeg_segments(buf):
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(segment) >= 5:
                frame = ((segment[1] << 8) | segment[2], (segment[3] << 8) | segment[4])
                frame = frame if all(frame) else None  # height 0: given later by a DNL marker
            if marker == 0xDA:
                scan = offset + 2 + len(segment) + 2
    except ValueError:
        pass
    return scan, frame


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
