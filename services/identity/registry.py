"""The exam-passer registry (社工库): reading the exam authority's file and merging it in.

The file: CSV in UTF-8 (with or without BOM) or GB18030, one header line, columns name, ID number,
level, certificate management number, exam year, province (English or Chinese headers).

Merging follows one rule per row, as if the rows were applied one after another in file order:

* ID number not in the registry: **added**.
* Same person (name matches), same level, same data: **unchanged** (so a re-import changes nothing).
* Same person, **higher** level: **level raised** (level, 管理号, exam year, province move up);
  ``identity.passer_level_raised`` is published when the person has an account.
* Same person, lower level than the registry holds: **superseded** (an older list; nothing changes).
* Otherwise (another name, or the same level with another 管理号/year/province): **rejected** as a
  duplicate with conflicting data. Bad rows (ID number, level, missing field, ...) are rejected too.
* A line identical to an earlier line of the same file: **repeated** (counted once, applied once).

Each rejected row is reported with its line (the header is line 1; a record whose quoted field
spans lines is reported at the line it starts on) and reason.

Nothing is fixed up quietly: what is stored is what the file says, less the spaces around a value.
A value with a character the text policy refuses (swms/text.py: a line break, tab, NUL, bidi
control, emoji, ...), a row with more values than the header has columns, and an ID number written
with anything but ASCII or full-width digits and X are rejected, never cleaned. Full-width digits
become ASCII and a lower-case x upper-case (the same number); a province name or a six-digit code
becomes its two-digit code.

Scale: rows are checked in Python, then loaded into a temporary table (PostgreSQL: ``COPY``) and
merged with a few set-based statements; only rows that differ from the registry go through the
row-by-row rule above. Two million rows take well under a minute on PostgreSQL (bench/).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import operator
import re
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    delete,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.orm import Session

from services.identity.models import Account, Passer, audit, outbox
from swms import errors, idcard
from swms.contracts.common import Level
from swms.contracts.events import PasserLevelRaised
from swms.contracts.identity import key_problem, name_key
from swms.outbox import utcnow
from swms.text import SPACES
from swms.text import problem as text_problem

log = logging.getLogger(__name__)

LEVEL_RANK = {Level.ASSISTANT.value: 1, Level.SOCIAL_WORKER.value: 2, Level.SENIOR.value: 3}
COLUMNS = ("name", "id_number", "level", "management_number", "exam_year", "province")
HEADER_ALIASES = {
    "name": ("name", "姓名"),
    "id_number": ("id_number", "身份证号", "身份证号码", "公民身份号码"),
    "level": ("level", "级别", "等级", "职业水平", "职业水平等级"),
    "management_number": ("management_number", "管理号", "证书管理号", "职业水平证书管理号"),
    "exam_year": ("exam_year", "考试年度", "考试年份", "年度"),
    "province": ("province", "省份", "省", "省份代码"),
}
PROVINCES = {
    "北京": "11", "天津": "12", "河北": "13", "山西": "14", "内蒙古": "15", "辽宁": "21", "吉林": "22",
    "黑龙江": "23", "上海": "31", "江苏": "32", "浙江": "33", "安徽": "34", "福建": "35", "江西": "36",
    "山东": "37", "河南": "41", "湖北": "42", "湖南": "43", "广东": "44", "广西": "45", "海南": "46",
    "重庆": "50", "四川": "51", "贵州": "52", "云南": "53", "西藏": "54", "陕西": "61", "甘肃": "62",
    "青海": "63", "宁夏": "64", "新疆": "65", "台湾": "71", "香港": "81", "澳门": "82",
}
PROVINCE_CODES = frozenset(PROVINCES.values())
_PROVINCE_SUFFIXES = ("维吾尔自治区", "壮族自治区", "回族自治区", "自治区", "特别行政区", "省", "市")
FIRST_EXAM_YEAR = 2008


@dataclass(slots=True)
class PasserRecord:
    line: int
    id_number: str
    name: str
    name_normalised: str
    level: str
    management_number: str
    exam_year: int
    province_code: str


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    raised: int = 0
    superseded: int = 0
    repeated: int = 0      # lines identical to an earlier line of the same file
    events: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)   # per phase

    def summary(self) -> str:
        return (f"added {self.added}, unchanged {self.unchanged}, level raised {self.raised}, "
                f"superseded {self.superseded}, repeated {self.repeated}, rejected {len(self.rejected)}")

    def timing(self) -> str:
        return ", ".join(f"{phase.replace('_', ' ')} {seconds:.1f} s" for phase, seconds in self.seconds.items())


# ---- reading and checking -----------------------------------------------------------------------

def decode(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise errors.validation_error("file", "文件编码应为 UTF-8 或 GB18030")


def _header_map(header: list[str]) -> dict[str, int]:
    positions: dict[str, int] = {}
    cleaned = [h.strip().lstrip("\ufeff").lower() for h in header]
    for column, aliases in HEADER_ALIASES.items():
        for index, name in enumerate(cleaned):
            if name in aliases:
                positions[column] = index
                break
    missing = [c for c in COLUMNS if c not in positions]
    if missing:
        raise errors.validation_error("file", f"文件缺少列：{', '.join(missing)}")
    return positions


def _too_many_values(values: list[str], width: int) -> str | None:
    """A row with values beyond the header's columns (an unquoted comma, a stray column): those
    values would be dropped unseen, so the row is rejected."""
    if len(values) > width and any(value.strip() for value in values[width:]):
        return f"{len(values)} values, but the header has {width} columns"
    return None


def iter_file_rows(text_: str) -> Iterator[tuple[int, dict[str, str] | str | None]]:
    """(line, row) for each record of the file: ``row`` a dict keyed by the English column names,
    None for a blank line, or the reason it cannot be read as a row. ``line`` is the line the record
    starts on (header = line 1), also after a quoted value that spans lines."""
    reader = csv.reader(io.StringIO(text_))
    header = next(reader, None)
    if header is None:
        raise errors.validation_error("file", "文件为空")
    positions = _header_map(header)
    line = reader.line_num + 1
    for values in reader:
        start, line = line, reader.line_num + 1
        if not values or all(not v.strip() for v in values):
            yield start, None        # a blank line: skipped, but it still counts as a line
            continue
        yield start, _too_many_values(values, len(header)) or {
            column: values[index] if index < len(values) else "" for column, index in positions.items()}


def read_registry_file(raw: bytes) -> list[dict[str, str] | str | None]:
    """The whole file as a list of rows (see iter_file_rows), for small files; large ones stream
    through iter_file_rows."""
    return [row for _, row in iter_file_rows(decode(raw))]


def province_code(value: str) -> str | None:
    value = value.strip()
    if value.isdigit() and len(value) in (2, 6):
        return value[:2] if value[:2] in PROVINCE_CODES else None
    for suffix in _PROVINCE_SUFFIXES:
        if value.endswith(suffix) and value[: -len(suffix)] in PROVINCES:
            return PROVINCES[value[: -len(suffix)]]
    return PROVINCES.get(value)


_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_ID_SHAPE = re.compile(r"[1-9][0-9]{16}[0-9X]\Z")


_WEIGHTED_ZEROS = 48 * sum(_WEIGHTS)   # the weighted sum contributed by the ASCII code of "0"
_birth_dates: dict[tuple[str, dt.date], bool] = {}


def _birth_date_ok(yyyymmdd: str, today: dt.date) -> bool:
    key = (yyyymmdd, today)
    ok = _birth_dates.get(key)
    if ok is None:
        try:
            ok = dt.date(1880, 1, 1) <= dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])) <= today
        except ValueError:
            ok = False
        if len(_birth_dates) > 200_000:
            _birth_dates.clear()
        _birth_dates[key] = ok
    return ok


def id_number(raw: str, today: dt.date) -> str:
    """The normalised ID number, or InvalidIdNumber with the reason. The same rules as
    swms.idcard.parse (a test compares them), quicker for the millions of rows of an import:
    the check character summed over the ASCII bytes in C, each birth date checked once."""
    if not raw.isascii():
        raw = idcard.from_full_width(raw)   # full-width digits and Ｘ → ASCII; other look-alikes stay and fail
        if not raw.isascii():
            raise idcard.InvalidIdNumber("only digits, with X allowed as the last character")
    number = raw.upper()
    if (len(number) == 18 and _ID_SHAPE.match(number)
            and _CHECK_CHARS[(sum(map(operator.mul, _WEIGHTS, number.encode()[:17])) - _WEIGHTED_ZEROS) % 11]
            == number[17]
            and _birth_date_ok(number[6:14], today)):
        return number
    return idcard.parse(number, today).number   # raises with the reason (or accepts: same rules)


def check_row(line: int, row: dict[str, str], this_year: int, today: dt.date) -> PasserRecord | str:
    """A clean record, or the reason the row is rejected (English, for the operator's report)."""
    get = row.get
    return check_fields(line, get("name") or "", get("id_number") or "", get("level") or "",
                        get("management_number") or "", get("exam_year") or "", get("province") or "",
                        this_year, today)


def check_fields(line: int, raw_name: str, raw_number: str, level: str, management_number: str, year: str,
                 raw_province: str, this_year: int, today: dt.date) -> PasserRecord | str:
    """check_row for the six values in COLUMNS order."""
    values = (raw_name, raw_number, level, management_number, year, raw_province)
    if text_problem("".join(values)) is not None:    # one search for the whole row: millions of rows
        column, found = next((c, f) for c, f in zip(COLUMNS, map(text_problem, values)) if f is not None)
        return f"bad {column.replace('_', ' ')}: {found.english()} (line breaks, tabs, control, bidi, " \
               "invisible and unassigned characters and emoji are refused, not removed)"
    # Only the spaces around a value go: a line break or tab was refused above, not trimmed away.
    raw_name, raw_number, level = raw_name.strip(SPACES), raw_number.strip(SPACES), level.strip(SPACES)
    management_number, year = management_number.strip(SPACES), year.strip(SPACES)
    raw_province = raw_province.strip(SPACES)
    if not (raw_name and raw_number and level and management_number and year and raw_province):
        missing = [column for column, value in zip(COLUMNS, (raw_name, raw_number, level, management_number,
                                                             year, raw_province)) if not value]
        return f"missing field(s): {', '.join(missing)}"
    try:
        number = id_number(raw_number, today)
    except idcard.InvalidIdNumber as exc:
        return f"bad id number: {exc}"
    if level not in LEVEL_RANK:
        return f"unknown level {level!r}"
    name = raw_name       # as written: spaces inside a name are the file's (the key ignores them)
    key = name_key(name)
    if len(name) > 50 or key_problem(key):
        return "bad name: only letters, middle dots and spaces, at most 50 characters"
    if not (management_number.isascii() and management_number.isdigit() and len(management_number) <= 32):
        return "bad management number: digits only, at most 32"
    if not (year.isascii() and year.isdigit() and FIRST_EXAM_YEAR <= int(year) <= this_year):
        return f"bad exam year {year!r}: expected {FIRST_EXAM_YEAR} to {this_year}"
    province = raw_province if raw_province in PROVINCE_CODES else province_code(raw_province)
    if province is None:
        return f"unknown province {raw_province!r}"
    return PasserRecord(line, number, name, key, level, management_number, int(year), province)


# ---- merging one record (the rule in the module docstring) -----------------------------------------

def _differences(passer: Passer, record: PasserRecord) -> list[str]:
    return [name for name, old, new in (
        ("management_number", passer.management_number, record.management_number),
        ("exam_year", passer.exam_year, record.exam_year),
        ("province", passer.province_code, record.province_code)) if old != new]


def merge_one(session: Session, record: PasserRecord, report: ImportReport, now: dt.datetime,
              actor: str, source: str = "import", id_hash=None) -> tuple[str, Passer | None]:
    """Apply one record; returns (outcome, passer). Outcomes: added, unchanged, raised,
    superseded, conflict (the reason is appended to ``report.rejected``)."""
    passer = session.execute(select(Passer).where(Passer.id_number == record.id_number)).scalar_one_or_none()
    if passer is None:
        passer = Passer(id_number=record.id_number, name=record.name, name_normalised=record.name_normalised,
                        level=record.level, management_number=record.management_number,
                        exam_year=record.exam_year, province_code=record.province_code, source=source,
                        imported_at=now, updated_at=now)
        session.add(passer)
        session.flush()
        report.added += 1
        return "added", passer
    if passer.name_normalised != record.name_normalised:
        report.rejected.append((record.line, "duplicate with conflicting data: conflicts with the registry's "
                                             "existing data for this id number (the name differs)"))
        return "conflict", passer
    old_rank, new_rank = LEVEL_RANK[passer.level], LEVEL_RANK[record.level]
    if new_rank < old_rank:
        report.superseded += 1
        return "superseded", passer
    if new_rank == old_rank:
        differences = _differences(passer, record)
        if not differences:
            report.unchanged += 1
            return "unchanged", passer
        report.rejected.append((record.line, "duplicate with conflicting data: conflicts with the registry's "
                                             f"existing data for this id number ({', '.join(differences)} differ)"))
        return "conflict", passer
    previous = passer.level
    passer.level, passer.management_number = record.level, record.management_number
    passer.exam_year, passer.province_code, passer.updated_at = record.exam_year, record.province_code, now
    report.raised += 1
    account = session.execute(select(Account.person_id).where(Account.passer_id == passer.id)).scalar_one_or_none()
    audit.record(session, actor, "passer.level_raised", "passer", str(passer.id),
                 {"id_number": idcard.mask(passer.id_number), "id_hash": id_hash(passer.id_number) if id_hash else None,
                  "previous_level": previous, "new_level": record.level, "source": source,
                  "person_id": account})
    if account is not None:
        outbox.add(session, PasserLevelRaised(person_id=account, previous_level=previous, new_level=record.level,
                                              management_number=record.management_number,
                                              exam_year=record.exam_year))
        report.events += 1
    return "raised", passer


# ---- the bulk import -----------------------------------------------------------------------------

_staging_metadata = MetaData()
STAGING = Table(
    "passer_import", _staging_metadata,
    Column("line", Integer, nullable=False),
    Column("id_number", String(18), nullable=False),
    Column("name", String(50), nullable=False),
    Column("name_normalised", String(50), nullable=False),
    Column("level", String(20), nullable=False),
    Column("management_number", String(32), nullable=False),
    Column("exam_year", Integer, nullable=False),
    Column("province_code", String(2), nullable=False),
    prefixes=["TEMPORARY"],
)
_STAGED = ("line", "id_number", "name", "name_normalised", "level", "management_number", "exam_year",
           "province_code")


class _Loader:
    """Loads checked records into the temporary table in batches (PostgreSQL: COPY)."""

    def __init__(self, session: Session, batch_size: int):
        self.session = session
        self.connection = session.connection()
        self.postgres = self.connection.dialect.name == "postgresql"
        self.batch_size = batch_size
        self.batch: list[PasserRecord] = []
        self.seconds = 0.0   # spent loading (COPY / INSERT)
        self.connection.execute(text("DROP TABLE IF EXISTS passer_import"))
        STAGING.create(self.connection)

    def add(self, record: PasserRecord) -> None:
        self.batch.append(record)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.load(prepare(self.batch, self.postgres))
            self.batch.clear()

    def load(self, prepared) -> None:
        """Load a batch made by :func:`prepare` (possibly in another process)."""
        started = time.perf_counter()
        if self.postgres:
            _copy(self.connection.connection, f"COPY passer_import ({', '.join(_STAGED)}) FROM STDIN",
                  io.StringIO(prepared))
        elif prepared:
            self.connection.execute(insert(STAGING), prepared)
        self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self.connection.execute(text("DROP TABLE IF EXISTS passer_import"))


def prepare(records: list[PasserRecord], postgres: bool):
    """PostgreSQL: COPY text (tab-separated; check_row has refused every character that would need
    escaping: tabs, newlines and backslashes cannot be in a name or a number). Others: row dicts."""
    if postgres:
        return "".join(f"{r.line}\t{r.id_number}\t{r.name}\t{r.name_normalised}\t{r.level}\t"
                       f"{r.management_number}\t{r.exam_year}\t{r.province_code}\n" for r in records)
    return [{name: getattr(r, name) for name in _STAGED} for r in records]


def _copy(dbapi_connection, statement: str, buffer: io.StringIO) -> None:
    """COPY ... FROM STDIN. psycopg2 refuses COPY while a wait callback is installed (eventlet's
    green mode, as under ``nameko run``/``nameko test``); COPY is one blocking call either way,
    so the callback is lifted for its duration (no other green thread runs meanwhile)."""
    import psycopg2.extensions

    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.copy_expert(statement, buffer)
        finally:
            cursor.close()
    finally:
        psycopg2.extensions.set_wait_callback(callback)


def _record(row) -> PasserRecord:
    return PasserRecord(*(getattr(row, name) for name in _STAGED))


def import_passers(session: Session, rows: Iterable, actor: str = "admin-cli", id_hash=None,
                   batch_size: int = 50_000, numbered: bool = False) -> ImportReport:
    """Merge rows (dicts with the English column names; the first is line 2; None for a blank
    line) into the registry. ``numbered``: the rows are iter_file_rows' (line, row) pairs.
    Idempotent. Runs in the caller's transaction; the caller commits."""
    report, loader, started = _begin(session, batch_size)
    today = dt.date.today()
    try:
        for line, row in (rows if numbered else enumerate(rows, start=2)):
            if row is None:
                continue
            checked = row if isinstance(row, str) else check_row(line, row, today.year, today)
            if isinstance(checked, str):
                report.rejected.append((line, checked))
            else:
                loader.add(checked)
    except csv.Error as exc:
        raise errors.validation_error("file", f"CSV 格式错误：{exc}") from None
    loader.flush()
    return _merge(session, report, loader, started, actor, id_hash)


def _begin(session: Session, batch_size: int) -> tuple[ImportReport, _Loader, float]:
    started = time.perf_counter()
    loader = _Loader(session, batch_size)
    if loader.postgres:   # one import at a time: concurrent merges of one ID would race
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext('identity.passer_import'))"))
        session.execute(text("SET LOCAL work_mem = '256MB'"))   # sorts and anti-joins of millions in memory
        # The service's 30 s statement timeout is for requests; merging millions of rows may take longer.
        session.execute(text("SET LOCAL statement_timeout = '30min'"))
    return ImportReport(), loader, started


