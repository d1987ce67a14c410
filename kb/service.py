"""Load the taxonomy, time limits and routing rules shipped in kb/data (or a city's replacement)."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

DATA_DIR = Path(__file__).parent / "data"
LOCAL_TZ = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True, slots=True)
class CaseType:
    """One 事项 of the taxonomy (e.g. 06010 暴露垃圾 in 大类 06 市容环境类)."""

    code: str
    name: str
    major_code: str
    major_name: str
    group: str


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """A handling time limit: an amount of work hours or work days."""

    amount: int
    unit: str  # "work_hours" | "work_days"

    @property
    def label(self) -> str:
        """Render as the centre writes it (e.g. 4工作时)."""
        return f"{self.amount}{'工作时' if self.unit == 'work_hours' else '工作日'}"


@dataclass(slots=True)
class Taxonomy:
    """The case-type list with its 大类 (major classes)."""

    types: dict[str, CaseType] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None, *, extra: Path | None = None) -> Taxonomy:
        """Read the national list (or a city's file of the same columns), then a city's extension."""
        taxonomy = cls()
        for source in (path or DATA_DIR / "reference" / "gb47678.5-2026-items.tsv", extra):
            if source is None or not source.exists():
                continue
            with source.open(encoding="utf-8") as fh:
                for row in csv.DictReader(fh, delimiter="\t"):
                    code = row["code"].strip()
                    taxonomy.types[code] = CaseType(
                        code=code,
                        name=row["name"].strip(),
                        major_code=row["major_code"].strip(),
                        major_name=row["major_name"].strip(),
                        group=(row.get("group") or "").strip(),
                    )
        return taxonomy

    def get(self, code: str) -> CaseType | None:
        """Return the type with this code, if any."""
        return self.types.get(code)

    @property
    def majors(self) -> dict[str, str]:
        """Map 大类 codes to their names."""
        return {t.major_code: t.major_name for t in self.types.values()}


@dataclass(slots=True)
class WorkCalendar:
    """Working time of the departments: weekdays between two hours, minus holidays."""

    start_hour: int = 8
    end_hour: int = 18
    holidays: frozenset[dt.date] = frozenset()
    extra_workdays: frozenset[dt.date] = frozenset()

    def is_workday(self, day: dt.date) -> bool:
        """Tell whether departments work on this date (调休 make some weekends workdays)."""
        if day in self.extra_workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add(self, start: dt.datetime, limit: TimeLimit) -> dt.datetime:
        """Return the deadline `limit` after `start`, counted in working time."""
        local = start.astimezone(LOCAL_TZ)
        if limit.unit == "work_days":
            day = local.date()
            remaining = limit.amount
            while remaining > 0:
                day += dt.timedelta(days=1)
                if self.is_workday(day):
                    remaining -= 1
            result = dt.datetime.combine(day, local.timetz())
            return result.astimezone(dt.UTC)
        remaining_min = limit.amount * 60
        cursor = local
        while remaining_min > 0:
            day_start = cursor.replace(hour=self.start_hour, minute=0, second=0, microsecond=0)
            day_end = cursor.replace(hour=self.end_hour, minute=0, second=0, microsecond=0)
            if not self.is_workday(cursor.date()) or cursor >= day_end:
                cursor = (cursor + dt.timedelta(days=1)).replace(hour=self.start_hour, minute=0, second=0,
                                                                  microsecond=0)
                continue
            cursor = max(cursor, day_start)
            available = int((day_end - cursor).total_seconds() // 60)
            step = min(available, remaining_min)
            cursor += dt.timedelta(minutes=step)
            remaining_min -= step
        return cursor.astimezone(dt.UTC)


@dataclass(slots=True)
class TimeLimits:
    """Per-type and per-大类 time limits, normal and urgent."""

    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    calendar: WorkCalendar = field(default_factory=WorkCalendar)

    @classmethod
    def load(cls, path: Path | None = None, *, start_hour: int = 8, end_hour: int = 18) -> TimeLimits:
        """Read deadlines.yaml (and the sample city's per-type limits when present)."""
        raw = yaml.safe_load((path or DATA_DIR / "deadlines.yaml").read_text(encoding="utf-8")) or {}
        overrides = dict(raw.get("overrides") or {})
        city = DATA_DIR / "city" / "standards.yaml"
        if path is None and city.exists():
            for item in yaml.safe_load(city.read_text(encoding="utf-8")) or []:
                if isinstance(item, dict) and "code" in item and "amount" in item:
                    overrides[str(item["code"])] = item  # the city's own standard wins
        holidays = frozenset(dt.date.fromisoformat(str(d)) for d in raw.get("holidays") or [])
        workdays = frozenset(dt.date.fromisoformat(str(d)) for d in raw.get("extra_workdays") or [])
        return cls(
            defaults={str(k): v for k, v in (raw.get("defaults") or {}).items()},
            overrides={str(k): v for k, v in overrides.items()},
            calendar=WorkCalendar(start_hour, end_hour, holidays, workdays),
        )

    def limit_for(self, case_type: CaseType, *, urgent: bool = False) -> TimeLimit:
        """Return the time limit for a type, falling back to its 大类 and then one work day."""
        spec = self.overrides.get(case_type.code) or self.defaults.get(case_type.major_code) or {}
        if urgent and spec.get("urgent_amount"):
            return TimeLimit(int(spec["urgent_amount"]), str(spec.get("urgent_unit", "work_hours")))
        return TimeLimit(int(spec.get("amount", 1)), str(spec.get("unit", "work_days")))

    def deadline(self, case_type: CaseType, *, start: dt.datetime, urgent: bool = False) -> dt.datetime:
        """Return when handling must be finished."""
        return self.calendar.add(start, self.limit_for(case_type, urgent=urgent))


@dataclass(slots=True)
class Routing:
    """Responsible department per case type, optionally per district, with 大类 defaults."""

    defaults: dict[str, str] = field(default_factory=dict)
    by_code: dict[str, str] = field(default_factory=dict)
    by_code_district: dict[tuple[str, str], str] = field(default_factory=dict)
    departments: dict[str, dict[str, Any]] = field(default_factory=dict)
    district_codes: dict[str, str] = field(default_factory=dict)
    # Edits made in the console, layered over the shipped rules (see apply_overrides).
    edited_by_code: dict[str, str] = field(default_factory=dict)
    edited_by_code_district: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def load(cls, city_dir: Path | None = None) -> Routing:
        """Read the city's departments.yaml and routing.yaml (missing files give an empty routing)."""
        base = city_dir or DATA_DIR / "city"
        routing = cls()
        deps_file, rules_file, gaz_file = base / "departments.yaml", base / "routing.yaml", base / "gazetteer.yaml"
        if deps_file.exists():
            raw_deps = yaml.safe_load(deps_file.read_text(encoding="utf-8")) or []
            if isinstance(raw_deps, dict):
                raw_deps = raw_deps.get("departments") or []
            routing.departments = {str(d["code"]): d for d in raw_deps if isinstance(d, dict) and "code" in d}
        if gaz_file.exists():
            gaz = yaml.safe_load(gaz_file.read_text(encoding="utf-8")) or {}
            for d in gaz.get("districts") or []:
                routing.district_codes[str(d["name"])] = str(d["code"])
        if rules_file.exists():
            raw = yaml.safe_load(rules_file.read_text(encoding="utf-8")) or {}
            routing.defaults = {str(k): str(v) for k, v in (raw.get("defaults") or {}).items()}
            for rule in raw.get("rules") or []:
                for code in rule.get("codes") or []:
                    if rule.get("department"):
                        routing.by_code[str(code)] = str(rule["department"])
                    for district, dep in (rule.get("department_by_district") or {}).items():
                        routing.by_code_district[(str(code), str(district))] = str(dep)
        return routing

    def department_for(self, case_type: CaseType, *, district: str | None = None) -> str | None:
        """Return the responsible department code: type × district, then type, then 大类."""
        if district:
            district_code = self.district_codes.get(district, district)
            key = (case_type.code, district_code)
            dep = self.edited_by_code_district.get(key) or self.by_code_district.get(key)
            if dep:
                return dep
        return (self.edited_by_code.get(case_type.code) or self.by_code.get(case_type.code)
                or self.defaults.get(case_type.major_code))

    def department_name(self, code: str | None) -> str | None:
        """Return the display name of a department code."""
        if code is None:
            return None
        dep = self.departments.get(code)
        return str(dep.get("name")) if dep else code


@dataclass(slots=True)
class KnowledgeBase:
    """Everything kb/ provides to the rest of the product."""

    taxonomy: Taxonomy
    limits: TimeLimits
    routing: Routing

    @classmethod
    def load(
        cls, *, start_hour: int = 8, end_hour: int = 18, taxonomy_file: Path | None = None,
        taxonomy_extra: Path | None = None,
    ) -> KnowledgeBase:
        """Load the shipped data, or a city's own taxonomy file and/or its extension."""
        return cls(
            taxonomy=Taxonomy.load(taxonomy_file, extra=taxonomy_extra),
            limits=TimeLimits.load(start_hour=start_hour, end_hour=end_hour),
            routing=Routing.load(),
        )



def apply_overrides(kb: KnowledgeBase, overrides: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Apply routing edits made in the console on top of the shipped files (kind → key → data)."""
    by_code: dict[str, str] = {}
    by_code_district: dict[tuple[str, str], str] = {}
    for code, data in overrides.get("routing", {}).items():
        if data.get("department"):
            by_code[code] = str(data["department"])
        for district, dep in (data.get("by_district") or {}).items():
            by_code_district[(code, str(district))] = str(dep)
    kb.routing.edited_by_code = by_code
    kb.routing.edited_by_code_district = by_code_district
