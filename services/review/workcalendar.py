"""Working days in China (工作日): weekends off, public holidays off, make-up working days on.

Deadlines are counted in China Standard Time (UTC+8 all year, no daylight saving). Datetimes in the
database are naive UTC; dates here are local (Beijing) calendar dates.

Rule (as for 期间 in Chinese administrative law): the day of acceptance is not counted; day 1 is the
next working day; the deadline is the end (23:59:59 Beijing time) of the Nth working day.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

CHINA_OFFSET = dt.timedelta(hours=8)
END_OF_DAY = dt.time(23, 59, 59)


class CalendarError(ValueError):
    """The calendar file is broken: the service refuses to start rather than miscount deadlines."""


def local_date(utc_naive: dt.datetime) -> dt.date:
    """The Beijing calendar date of a naive-UTC instant."""
    return (utc_naive + CHINA_OFFSET).date()


def local_day_start(day: dt.date) -> dt.datetime:
    """00:00 Beijing time of ``day``, as naive UTC."""
    return dt.datetime.combine(day, dt.time()) - CHINA_OFFSET


def local_day_end(day: dt.date) -> dt.datetime:
    """23:59:59 Beijing time of ``day``, as naive UTC."""
    return dt.datetime.combine(day, END_OF_DAY) - CHINA_OFFSET


def _parse_day(value, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise CalendarError(f"{where}: {value!r} is a time, expected a date YYYY-MM-DD")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise CalendarError(f"{where}: {value!r} is not a date YYYY-MM-DD")


def _expand(entry, where: str) -> list[dt.date]:
    """A date, or a string range ``A..B`` (both included)."""
    if isinstance(entry, str) and ".." in entry:
        first, _, last = entry.partition("..")
        start, end = _parse_day(first, where), _parse_day(last, where)
        if end < start:
            raise CalendarError(f"{where}: range {entry!r} ends before it starts")
        if (end - start).days > 31:
            raise CalendarError(f"{where}: range {entry!r} is longer than a month; is it a typo?")
        return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]
    return [_parse_day(entry, where)]


class WorkCalendar:
    def __init__(self, holidays: set[dt.date], workdays: set[dt.date], years: set[int],
                 fixed_holidays: set[tuple[int, int]], fingerprint: str = ""):
        self.holidays = frozenset(holidays)
        self.workdays = frozenset(workdays)
        self.years = frozenset(years)
        self.fixed_holidays = frozenset(fixed_holidays)
        self.fingerprint = fingerprint
        self._warned: set[int] = set()
        self._add_cache: dict[tuple[dt.date, int], dt.date] = {}
        self._between_cache: dict[tuple[dt.date, dt.date], int] = {}

    # ---- loading --------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> "WorkCalendar":
        raw = Path(path).read_bytes()
        try:
            document = yaml.safe_load(raw.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise CalendarError(f"{path}: not readable YAML: {exc}") from None
        return cls.from_document(document, fingerprint=hashlib.sha256(raw).hexdigest()[:16], name=str(path))

    @classmethod
    def from_document(cls, document, fingerprint: str = "", name: str = "calendar") -> "WorkCalendar":
        if not isinstance(document, dict):
            raise CalendarError(f"{name}: expected a mapping with `years` (and `fixed_holidays`)")
        unknown = set(document) - {"years", "fixed_holidays"}
        if unknown:
            raise CalendarError(f"{name}: unknown keys {sorted(unknown)}")
        fixed = set()
        for entry in document.get("fixed_holidays") or []:
            try:
                month, day = (int(part) for part in str(entry).split("-"))
                dt.date(2000, month, day)   # a leap year: 02-29 is a valid month-day
            except ValueError:
                raise CalendarError(f"{name}: fixed holiday {entry!r} is not MM-DD") from None
            fixed.add((month, day))
        years_doc = document.get("years") or {}
        if not isinstance(years_doc, dict):
            raise CalendarError(f"{name}: `years` must map a year to its holidays and workdays")
        holidays: set[dt.date] = set()
        workdays: set[dt.date] = set()
        years: set[int] = set()
        for year_key, spec in years_doc.items():
            try:
                year = int(year_key)
            except (TypeError, ValueError):
                raise CalendarError(f"{name}: year {year_key!r} is not a number") from None
            if not 1990 <= year <= 2200:
                raise CalendarError(f"{name}: year {year} is out of range")
            if not isinstance(spec, dict) or set(spec) - {"source", "holidays", "workdays"}:
                raise CalendarError(f"{name}: year {year} must have only source, holidays, workdays")
            if not spec.get("holidays"):
                raise CalendarError(f"{name}: year {year} lists no holidays")
            year_holidays = {day for entry in spec.get("holidays") or []
                             for day in _expand(entry, f"{name}: {year} holidays")}
            year_workdays = {day for entry in spec.get("workdays") or []
                             for day in _expand(entry, f"{name}: {year} workdays")}
            for day in year_holidays | year_workdays:
                # A New Year holiday may begin on 30/31 December of the year before.
                if abs(day.year - year) > 1:
                    raise CalendarError(f"{name}: {day} is listed under year {year}")
            for day in sorted(year_workdays):
                if day.weekday() < 5:
                    raise CalendarError(f"{name}: make-up working day {day} is a weekday (调休上班 falls on a "
                                        "Saturday or Sunday); is the date mistyped?")
            clash = (year_holidays | holidays) & (year_workdays | workdays)
            if clash:
                raise CalendarError(f"{name}: {sorted(clash)[0]} is both a holiday and a working day")
            holidays |= year_holidays
            workdays |= year_workdays
            years.add(year)
        return cls(holidays, workdays, years, fixed, fingerprint)

    # ---- rules ----------------------------------------------------------------------------------

    def covers(self, year: int) -> bool:
        return year in self.years

    def _uncovered(self, year: int) -> None:
        if year not in self._warned:
            self._warned.add(year)
            log.warning("working-day calendar has no entry for %s: counting weekends and fixed-date holidays "
                        "only; add that year's holiday notice to the calendar file", year)

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays or day.weekday() >= 5:
            return False
        if day.year not in self.years:
            self._uncovered(day.year)
            return (day.month, day.day) not in self.fixed_holidays
        return True

    def add_working_days(self, start: dt.date, days: int) -> dt.date:
        """The ``days``-th working day after ``start`` (``start`` itself not counted)."""
        key = (start, days)
        cached = self._add_cache.get(key)
        if cached is None:
            current, remaining = start, days
            while remaining > 0:
                current += dt.timedelta(days=1)
                if self.is_working_day(current):
                    remaining -= 1
            cached = self._add_cache[key] = current
        return cached

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days ``d`` with start < d <= end; negative when ``end`` is before ``start``."""
        if end < start:
            return -self.working_days_between(end, start)
        key = (start, end)
        cached = self._between_cache.get(key)
        if cached is None:
            cached = sum(1 for n in range(1, (end - start).days + 1)
                         if self.is_working_day(start + dt.timedelta(days=n)))
            if len(self._between_cache) > 100_000:
                self._between_cache.clear()
            self._between_cache[key] = cached
        return cached

    def due_at(self, accepted_at: dt.datetime, working_days: int) -> dt.datetime:
        """Naive-UTC deadline: end of the ``working_days``-th working day after the acceptance date."""
        return local_day_end(self.add_working_days(local_date(accepted_at), working_days))