def _merge(session: Session, report: ImportReport, loader: _Loader, started: float, actor: str,
           id_hash) -> ImportReport:
    now = utcnow()
    if loader.postgres:
        session.execute(text("ANALYZE passer_import"))
    report.seconds["read_and_check"] = time.perf_counter() - started - loader.seconds
    report.seconds["load"] = loader.seconds
    started = time.perf_counter()
    s, p = STAGING.c, Passer.__table__.c

    def lap(phase: str) -> None:
        nonlocal started
        report.seconds[phase] = time.perf_counter() - started
        started = time.perf_counter()

    # 1. ID numbers on several lines of the file (usually none).
    if not loader.postgres:   # SQLite joins by nested loops: give them an index (PostgreSQL hashes)
        session.execute(text("CREATE INDEX passer_import_id_number ON passer_import (id_number)"))
    repeated = select(s.id_number).group_by(s.id_number).having(func.count() > 1)
    if session.execute(select(func.count()).select_from(repeated.subquery())).scalar_one():
        # A line identical to an earlier line of the file adds nothing: counted, then dropped.
        earlier = STAGING.alias("earlier")
        e = earlier.c
        report.repeated = session.execute(delete(STAGING).where(select(e.line).where(
            e.id_number == s.id_number, e.line < s.line, e.name_normalised == s.name_normalised,
            e.level == s.level, e.management_number == s.management_number, e.exam_year == s.exam_year,
            e.province_code == s.province_code).exists())).rowcount
        # Lines of one ID number with different data: applied one by one, in file order.
        repeated_rows = session.execute(select(STAGING).where(s.id_number.in_(repeated)).order_by(s.line)).all()
        if repeated_rows:
            session.execute(delete(STAGING).where(s.id_number.in_(repeated)))
            for row in repeated_rows:
                merge_one(session, _record(row), report, now, actor, id_hash=id_hash)

    lap("repeated_ids")

    # 2. Lines equal to the registry: unchanged. Dropped from the temporary table, so that the
    #    statements below see only what differs or is new (a re-import leaves nothing to compare).
    same = and_(p.id_number == s.id_number, p.name_normalised == s.name_normalised, p.level == s.level,
                p.management_number == s.management_number, p.exam_year == s.exam_year,
                p.province_code == s.province_code)
    report.unchanged += session.execute(delete(STAGING).where(select(p.id).where(same).exists())).rowcount

    # 3. Lines that differ from the registry (level raised, superseded, conflicts): one by one.
    joined = STAGING.join(Passer.__table__, p.id_number == s.id_number)
    for row in session.execute(select(STAGING).select_from(joined).order_by(s.line)).all():
        merge_one(session, _record(row), report, now, actor, id_hash=id_hash)

    lap("compare")

    # 4. New people: one INSERT ... SELECT.
    added = session.execute(insert(Passer.__table__).from_select(
        ["id_number", "name", "name_normalised", "level", "management_number", "exam_year", "province_code",
         "source", "imported_at", "updated_at"],
        select(s.id_number, s.name, s.name_normalised, s.level, s.management_number, s.exam_year,
               s.province_code, literal("import"), literal(now, DateTime), literal(now, DateTime))
        .where(~select(p.id).where(p.id_number == s.id_number).exists())
        .order_by(s.id_number))).rowcount   # in index order: the unique index grows at its right edge
    report.added += added
    loader.close()
    report.rejected.sort()
    audit.record(session, actor, "registry.imported", "registry", "passers",
                 {"added": report.added, "unchanged": report.unchanged, "raised": report.raised,
                  "superseded": report.superseded, "repeated": report.repeated,
                  "rejected": len(report.rejected)})
    session.flush()
    lap("insert")
    log.info("registry import: %s (%s)", report.summary(), report.timing())
    return report


