"""Reading pictures as a user would expect, for benchmarks and for ``fsslib.predict`` alike: a picture is read as
a viewer shows it (its EXIF orientation applied: phones store the sensor's grid and a rotation tag), and any mode
PIL opens becomes an (H, W, 3) uint8 RGB array (grayscale repeated, 16-bit divided by 257 (65535 -> 255),
transparency composited on white, palettes resolved). Masks are label images: a lossy file (JPEG) or values that
compression noise or smoothed edges leave are refused (:func:`label_problem`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")
ORIENTATION = 0x0112  # the EXIF tag of the rotation a viewer applies
TURNED = (5, 6, 7, 8)  # orientations that swap width and height
NOISE_VALUES = 16  # more distinct values between 0 and 255 than this: not labels but noise or smoothed edges
SAVE_MASK = ("save the mask as a PNG label image, drawn without smoothing (anti-aliasing off): 1 (or 255 on black) = "
             "object, 0 = background; from Python: PIL.Image.fromarray(mask.astype('uint8')).save('mask.png').")


def upright(handle: Image.Image) -> Image.Image:
    """The opened picture as a viewer shows it: its EXIF orientation applied (a copy where there is one)."""
    return ImageOps.exif_transpose(handle) if handle.getexif().get(ORIENTATION, 1) != 1 else handle


def shown_size(handle: Image.Image) -> tuple[int, int]:
    """(width, height) of the opened picture as a viewer shows it, read from its header only."""
    width, height = handle.size
    return (height, width) if handle.getexif().get(ORIENTATION, 1) in TURNED else (width, height)


def nonfinite_pixels(handle: Image.Image) -> int:
    """How many pixels of the opened picture are NaN or infinite: only 32-bit float pictures (mode "F", e.g. a
    TIFF) can hold them, and :func:`rgb_array` would turn them into arbitrary colours."""
    return int((~np.isfinite(np.asarray(handle, dtype=np.float32))).sum()) if handle.mode == "F" else 0


def rgb_array(handle: Image.Image, shown: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 of an opened image, whatever its mode: as a viewer shows it (``shown``: its EXIF orientation
    applied), or as stored."""
    handle = upright(handle) if shown else handle
    if handle.mode in SIXTEEN_BIT:
        values = np.asarray(handle, dtype=np.float64)
        scaled = np.round(np.clip(values / 257, 0, 255)).astype(np.uint8)
        return np.repeat(scaled[..., None], 3, axis=2)
    if handle.mode in ("RGBA", "LA", "PA") or (handle.mode == "P" and "transparency" in handle.info):
        white = Image.new("RGBA", handle.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, handle.convert("RGBA")).convert("RGB"))
    return np.asarray(handle.convert("RGB"))


def lossy_format(handle: Image.Image) -> str | None:
    """The opened file's format if its compression is lossy (JPEG, lossy WebP), else None."""
    if handle.format in ("JPEG", "MPO"):
        return "JPEG"
    if handle.format == "WEBP" and getattr(handle, "filename", ""):
        data = Path(handle.filename).read_bytes()
        offset = 12  # after RIFF's header, chunks: a fourcc, a little-endian size, the data padded to even length
        while offset + 8 <= len(data):
            fourcc, size = data[offset:offset + 4], int.from_bytes(data[offset + 4:offset + 8], "little")
            if fourcc in (b"VP8 ", b"VP8L"):  # the image: lossy or lossless
                return "lossy WebP" if fourcc == b"VP8 " else None
            offset += 8 + size + size % 2
    return None


def label_problem(values: np.ndarray, lossy: str | None = None) -> str | None:
    """Why a mask of these distinct ``values``, read from a file of :func:`lossy_format` ``lossy``, is not a
    label image (None when it is one): a lossy format, many values between 0 and 255, or values just below 255
    beside it (JPEG noise, anti-aliased edges)."""
    if lossy:
        return f"is a {lossy} file, whose compression changes the values near every edge of the object"
    between = values[(values > 0) & (values < 255)]
    if between.size > NOISE_VALUES or ((between >= 128).any() and (values == 255).any()):
        return (f"holds {between.size} distinct values between 0 and 255 ({', '.join(map(str, between[:3]))}, ...), "
                "as compression noise or smoothed edges leave them, not the few values of a label image")
    return None
