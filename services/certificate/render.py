"""The e-certificate (电子登记证书) as PDF, through WeasyPrint.

A pure function of its inputs. The service never runs it in its own process: worker processes
(services/certificate/renderer.py) render and sign, so the Nameko hub keeps answering while PDFs
render. Fonts: Noto Serif CJK SC (Debian fonts-noto-cjk), which covers CJK Extension A (䶮) and
the Extension B characters used in names (𠮷); ``libharfbuzz-subset0`` makes embedding it fast.
One font face and one weight on purpose: each extra face costs a HarfBuzz subset per PDF.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass

from services.certificate import fonts
from swms import text

PHOTO_MAX_BYTES = 500 * 1024          # 个人信息表: a 1-inch or 2-inch photo of at most 500 KB
PHOTO_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


class PhotoInvalid(ValueError):
    """The stored photo cannot go on a certificate (not an image, wrong type, too big or too small)."""


class TextRefused(ValueError):
    """A printed value holds a character the text policy refuses (swms/text.py): a bidi override
    would make the PDF read otherwise than what was approved, a control character or an emoji
    would print as nothing or as a box. The certificate is not made."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class CertificateFace:
    certificate_number: str
    holder_name: str
    gender: str
    id_number_shown: str
    level: str
    unit_name: str
    authority: str
    valid_from: dt.date
    valid_until: dt.date
    issued_on: dt.date
    verify_url: str
    original_certificate_no: str | None = None     # replacement of a paper certificate: its NO
    supersedes: str | None = None                   # re-issue: the certificate this one replaces
    photo: bytes | None = None                      # JPEG or PNG, checked by check_photo
    photo_type: str | None = None


