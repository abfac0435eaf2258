"""Reading pictures as a user would expect, for benchmarks and for ``fsslib.predict`` alike: a picture is read as
a viewer shows it (its EXIF orientation applied: phones store the sensor's grid and a rotation tag), and any mode
PIL opens becomes an (H, W, 3) uint8 RGB array (grayscale repeated, 16-bit divided by 257 (65535 -> 255),
transparency composited on white, palettes resolved). Masks are label images: a lossy file (JPEG) or values that
compression noise or smoothed edges leave are refused (:func:`label_problem`)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")
ORIENTATION = 0x0112  # the EXIF tag of the rotation a viewer applies
TURNED = (5, 6, 7, 8)  # orientations that swap width and height
LOSSY_FORMATS = ("JPEG", "MPO")  # formats whose compression changes a mask's values near every edge
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


def rgb_array(handle: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of an opened image as a viewer shows it, whatever its mode."""
    handle = upright(handle)
    if handle.mode in SIXTEEN_BIT:
        values = np.asarray(handle, dtype=np.float64)
        scaled = np.round(np.clip(values / 257, 0, 255)).astype(np.uint8)
        return np.repeat(scaled[..., None], 3, axis=2)
    if handle.mode in ("RGBA", "LA", "PA") or (handle.mode == "P" and "transparency" in handle.info):
        white = Image.new("RGBA", handle.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, handle.convert("RGBA")).convert("RGB"))
    return np.asarray(handle.convert("RGB"))


def label_problem(values: np.ndarray, file_format: str | None = None) -> str | None:
    """Why a mask of these distinct ``values``, read from a file of ``file_format``, is not a label image (None
    when it is one): a lossy format, or many values between 0 and 255 (JPEG noise, anti-aliased edges)."""
    if file_format in LOSSY_FORMATS:
        return f"is a {file_format} file, whose compression changes the values near every edge of the object"
    between = int(((values > 0) & (values < 255)).sum())
    if between > NOISE_VALUES:
        return (f"holds {between} distinct values between 0 and 255, as compression noise or smoothed edges leave "
                "them, not the few values of a label image")
    return None
