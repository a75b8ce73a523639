"""Message templates: per message kind and language, a plain-text and an HTML part.

Layout on disk (``services/notification/templates/`` ships them; ``NOTIFICATION_TEMPLATES_DIR``
may point at a folder of the same shape whose files take precedence, so operators change wording
without a code change)::

    <language>/<kind>.txt     first line "Subject: …", a blank line, then the plain-text body
    <language>/<kind>.html    the HTML fragment of the body
    <language>/_layout.html   the HTML page the fragment goes into (${content}, ${subject})

Placeholders are ``${name}`` (``string.Template``); ``$$`` is a literal dollar sign. Values are
HTML-escaped in the HTML part. A placeholder without a value, a kind without a template or a
subject that is too long or spans lines is a :class:`RenderError` naming the culprit: the caller
records it against that one message, and other messages are unaffected.

Some values are localised here, so that templates stay simple: ``application_kind`` gives
``kind_label``, ``stage`` gives ``stage_label``, ``previous_stage`` gives ``previous_stage_label``, ``level`` gives ``level_label``, an empty
``reason`` (or ``valid_until_date``, from an event that did not carry it) reads "not given", a key ending in
``_date`` (ISO date) or ``_time`` (ISO date-time, UTC) is formatted for the language (times in
Beijing time).
"""
from __future__ import annotations

import datetime as dt
import html
import string
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).parent / "templates"
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGES = ("zh-CN",)
MAX_SUBJECT = 200
BEIJING = dt.timezone(dt.timedelta(hours=8), "CST")

TEMPLATE_MISSING = "TEMPLATE_MISSING"
TEMPLATE_INVALID = "TEMPLATE_INVALID"
TEMPLATE_VARIABLE_MISSING = "TEMPLATE_VARIABLE_MISSING"
SUBJECT_TOO_LONG = "SUBJECT_TOO_LONG"
SUBJECT_INVALID = "SUBJECT_INVALID"

LABELS = {
    "zh-CN": {
        "application_kind": {"first_registration": "首次登记", "re_registration": "再登记",
                             "replacement": "更换电子证", "upgrade": "升级换证"},
        "stage": {"initial": "初审", "intermediate": "复审", "final": "终审"},
        "level": {"助理社会工作师": "助理社会工作师", "社会工作师": "社会工作师",
                  "高级社会工作师": "高级社会工作师"},
        "empty": {"reason": "（未注明）", "applicant_name_masked": "（请在审核队列中查看）", "valid_until_date": "（未注明）"},
    },
    "en": {
        "application_kind": {"first_registration": "first registration", "re_registration": "re-registration",
                             "replacement": "replacement e-certificate", "upgrade": "upgrade"},
        "stage": {"initial": "initial review", "intermediate": "intermediate review", "final": "final review"},
        "level": {"助理社会工作师": "Assistant Social Worker", "社会工作师": "Social Worker",
                  "高级社会工作师": "Senior Social Worker"},
        "empty": {"reason": "(not given)", "applicant_name_masked": "(see your queue)",
                  "valid_until_date": "(not given)"},
    },
}
# value key -> (label table, key of the localised label)
LABEL_KEYS = {"application_kind": ("application_kind", "kind_label"), "stage": ("stage", "stage_label"),
              "previous_stage": ("stage", "previous_stage_label"), "level": ("level", "level_label")}
SEPARATOR_TEXT = "\n\n" + "—" * 24 + "\n\n"


class RenderError(Exception):
    def __init__(self, code: str, field: str, detail: str):
        super().__init__(code, field, detail)
        self.code, self.field, self.detail = code, field, detail

    def __str__(self) -> str:
        return f"{self.code} [{self.field}]: {self.detail}"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    language: str          # the first (main) language


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")   # not strftime("%B"): that follows the process locale


def format_date(value: str, language: str) -> str:
    day = dt.date.fromisoformat(str(value)[:10])
    if language == "zh-CN":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def format_time(value: str, language: str) -> str:
    moment = dt.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    local = moment.astimezone(BEIJING)
    if language == "zh-CN":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}（北京时间）"
    return f"{local.day} {MONTHS[local.month - 1]} {local.year}, {local:%H:%M} (Beijing time)"