def check_photo(data: bytes) -> str:
    """The photo's MIME type, after decoding it fully; PhotoInvalid otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise PhotoInvalid("照片文件为空")
    if len(data) > PHOTO_MAX_BYTES:
        raise PhotoInvalid(f"照片大于 500 KB（{len(data) // 1024} KB）")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
            width, height = image.size
            image.load()  # decodes every pixel: a truncated file fails here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise PhotoInvalid("照片文件无法识别或已损坏") from None
    if kind not in PHOTO_TYPES:
        raise PhotoInvalid(f"照片格式须为 JPEG 或 PNG（收到 {kind}）")
    if width < 100 or height < 140 or width > 2400 or height > 3200:
        raise PhotoInvalid(f"照片尺寸不符合证件照要求（{width}×{height} 像素）")
    return PHOTO_TYPES[kind]


def _qr_png(text: str) -> bytes:
    """The QR code as a small PNG. A fixed mask pattern (any of the eight is valid, ISO/IEC 18004)
    skips the library's scoring of all eight, and the bitmap is built from the module matrix in C:
    ~1 ms instead of ~30 ms per certificate."""
    import qrcode
    from PIL import Image
    from qrcode.constants import ERROR_CORRECT_M

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=2, mask_pattern=2)
    code.add_data(text)
    code.make(fit=True)
    matrix = code.get_matrix()
    size = len(matrix)
    pixels = bytes(0 if dark else 255 for row in matrix for dark in row)
    image = Image.frombytes("L", (size, size), pixels).resize((size * 4, size * 4), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _date(value: dt.date) -> str:
    return f"{value.year}年{value.month}月{value.day}日"


def _name_size(name: str) -> str:
    """Long names (ethnic-minority names run to 30 characters and more) shrink, then wrap."""
    length = len(name)
    if length <= 10:
        return "17pt"
    if length <= 16:
        return "13pt"
    if length <= 22:
        return "11pt"
    return "10pt"


STYLE = """
@page { size: A4; margin: 14mm; }
body { font-family: FONT_FAMILY; font-weight: normal; color: #222; margin: 0; }
.frame { border: 3mm double #9b1c1c; padding: 10mm 12mm; height: 247mm; position: relative; overflow: hidden; }
h1 { text-align: center; font-size: 26pt; font-weight: normal; letter-spacing: 6pt; margin: 6mm 0 1mm;
     color: #9b1c1c; }
h2 { text-align: center; font-size: 13pt; font-weight: normal; margin: 0 0 10mm; }
table { width: 100%; border-collapse: collapse; font-size: 12.5pt; table-layout: fixed; }
td { padding: 2.6mm 2mm; vertical-align: top; overflow-wrap: anywhere; }
td.k { width: 26mm; color: #555; }
td.photo { width: 29mm; padding: 2mm 0 0 3mm; }
.photo img, .photo div { width: 25mm; height: 35mm; border: 0.3mm solid #999; }
.photo img { object-fit: cover; }
.photo div { font-size: 9pt; color: #999; text-align: center; line-height: 35mm; }
.note { font-size: 10pt; color: #555; }
.qr { position: absolute; left: 12mm; bottom: 14mm; width: 34mm; text-align: center; }
.qr svg { width: 32mm; height: 32mm; }
.qr p { font-size: 8pt; margin: 1mm 0 0; }
.seal { position: absolute; right: 14mm; bottom: 18mm; text-align: right; font-size: 12pt; line-height: 1.8; }
.no { position: absolute; left: 0; right: 0; bottom: 4mm; text-align: center; font-size: 10pt; color: #555; }
"""

TEMPLATE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>社会工作者登记证书 {certificate_number}</title>{style}</head>
<body><div class="frame">
<h1>社会工作者登记证书</h1>
<h2>（电子证书）</h2>
<table>
<tr><td class="k">姓　　名</td><td class="name" style="font-size: {name_size}">{holder_name}</td>
    <td class="photo" rowspan="4">{photo}</td></tr>
<tr><td class="k">性　　别</td><td>{gender}</td></tr>
<tr><td class="k">身份证号</td><td>{id_number_shown}</td></tr>
<tr><td class="k">职业水平</td><td>{level}</td></tr>
<tr><td class="k">工作单位</td><td colspan="2">{unit_name}</td></tr>
<tr><td class="k">证书编号</td><td colspan="2">{certificate_number}</td></tr>
<tr><td class="k">登记机关</td><td colspan="2">{authority}</td></tr>
<tr><td class="k">有 效 期</td><td colspan="2">{valid_from} 至 {valid_until}</td></tr>
<tr><td class="k">发证日期</td><td colspan="2">{issued_on}</td></tr>
{notes}
</table>
<div class="qr"><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1" role="img" aria-label="核验二维码">
<image width="1" height="1" image-rendering="pixelated" href="{qr}"/></svg><p>扫码核验证书真伪</p></div>
<div class="seal">登记机关：{authority}<br>发证日期：{issued_on}</div>
<div class="no">NO. {certificate_number}</div>
</div></body></html>"""

PHOTO_URL, QR_URL = "swms-image:photo", "swms-image:qr"


# Every value printed as text, with the label the certificate shows for it.
PRINTED = {"holder_name": "姓名", "gender": "性别", "id_number_shown": "身份证号", "level": "职业水平",
           "unit_name": "工作单位", "certificate_number": "证书编号", "authority": "登记机关",
           "original_certificate_no": "原证书编号", "supersedes": "换发的证书编号"}


def check_text(face: CertificateFace) -> None:
    """TextRefused for the first printed value the text policy refuses, whatever path it came by
    (the issue checks refuse such data before a number is reserved; this is the last gate)."""
    for field, label in PRINTED.items():
        found = text.problem(getattr(face, field) or "")
        if found is not None:
            raise TextRefused(field, found.message(label))


def certificate_html(face: CertificateFace, font_family: str = f'"{fonts.FALLBACK_FAMILY}"',
                     images_inline: bool = True) -> str:
    """The certificate page. ``images_inline``: photo and QR code as data URIs and the style inline
    (a self-contained page); otherwise they are fetched by name through Renderer's url_fetcher.
    TextRefused if a printed value breaks the text policy."""
    check_text(face)
    esc = html.escape
    if face.photo:
        src = _data_uri(face.photo, face.photo_type or "image/jpeg") if images_inline else PHOTO_URL
        photo = f'<img src="{src}" alt="照片">'
    else:
        photo = "<div>照片未提供</div>"
    notes = []
    if face.original_certificate_no:
        notes.append(f'<tr><td class="k note">原 证 书</td><td class="note" colspan="2">'
                     f'由纸质登记证书 NO. {esc(face.original_certificate_no)} 更换为电子证书</td></tr>')
    if face.supersedes:
        notes.append(f'<tr><td class="k note">换发说明</td><td class="note" colspan="2">'
                     f'本证书换发并取代证书 {esc(face.supersedes)}</td></tr>')
    return TEMPLATE.format(
        holder_name=esc(face.holder_name), name_size=_name_size(face.holder_name), gender=esc(face.gender),
        id_number_shown=esc(face.id_number_shown), level=esc(face.level), unit_name=esc(face.unit_name),
        certificate_number=esc(face.certificate_number), valid_from=_date(face.valid_from),
        valid_until=_date(face.valid_until), authority=esc(face.authority), issued_on=_date(face.issued_on),
        qr=_data_uri(_qr_png(face.verify_url), "image/png") if images_inline else QR_URL, photo=photo, notes="\n".join(notes),
        style=f"<style>{STYLE.replace('FONT_FAMILY', font_family)}</style>" if images_inline else "")


class Renderer:
    """One per process: keeps WeasyPrint's font configuration, the compact font and the compiled
    stylesheet between PDFs. Images come through a url_fetcher that knows the two images of the
    certificate being rendered and refuses every other URL (nothing typed into a form can make the
    renderer read a file or the network)."""

    def __init__(self, compact_font: bool = True):
        from weasyprint import CSS  # imported late: heavy, and only the render workers need it
        from weasyprint.text.fonts import FontConfiguration

        self.font_config = FontConfiguration()
        font = fonts.common_font_file() if compact_font else None
        self.font_file = font
        if font is not None:
            self.font_family = f'"{fonts.FAMILY}", "{fonts.FALLBACK_FAMILY}"'
            font_face = f'@font-face {{ font-family: "{fonts.FAMILY}"; src: url("{font.as_uri()}"); }}\n'
        else:
            self.font_family = f'"{fonts.FALLBACK_FAMILY}"'
            font_face = ""
        self.stylesheets = [CSS(string=font_face + STYLE.replace("FONT_FAMILY", self.font_family),
                                font_config=self.font_config)]
        self._images: dict[str, tuple[bytes, str]] = {}

    def _fetch(self, url: str, *args, **kwargs) -> dict:
        if url not in self._images:
            raise ValueError(f"the certificate template may not load {url[:60]!r}")
        data, mime = self._images[url]
        return {"string": data, "mime_type": mime, "redirected_url": url}

    def pdf(self, face: CertificateFace) -> bytes:
        from weasyprint import HTML

        self._images = {QR_URL: (_qr_png(face.verify_url), "image/png")}
        if face.photo:
            self._images[PHOTO_URL] = (face.photo, face.photo_type or "image/jpeg")
        try:
            return HTML(string=certificate_html(face, self.font_family, images_inline=False),
                        url_fetcher=self._fetch).write_pdf(stylesheets=self.stylesheets, font_config=self.font_config)
        finally:
            self._images = {}


_renderer: Renderer | None = None


def render_pdf(face: CertificateFace) -> bytes:
    """Render with this process's Renderer (made on first use)."""
    global _renderer
    if _renderer is None:
        _renderer = Renderer()
    return _renderer.pdf(face)
