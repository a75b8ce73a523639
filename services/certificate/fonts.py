"""A compact copy of Noto Serif CJK SC for the common characters, made once per machine.

Why: WeasyPrint subsets every embedded font per PDF, keeping every glyph id up to the highest one
used. Noto Serif CJK holds 65,535 glyphs with the ideographs far up, so each certificate paid
~0.09 s for that alone. A copy holding only GB 2312 (6,763 hanzi, punctuation, Latin) has
~7,500 glyphs; certificates whose text fits in it render about twice as fast and the PDF is a
third of the size. Characters outside it (䶮, 𠮷, …) fall back, in the same CSS font stack, to the
full Noto Serif CJK SC, so they still render, in the same design.

The copy is made with HarfBuzz's subsetter (the same C library WeasyPrint uses, ~1 s) and kept
in the temporary directory under a name derived from the source font, so a font update makes a
new one. If anything fails, rendering simply uses the full font.
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

FAMILY = "SWMS Certificate Serif"
FALLBACK_FAMILY = "Noto Serif CJK SC"
CHARSET_VERSION = "gb2312-ascii-v1"

_CDEF = """
typedef struct hb_blob_t hb_blob_t;
typedef struct hb_face_t hb_face_t;
typedef struct hb_set_t hb_set_t;
typedef struct hb_subset_input_t hb_subset_input_t;
typedef uint32_t hb_codepoint_t;
hb_blob_t *hb_blob_create_from_file_or_fail (const char *file_name);
hb_face_t *hb_face_create (hb_blob_t *blob, unsigned int index);
hb_blob_t *hb_face_reference_blob (hb_face_t *face);
const char *hb_blob_get_data (hb_blob_t *blob, unsigned int *length);
void hb_blob_destroy (hb_blob_t *blob);
void hb_face_destroy (hb_face_t *face);
hb_subset_input_t *hb_subset_input_create_or_fail (void);
void hb_subset_input_destroy (hb_subset_input_t *input);
hb_set_t *hb_subset_input_set (hb_subset_input_t *input, int set_type);
void hb_set_add (hb_set_t *set, hb_codepoint_t codepoint);
void hb_subset_input_set_flags (hb_subset_input_t *input, unsigned value);
hb_face_t *hb_subset_or_fail (hb_face_t *source, const hb_subset_input_t *input);
"""
HB_SUBSET_SETS_UNICODE = 1
HB_SUBSET_FLAGS_NO_HINTING = 0x00000001


def common_characters() -> str:
    chars = {chr(c) for c in range(0x20, 0x7F)}
    for high in range(0xA1, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                chars.add(bytes((high, low)).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    chars.update("　·•—…‘’“”《》〈〉「」『』【】〔〕（）：；，。、？！")
    return "".join(sorted(chars))


def _source_font() -> tuple[str, int] | None:
    """(file, face index) of Noto Serif CJK SC regular, as fontconfig knows it."""
    try:
        out = subprocess.run(["fc-match", "-f", "%{file}\n%{index}", f"{FALLBACK_FAMILY}:style=Regular"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) < 2 or "NotoSerifCJK" not in out[0]:
        return None
    return out[0], int(out[1] or 0)


def _subset(source: str, index: int, text: str, target: Path) -> None:
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    harfbuzz = ffi.dlopen("libharfbuzz.so.0")
    subset = ffi.dlopen("libharfbuzz-subset.so.0")
    blob = harfbuzz.hb_blob_create_from_file_or_fail(source.encode())
    if blob == ffi.NULL:
        raise OSError(f"HarfBuzz cannot read {source}")
    face = harfbuzz.hb_face_create(blob, index)
    request = subset.hb_subset_input_create_or_fail()
    try:
        unicodes = subset.hb_subset_input_set(request, HB_SUBSET_SETS_UNICODE)
        for char in text:
            harfbuzz.hb_set_add(unicodes, ord(char))
        subset.hb_subset_input_set_flags(request, HB_SUBSET_FLAGS_NO_HINTING)
        result = subset.hb_subset_or_fail(face, request)
        if result == ffi.NULL:
            raise OSError("HarfBuzz could not subset the font")
        out_blob = harfbuzz.hb_face_reference_blob(result)
        length = ffi.new("unsigned int *")
        data = harfbuzz.hb_blob_get_data(out_blob, length)
        payload = bytes(ffi.buffer(data, length[0]))
        harfbuzz.hb_blob_destroy(out_blob)
        harfbuzz.hb_face_destroy(result)
    finally:
        subset.hb_subset_input_destroy(request)
        harfbuzz.hb_face_destroy(face)
        harfbuzz.hb_blob_destroy(blob)
    if len(payload) < 100_000:
        raise OSError(f"the subset font is implausibly small ({len(payload)} bytes)")
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(payload)
    os.replace(partial, target)  # atomic: a concurrent worker sees the whole file or none


def common_font_file() -> Path | None:
    """Path of the compact font (made if missing), or None to render with the full font only."""
    source = _source_font()
    if source is None:
        return None
    path, index = source
    stat = os.stat(path)
    key = hashlib.sha256(f"{path}|{index}|{stat.st_size}|{stat.st_mtime_ns}|{CHARSET_VERSION}".encode()).hexdigest()
    directory = Path(tempfile.gettempdir()) / "swms-certificate-fonts"
    target = directory / f"noto-serif-sc-common-{key[:16]}.otf"
    if target.is_file():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _subset(path, index, common_characters(), target)
    except Exception:
        log.exception("could not make the compact certificate font; using the full font")
        return None
    return target