PARALLEL_CHUNK_CHARS = 4_000_000


def import_file(session: Session, raw: bytes, actor: str = "admin-cli", id_hash=None,
                workers: int = 1) -> ImportReport:
    """Import the exam authority's file. With ``workers`` > 1 the rows are checked in that many
    processes (the file is cut at line ends, so only files without quoted fields qualify: a quoted
    field may hold a line break); the result is the same as with one."""
    text_ = decode(raw)
    newline = text_.find("\n")
    if workers <= 1 or '"' in text_ or newline < 0:
        return import_passers(session, iter_file_rows(text_), actor, id_hash, numbered=True)
    return _import_in_parallel(session, text_, newline, actor, id_hash, workers)


def _import_in_parallel(session: Session, text_: str, newline: int, actor: str, id_hash,
                        workers: int) -> ImportReport:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    header = next(csv.reader([text_[:newline]]))
    positions = _header_map(header)
    report, loader, started = _begin(session, 50_000)
    today = dt.date.today()
    tasks, position, line = [], newline + 1, 2
    chunk_chars = max(4096, min(PARALLEL_CHUNK_CHARS, len(text_) // (workers * 8)))   # ≥ 8 pieces a worker
    while position < len(text_):
        end = text_.find("\n", position + chunk_chars)
        end = len(text_) if end < 0 else end + 1
        chunk = text_[position:end]
        tasks.append((line, chunk, positions, len(header), today, loader.postgres))
        line += chunk.count("\n")
        position = end
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for rejected, prepared in pool.map(_check_chunk, tasks):
            report.rejected.extend(rejected)
            loader.load(prepared)
    return _merge(session, report, loader, started, actor, id_hash)


def _check_chunk(task) -> tuple[list[tuple[int, str]], object]:
    """In a worker process: check the rows of one piece of a file without quotes (so a line is a
    record and a comma always separates fields: str.split gives what the csv module would)."""
    start_line, chunk, positions, header_width, today, postgres = task
    indexes = [positions[column] for column in COLUMNS]
    width = max(indexes) + 1
    this_year = today.year
    rejected, records = [], []
    lines = chunk.split("\n")
    if lines and lines[-1] == "":
        lines.pop()   # the piece ends with a line end
    for offset, text_line in enumerate(lines):
        values = text_line.rstrip("\r").split(",")
        if not any(value.strip() for value in values):
            continue
        line = start_line + offset
        too_many = _too_many_values(values, header_width)
        if too_many:
            rejected.append((line, too_many))
            continue
        if len(values) < width:
            values += [""] * (width - len(values))
        checked = check_fields(line, *[values[index] for index in indexes], this_year, today)
        if isinstance(checked, str):
            rejected.append((line, checked))
        else:
            records.append(checked)
    return rejected, prepare(records, postgres)
