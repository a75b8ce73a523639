"""The e-certificate (电子登记证书) as PDF, through WeasyPrint.

Pure function of its inputs, run in a native thread (eventlet.tpool) by the service so the Nameko
hub keeps answering while a PDF renders. Fonts: Noto Serif/Sans CJK SC (Debian fonts-noto-cjk);
``libharfbuzz-subset0`` makes embedding them fast (see stack-notes).
"""
from __future__ import annotations

import datetime as dt
import html
import io
from dataclasses import dataclass

import qrcode
import qrcode.image.svg


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


def _qr_svg(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=1)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode("utf-8")
    return svg[svg.index("<svg"):]


def _date(value: dt.date) -> str:
    return f"{value.year}年{value.month}月{value.day}日"


TEMPLATE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><style>
@page {{ size: A4; margin: 14mm; }}
body {{ font-family: "Noto Serif CJK SC", "Noto Sans CJK SC", serif; color: #222; }}
.frame {{ border: 3mm double #9b1c1c; padding: 12mm 14mm; height: 245mm; position: relative; }}
h1 {{ text-align: center; font-size: 26pt; letter-spacing: 6pt; margin: 4mm 0 2mm; color: #9b1c1c; }}
h2 {{ text-align: center; font-size: 13pt; font-weight: normal; margin: 0 0 12mm; }}
table {{ width: 100%; border-collapse: collapse; font-size: 13pt; }}
td {{ padding: 3.2mm 2mm; vertical-align: top; }}
td.k {{ width: 34mm; color: #555; }}
.photo {{ position: absolute; right: 16mm; top: 52mm; width: 25mm; height: 35mm;
          border: 0.3mm solid #999; font-size: 9pt; color: #999; text-align: center; line-height: 35mm; }}
.qr {{ position: absolute; left: 16mm; bottom: 16mm; width: 30mm; }}
.qr svg {{ width: 30mm; height: 30mm; }}
.qr p {{ font-size: 8pt; margin: 1mm 0 0; }}
.seal {{ position: absolute; right: 16mm; bottom: 18mm; text-align: right; font-size: 12pt; }}
.no {{ position: absolute; left: 0; right: 0; bottom: 4mm; text-align: center; font-size: 10pt; color: #555; }}
</style></head><body><div class="frame">
<h1>社会工作者登记证书</h1>
<h2>（电子证书）</h2>
<div class="photo">照片</div>
<table>
<tr><td class="k">姓　　名</td><td>{holder_name}</td></tr>
<tr><td class="k">性　　别</td><td>{gender}</td></tr>
<tr><td class="k">身份证号</td><td>{id_number_shown}</td></tr>
<tr><td class="k">职业水平</td><td>{level}</td></tr>
<tr><td class="k">工作单位</td><td>{unit_name}</td></tr>
<tr><td class="k">证书编号</td><td>{certificate_number}</td></tr>
<tr><td class="k">有 效 期</td><td>{valid_from} 至 {valid_until}</td></tr>
</table>
<div class="qr">{qr}<p>扫码核验证书真伪</p></div>
<div class="seal">登记机关：{authority}<br>发证日期：{issued_on}</div>
<div class="no">NO. {certificate_number}</div>
</div></body></html>"""


def certificate_html(face: CertificateFace) -> str:
    esc = html.escape
    return TEMPLATE.format(
        holder_name=esc(face.holder_name), gender=esc(face.gender), id_number_shown=esc(face.id_number_shown),
        level=esc(face.level), unit_name=esc(face.unit_name), certificate_number=esc(face.certificate_number),
        valid_from=_date(face.valid_from), valid_until=_date(face.valid_until), authority=esc(face.authority),
        issued_on=_date(face.issued_on), qr=_qr_svg(face.verify_url))


def render_pdf(face: CertificateFace) -> bytes:
    from weasyprint import (
        HTML,  # imported late: heavy, and only the certificate service needs it
    )

    return HTML(string=certificate_html(face)).write_pdf()
