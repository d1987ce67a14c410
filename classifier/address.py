"""Pull the place phrase out of a citizen's text and resolve its district from the city gazetteer."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from kb.service import DATA_DIR as KB_DATA_DIR

GAZETTEER = KB_DATA_DIR / "city" / "gazetteer.yaml"

_HAN = r"[\u4e00-\u9fa5A-Za-z0-9]"
_NUM = r"(?:\d+|[一二三四五六七八九十百两]+)"
_ROAD_SUFFIX = r"(?:大道|大街|路|街(?!道)|巷|胡同|弄)"
_ROAD = rf"{_HAN}{{2,10}}?{_ROAD_SUFFIX}"
_CROSSING = r"(?:交叉口|交叉路口|交汇处|交界处|十字路口|丁字路口|路口|口)"
_CORNER = r"(?:[东西南北]{1,2}(?:角|侧|方向|口))"
_COMPOUND_SUFFIX = r"(?:小区|花园|家园|新村|名苑|名邸|名都|华庭|公寓|宿舍|大院|社区|苑|里|湾|城)"
_BUILDING = rf"(?:{_NUM}(?:号楼|栋|幢|号|座|区)(?:{_NUM}单元)?(?:{_NUM}(?:楼|层|室|号))?)"
_LANDMARK_SUFFIX = (
    r"(?:中学|小学|学校|学院|大学|幼儿园|医院|卫生院|公园|广场|菜市场|农贸市场|市场|地铁站|公交站|车站|客运站|"
    r"火车站|大桥|桥|商场|超市|银行|体育馆|图书馆|博物馆|政府|中心|大厦|大楼|酒店|宾馆|加油站|码头)"
)
_DIRECTION = (
    r"(?:东门|西门|南门|北门|正门|后门|侧门|大门口|大门|门口|门前|对面|对过|附近|旁边|边上|旁|周边|"
    r"东侧|西侧|南侧|北侧|东边|西边|南边|北边|出口|入口|路口|\d+号口|[A-Za-z]口)"
)

# Words that end like a road or compound but name no place.
_GENERIC = (
    "马路", "道路", "公路", "铁路", "小路", "大路", "水泥路", "柏油路", "土路", "山路", "辅路", "主路", "岔路",
    "十字路", "丁字路", "断头路", "条路", "段路", "这路", "那路", "大街", "老街", "街上", "整条街", "一条街",
    "沿街", "临街", "上街", "小巷", "巷子", "这个小区", "那个小区", "我们小区", "我家小区", "小区", "老小区",
    "花园", "公园", "城", "里", "新城", "老城", "县城", "满城", "省城", "进城", "这里", "那里", "哪里",
)
# Left edge of a generic match: anything up to the last of these belongs to the sentence, not the place.
_STOP_RE = re.compile(
    r".*(?:反映|来电|投诉|举报|称|在|于|与|的|了|是|说|到|从|往|向|经过|路过|我家|我们|你们|他们|这个|那个|这里|"
    r"那里|附近|旁边|对面|门口|楼下|楼上|一个|一些|有人|发现|看到|位于|地址|地点|就是|还有|个|把|被|给|让|靠近)"
)


@dataclass(frozen=True, slots=True)
class Place:
    """One gazetteer entry: a district, street office, road, residential compound or landmark."""

    name: str
    kind: str  # "district" | "street" | "road" | "community" | "landmark"
    districts: tuple[str, ...]  # district codes
    lat: float | None = None
    lng: float | None = None


@dataclass(frozen=True, slots=True)
class Address:
    """The place phrase found in a text, its district and the coordinates of a matched landmark."""

    text: str
    district: str | None = None
    district_code: str | None = None
    lat: float | None = None
    lng: float | None = None
    places: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """Render as the JSON object of the CLI and API."""
        return {"text": self.text, "district": self.district, "district_code": self.district_code,
                "lat": self.lat, "lng": self.lng}


@dataclass(slots=True)
class Gazetteer:
    """The city's place names with their districts, loaded from gazetteer.yaml."""

    district_names: dict[str, str] = field(default_factory=dict)  # code -> name
    places: dict[str, list[Place]] = field(default_factory=dict)
    _pattern: re.Pattern[str] | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Gazetteer:
        """Read a gazetteer file (the sample city's by default; cached per path)."""
        return _load_gazetteer(path or GAZETTEER)

    @classmethod
    def parse(cls, raw: dict[str, object]) -> Gazetteer:
        """Build from the parsed YAML document."""
        gaz = cls()
        districts = raw.get("districts") or []
        assert isinstance(districts, list)
        for d in districts:
            code, name = str(d["code"]), str(d["name"])
            gaz.district_names[code] = name
            gaz._add(Place(name, "district", (code,)))
            # Short aliases (中心, 江北) are too ambiguous as free text; only long ones count.
            for alias in d.get("aliases") or []:
                if len(str(alias)) >= 3:
                    gaz._add(Place(str(alias), "district", (code,)))
            for street in d.get("streets") or []:
                gaz._add(Place(str(street["name"]), "street", (code,)))
            for road in d.get("roads") or []:
                gaz._add(Place(str(road), "road", (code,)))
            for community in d.get("communities") or []:
                gaz._add(Place(str(community), "community", (code,)))
            for mark in d.get("landmarks") or []:
                gaz._add(Place(str(mark["name"]), "landmark", (code,), float(mark["lat"]), float(mark["lng"])))
        names = sorted(gaz.places, key=len, reverse=True)
        # Longest alternative first, so 鼓楼新村 wins over 鼓楼 at the same position.
        gaz._pattern = re.compile("|".join(re.escape(n) for n in names)) if names else None
        return gaz

    def _add(self, place: Place) -> None:
        entries = self.places.setdefault(place.name, [])
        for i, old in enumerate(entries):
            if old.kind == place.kind:
                # A road that crosses two districts is one entry with both codes.
                entries[i] = Place(old.name, old.kind, tuple(dict.fromkeys(old.districts + place.districts)),
                                   old.lat, old.lng)
                return
        entries.append(place)

    def all_names(self) -> list[str]:
        """Return every place name (for the jieba user dictionary)."""
        return list(self.places)

    def find(self, text: str) -> list[tuple[int, int, Place]]:
        """Return the gazetteer names in the text, leftmost-longest and non-overlapping."""
        if self._pattern is None:
            return []
        found: list[tuple[int, int, Place]] = []
        for m in self._pattern.finditer(text):
            entries = self.places[m.group(0)]
            # When a name is both (say) a landmark and a road, the more specific entry is more useful.
            best = min(entries, key=lambda p: _KIND_RANK[p.kind])
            found.append((m.start(), m.end(), best))
        return found

    def district_code(self, name_or_code: str | None) -> str | None:
        """Return the district code for a district name, alias or code."""
        if not name_or_code:
            return None
        if name_or_code in self.district_names:
            return name_or_code
        for place in self.places.get(name_or_code, []):
            if place.kind == "district":
                return place.districts[0]
        for code, name in self.district_names.items():
            if name.startswith(name_or_code) and len(name_or_code) >= 2:
                return code
        return None