def localise(values: dict[str, object], language: str) -> dict[str, str]:
    out = {key: "" if value is None else str(value) for key, value in values.items()}
    labels = LABELS.get(language, LABELS["zh-CN"])
    for key, (table, label_key) in LABEL_KEYS.items():
        if key in out and label_key not in out:
            out[label_key] = labels[table].get(out[key], out[key])
    for key, placeholder in labels["empty"].items():
        if key in out and not out[key].strip():
            out[key] = placeholder
    for key, value in list(out.items()):
        try:
            if key.endswith("_date") and value:
                out[key] = format_date(value, language)
            elif key.endswith("_time") and value:
                out[key] = format_time(value, language)
        except ValueError:
            pass  # not a date after all: shown as given
    return out


def _substitute(source: str, values: dict[str, str], where: str) -> str:
    try:
        return string.Template(source).substitute(values)
    except KeyError as exc:
        name = exc.args[0]
        raise RenderError(TEMPLATE_VARIABLE_MISSING, str(name),
                          f"template {where} uses ${{{name}}}, which this message does not supply") from None
    except ValueError as exc:
        raise RenderError(TEMPLATE_INVALID, where, f"template {where}: {exc}") from None


def check_subject(subject: str) -> str:
    subject = subject.strip()
    if not subject:
        raise RenderError(SUBJECT_INVALID, "subject", "the subject is empty")
    if any(ch in subject for ch in "\r\n\x00") or any(ord(ch) < 32 or ord(ch) == 127 for ch in subject):
        raise RenderError(SUBJECT_INVALID, "subject", "the subject contains a line break or control character")
    if len(subject) > MAX_SUBJECT:
        raise RenderError(SUBJECT_TOO_LONG, "subject",
                          f"the subject has {len(subject)} characters; at most {MAX_SUBJECT} are allowed")
    return subject


class Templates:
    """Loads (once per file) and renders templates; ``override_dir`` files win over shipped ones."""

    def __init__(self, override_dir: str | Path | None = None):
        self.folders = [Path(override_dir)] if override_dir else []
        self.folders.append(SHIPPED)
        self._cache: dict[tuple[str, str], str | None] = {}

    def source(self, language: str, name: str) -> str | None:
        key = (language, name)
        if key not in self._cache:
            text = None
            for folder in self.folders:
                path = folder / language / name
                if path.is_file():
                    text = path.read_text(encoding="utf-8")
                    break
            self._cache[key] = text
        return self._cache[key]

    def kinds(self, language: str = "zh-CN") -> list[str]:
        found = set()
        for folder in self.folders:
            found |= {p.stem for p in (folder / language).glob("*.txt")}
        return sorted(found)

    def render_one(self, kind: str, values: dict[str, object], language: str) -> tuple[str, str, str, dict]:
        text_source = self.source(language, f"{kind}.txt")
        html_source = self.source(language, f"{kind}.html")
        if text_source is None or html_source is None:
            raise RenderError(TEMPLATE_MISSING, "kind", f"no template for message kind {kind!r} in {language}")
        first, _, body = text_source.partition("\n")
        if not first.startswith("Subject:"):
            raise RenderError(TEMPLATE_INVALID, f"{language}/{kind}.txt",
                              "the first line of a text template must be 'Subject: …'")
        local = localise(values, language)
        subject = check_subject(_substitute(first[len("Subject:"):], local, f"{language}/{kind}.txt"))
        text = _substitute(body.lstrip("\n"), local, f"{language}/{kind}.txt")
        escaped = {key: html.escape(value) for key, value in local.items()}
        fragment = _substitute(html_source, escaped, f"{language}/{kind}.html")
        return subject, text, fragment, escaped

    def render(self, kind: str, values: dict[str, object],
               languages: tuple[str, ...] | list[str] = DEFAULT_LANGUAGES) -> Rendered:
        """The first language gives the subject and layout; further languages follow in the body."""
        parts = [(language, *self.render_one(kind, values, language)) for language in languages]
        main, subject = parts[0][0], parts[0][1]
        text = SEPARATOR_TEXT.join(part[2] for part in parts)
        fragments = [parts[0][3]] + [f'<hr>\n<div lang="{lang}">\n{fragment}</div>\n'
                                     for lang, _, _, fragment, _ in parts[1:]]
        layout = self.source(main, "_layout.html") or "${content}"
        page = _substitute(layout, {**parts[0][4], "content": "".join(fragments),
                                    "subject": html.escape(subject), "lang": main}, f"{main}/_layout.html")
        return Rendered(subject=subject, text=text, html=page, language=main)
