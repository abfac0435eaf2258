"""Reading pictures as a user would expect, for benchmarks and for ``fsslib.predict`` alike: any mode PIL opens
becomes an (H, W, 3) uint8 RGB array (grayscale repeated, 16-bit divided by 257 (65535 -> 255), transparency
composited on white, palettes resolved)."""
from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")


def rgb_array(handle: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of an opened image, whatever its mode."""
    if handle.mode in SIXTEEN_BIT:
        values = np.asarray(handle, dtype=np.float64)
        scaled = np.round(np.clip(values / 257, 0, 255)).astype(np.uint8)
        return np.repeat(scaled[..., None], 3, axis=2)
    if handle.mode in ("RGBA", "LA", "PA") or (handle.mode == "P" and "transparency" in handle.info):
        white = Image.new("RGBA", handle.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, handle.convert("RGBA")).convert("RGB"))
    return np.asarray(handle.convert("RGB"))