_KIND_RANK = {"landmark": 0, "community": 1, "road": 2, "street": 3, "district": 4}


@lru_cache(maxsize=4)
def _load_gazetteer(path: Path) -> Gazetteer:
    if not path.exists():
        return Gazetteer()
    # The C loader when available: the pure-Python one takes ~0.3 s for this file.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}  # noqa: S506 - a safe loader
    return Gazetteer.parse(raw)


_CROSSING_RE = re.compile(
    rf"(?P<a>{_ROAD})(?:与|和|跟|同|、|/)(?P<b>{_ROAD})(?:的)?(?:{_CROSSING})?{_CORNER}?"
)
_HOUSE_RE = re.compile(rf"(?P<a>{_ROAD}){_NUM}号(?:院|楼)?")
_COMPOUND_RE = re.compile(rf"(?P<a>{_HAN}{{2,12}}?{_COMPOUND_SUFFIX}){_BUILDING}")
_COMPOUND_PLAIN_RE = re.compile(
    rf"(?P<a>{_HAN}{{2,10}}?(?:小区|家园|新村|花园|公寓|宿舍)(?:小区)?)(?:的)?(?:{_DIRECTION}|内|里|楼下|院内|院里)?"
)
_LANDMARK_RE = re.compile(rf"(?P<a>{_HAN}{{2,15}}?{_LANDMARK_SUFFIX})(?:的)?{_DIRECTION}")
_PLAIN_ROAD_RE = re.compile(rf"(?P<a>{_ROAD})(?:{_NUM}号)?")
_AFTER_PLACE_RE = re.compile(rf"(?:的)?(?:{_BUILDING}|{_DIRECTION}|{_NUM}号(?:院|楼)?)")
_ADMIN_BEFORE_RE = re.compile(rf"(?:{_HAN}{{1,6}}?(?:市|区|县))?(?:{_HAN}{{1,6}}?(?:街道|镇|乡))?$")


