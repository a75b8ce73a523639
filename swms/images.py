"""Images as stored: without the metadata a camera or phone writes into them.

A phone photo's EXIF carries the place it was taken (GPS), the device and the time; PNG text chunks
and JPEG comments can carry anything. The ID photo is printed into every certificate PDF that other
agencies receive, and proof scans are shown to reviewers: neither needs any of it (PIPL: collect and
pass on no more than the purpose needs). The orientation tag is applied to the pixels first, so the
stored image looks as it did. CPU-bound: the decoding runs in a native thread (eventlet.tpool),
so the service's hub keeps serving while it runs.
"""
from __future__ import annotations

import io

from eventlet import tpool
from PIL import Image, ImageOps

JPEG, PNG = "image/jpeg", "image/png"
MAX_PIXELS = 60_000_000   # an A3 scan at 600 dpi is ~35 Mpx; a small file must not inflate past this


class TooManyPixels(ValueError):
    pass


def without_metadata(data: bytes, content_type: str) -> bytes:
    """The image re-encoded upright with no EXIF (GPS, device, time), XMP, comments or text chunks;
    the colour profile is kept. Raises what Pillow raises for a file it cannot decode, and
    TooManyPixels (read from the header, before decoding) for a decompression bomb."""
    return tpool.execute(_reencoded, data, content_type)


def _reencoded(data: bytes, content_type: str) -> bytes:
    with Image.open(io.BytesIO(data), formats=("JPEG",) if content_type == JPEG else ("PNG",)) as image:
        if image.width * image.height > MAX_PIXELS:
            raise TooManyPixels(f"{image.width}×{image.height}")
        icc_profile = image.info.get("icc_profile")
        upright = ImageOps.exif_transpose(image)   # a decoded copy, turned as the orientation tag said
    upright.info = {}                              # nothing of the original's metadata rides along
    out = io.BytesIO()
    if content_type == JPEG:
        if upright.mode not in ("RGB", "L", "CMYK"):
            upright = upright.convert("RGB")
        upright.save(out, "JPEG", quality=95, icc_profile=icc_profile)
    else:
        upright.save(out, "PNG", icc_profile=icc_profile)
    return out.getvalue()
