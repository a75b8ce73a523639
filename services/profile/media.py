"""What an uploaded file really is, judged by its content (never by its name or declared type).

Pure functions over bytes, CPU-bound: the service calls them through ``eventlet.tpool.execute``.

ID photo (照片): JPEG or PNG that decodes completely, in portrait, with the pixel size of a 1-inch
(一寸, 295×413) or 2-inch (二寸, 413×579) photo. Tolerance: each side may differ from the nominal
size by at most ``tolerance_percent`` of it (default 3 %: 1-inch 287–303 × 401–425, 2-inch
401–425 × 562–596; the two ranges cannot overlap below 16 %). The EXIF orientation is honoured
(a portrait photo stored sideways with orientation 6 counts as portrait). The pixel size is read
from the header before anything is decoded, so a small file that would inflate to a huge bitmap
(a "decompression bomb") is refused without being decoded.

Images are stored without their metadata (``swms.images.without_metadata``): a phone photo's EXIF
carries the place it was taken (GPS), the device and the time, and the ID photo is printed into
every certificate PDF that other agencies receive.

Proof material (证明材料): a PDF (header ``%PDF-``, an end-of-file marker, at least one page, not
encrypted: reviewers must be able to open it) or a JPEG/PNG that decodes completely.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from swms import errors

JPEG, PNG, PDF = "image/jpeg", "image/png", "application/pdf"
EXTENSIONS = {JPEG: "jpg", PNG: "png", PDF: "pdf"}
PHOTO_SIZES = {"一寸": (295, 413), "二寸": (413, 579)}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class ImageFacts:
    content_type: str
    width: int                 # as displayed (EXIF orientation applied)
    height: int


@dataclass(frozen=True)
class PhotoFacts(ImageFacts):
    photo_size: str            # 一寸 / 二寸


def sniff(data: bytes) -> str | None:
    """The type the content says it is (JPEG, PNG or PDF), or None."""
    if data.startswith(_JPEG_MAGIC):
        return JPEG
    if data.startswith(_PNG_MAGIC):
        return PNG
    if b"%PDF-" in data[:1024]:
        return PDF
    return None


def _damaged(field: str, what: str) -> errors.SwmsError:
    return errors.SwmsError(errors.FILE_DAMAGED, f"{what}文件已损坏或不完整，无法打开，请重新上传", field)


def _open(data: bytes, content_type: str, field: str, what: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=("JPEG",) if content_type == JPEG else ("PNG",))
    except Image.DecompressionBombError:
        code = errors.PHOTO_DIMENSIONS_INVALID if what == "照片" else errors.FILE_DAMAGED
        raise errors.SwmsError(code, f"{what}像素过大，请使用正常尺寸的图片", field) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise _damaged(field, what) from None


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112)
    except Exception:  # a broken EXIF block: judge the stored size
        orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _decode_fully(data: bytes, content_type: str, field: str, what: str) -> None:
    """Decode every pixel (a truncated file fails here) and, for PNG, check every chunk's CRC."""
    try:
        with _open(data, content_type, field, what) as image:
            image.load()
        if content_type == PNG:
            with _open(data, content_type, field, what) as image:
                image.verify()
    except errors.SwmsError:
        raise
    except Exception:
        raise _damaged(field, what) from None
    if content_type == JPEG and b"\xff\xd9" not in data[-64:]:
        # libjpeg pads a stream cut just before its end with grey and calls it decoded.
        raise _damaged(field, what)


def image_facts(data: bytes, field: str, what: str) -> ImageFacts:
    content_type = sniff(data)
    if content_type not in (JPEG, PNG):
        raise errors.SwmsError(errors.FILE_TYPE_NOT_ALLOWED,
                               f"{what}须为JPEG或PNG图片（按文件内容判断，不看文件名）", field)
    with _open(data, content_type, field, what) as image:
        width, height = _displayed_size(image)
    return ImageFacts(content_type, width, height)


def photo_size_of(width: int, height: int, tolerance_percent: float) -> str | None:
    for label, (nominal_w, nominal_h) in PHOTO_SIZES.items():
        if (abs(width - nominal_w) <= nominal_w * tolerance_percent / 100
                and abs(height - nominal_h) <= nominal_h * tolerance_percent / 100):
            return label
    return None


def nearest_photo_size(width: int, height: int) -> str:
    return min(PHOTO_SIZES, key=lambda label: abs(PHOTO_SIZES[label][0] - width) + abs(PHOTO_SIZES[label][1] - height))


def inspect_photo(data: bytes, tolerance_percent: float, field: str = "photo") -> PhotoFacts:
    facts = image_facts(data, field, "照片")
    label = photo_size_of(facts.width, facts.height, tolerance_percent)
    if label is None:
        raise errors.SwmsError(
            errors.PHOTO_DIMENSIONS_INVALID,
            f"照片尺寸为{facts.width}×{facts.height}像素，须为一寸（295×413）或二寸（413×579）证件照"
            f"（各边允许相差{tolerance_percent:g}%）", field)
    _decode_fully(data, facts.content_type, field, "照片")
    return PhotoFacts(facts.content_type, facts.width, facts.height, label)


def inspect_proof(data: bytes, field: str = "proof") -> str:
    """The content type of a valid proof file; raises a SwmsError naming ``field`` otherwise."""
    content_type = sniff(data)
    if content_type == PDF:
        _check_pdf(data, field)
        return PDF
    if content_type in (JPEG, PNG):
        facts = image_facts(data, field, "证明材料")
        if facts.width * facts.height > 60_000_000:   # a scan at 600 dpi of A3 is ~35 Mpx
            raise errors.SwmsError(errors.FILE_DAMAGED, "证明材料图片像素过大，请压缩后重新上传", field)
        _decode_fully(data, content_type, field, "证明材料")
        return content_type
    raise errors.SwmsError(errors.FILE_TYPE_NOT_ALLOWED,
                           "证明材料须为PDF、JPEG或PNG文件（按文件内容判断，不看文件名）", field)


def _check_pdf(data: bytes, field: str) -> None:
    from pypdf import PdfReader

    if b"%%EOF" not in data[-1024:]:
        raise _damaged(field, "证明材料")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise errors.SwmsError(errors.FILE_TYPE_NOT_ALLOWED, "证明材料PDF不能加密或设置打开密码", field)
        pages = len(reader.pages)
    except errors.SwmsError:
        raise
    except Exception:
        raise _damaged(field, "证明材料") from None
    if pages < 1:
        raise _damaged(field, "证明材料")