def _trim_left(span: str) -> int:
    """Return how many characters of a generic match belong to the sentence before the place."""
    m = _STOP_RE.match(span)
    return m.end() if m else 0


def _is_generic(name: str) -> bool:
    for g in _GENERIC:
        if name.endswith(g):
            rest = name[: -len(g)]
            if len(rest) <= 1 or any(ch in rest for ch in "这那条段个边些"):
                return True
    return False


@dataclass(slots=True)
class _Candidate:
    start: int
    end: int
    priority: int  # breaks ties between equally long spans: gazetteer > crossing > compound > landmark > road
    places: list[Place] = field(default_factory=list)


def _regex_candidates(text: str, gaz: Gazetteer) -> list[_Candidate]:
    out: list[_Candidate] = []
    for priority, pattern in ((1, _CROSSING_RE), (2, _COMPOUND_RE), (3, _LANDMARK_RE), (4, _HOUSE_RE),
                              (5, _COMPOUND_PLAIN_RE), (6, _PLAIN_ROAD_RE)):
        for m in pattern.finditer(text):
            cut = _trim_left(m.group("a"))
            start = m.start() + cut
            head = text[start:m.end("a")]
            if len(head) < 2 or _is_generic(head):
                continue
            if pattern is _CROSSING_RE:
                second = m.group("b")
                second = second[_trim_left(second):]
                if _is_generic(second):
                    continue
            out.append(_Candidate(start, m.end(), priority))
    return out


def _gazetteer_candidates(text: str, gaz: Gazetteer) -> list[_Candidate]:
    out: list[_Candidate] = []
    for start, end, place in gaz.find(text):
        if place.kind == "district":
            continue
        tail = _AFTER_PLACE_RE.match(text, end) if place.kind != "street" else None
        out.append(_Candidate(start, tail.end() if tail else end, 0, [place]))
    return out


def extract_address(text: str, *, gazetteer: Gazetteer | None = None) -> Address | None:
    """Return the longest place phrase in the text with its district, or None when there is none."""
    gaz = gazetteer or Gazetteer.load()
    text = unicodedata.normalize("NFKC", text)[:2000]
    known = gaz.find(text)
    candidates = _regex_candidates(text, gaz) + _gazetteer_candidates(text, gaz)
    if not candidates:
        district = _district_of([p for _, _, p in known])
        if district is None:
            return None
        # Only a district is named: that is still the best address we have.
        start, end, _ = next((k for k in known if k[2].kind == "district"), known[0])
        return _address(text[start:end], gaz, district, [])
    # Merge overlapping candidates into one span: an intersection that contains two gazetteer roads
    # should keep both roads' districts for the resolution below.
    best = max(candidates, key=lambda c: (c.end - c.start, -c.priority, -c.start))
    start, end = best.start, best.end
    places = [p for s, e, p in known if s < end and e > start]
    start = _extend_admin_prefix(text, start)
    places += [p for s, e, p in known if s < end and e > start and p not in places]
    district = _district_of(places) or _district_of([p for _, _, p in known])
    return _address(text[start:end], gaz, district, places)


def _extend_admin_prefix(text: str, start: int) -> int:
    """Move the start left over a directly preceding 区/县/街道 name (示例市中心区 + 人民路 …)."""
    m = _ADMIN_BEFORE_RE.search(text[max(0, start - 14):start])
    if not m or not m.group(0):
        return start
    prefix = m.group(0)
    prefix = prefix[_trim_left(prefix):]
    if len(prefix) >= 3 and re.search(r"(?:市|区|县|街道|镇|乡)$", prefix):
        return start - len(prefix)
    return start


def _district_of(places: list[Place]) -> str | None:
    """Resolve one district: a district name, else a landmark or compound, else what all roads share."""
    for kind in ("district", "landmark", "community", "street"):
        for place in places:
            if place.kind == kind and len(place.districts) == 1:
                return place.districts[0]
    common: set[str] | None = None
    for place in places:
        common = set(place.districts) if common is None else common & set(place.districts)
    if common and len(common) == 1:
        return next(iter(common))
    return None


def _address(span: str, gaz: Gazetteer, district: str | None, places: list[Place]) -> Address:
    landmark = next((p for p in places if p.lat is not None), None)
    return Address(
        text=span,
        district=gaz.district_names.get(district) if district else None,
        district_code=district,
        lat=landmark.lat if landmark else None,
        lng=landmark.lng if landmark else None,
        places=tuple(p.name for p in places),
    )
