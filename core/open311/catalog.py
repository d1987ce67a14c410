"""The services we offer over Open311: case types as services, the extra questions some of them ask, alarm types."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kb.service import CaseType

# Open311 datatypes (GeoReport v2): string, number, datetime, text, singlevaluelist, multivaluelist.
STRING, NUMBER, TEXT, SINGLE, MULTI = "string", "number", "text", "singlevaluelist", "multivaluelist"


@dataclass(frozen=True, slots=True)
class Attribute:
    """One extra question of a service definition."""

    code: str
    description: str
    datatype: str
    required: bool
    values: tuple[tuple[str, str], ...] = ()  # (key, Chinese name)
    datatype_description: str = ""
    max_length: int = 64

    def label(self, key: str) -> str:
        """Return the Chinese name of a list value (the key itself for free answers)."""
        return dict(self.values).get(key, key)

    def as_open311(self, order: int) -> dict[str, Any]:
        """Render as an Open311 attribute definition."""
        return {
            "variable": True,
            "code": self.code,
            "datatype": self.datatype,
            "required": self.required,
            "datatype_description": self.datatype_description or None,
            "order": order,
            "description": self.description,
            "values": [{"key": k, "name": n} for k, n in self.values],
        }


YES_NO = (("yes", "是"), ("no", "否"))
PERIOD = Attribute("period", "发生时段", SINGLE, True,
                   (("day", "白天（6时至22时）"), ("night", "夜间（22时至次日6时）"), ("all_day", "全天")))
INJURED = Attribute("injured", "是否有人受伤", SINGLE, True, YES_NO)
COVER_STATE = Attribute("cover_state", "井盖状况", SINGLE, False,
                        (("missing", "缺失"), ("broken", "破损"), ("displaced", "移位"),
                         ("uneven", "下沉或凸起"), ("rattling", "松动异响")))
NOISE_SOURCE = Attribute("noise_source", "噪声来源", SINGLE, False,
                         (("shop", "商铺经营"), ("square_dance", "广场舞"), ("entertainment", "娱乐场所"),
                          ("vehicle", "车辆"), ("other", "其他")))
LIGHT_STATE = Attribute("light_state", "路灯状况", SINGLE, True,
                        (("off", "夜间不亮"), ("flicker", "闪烁"), ("day_on", "白天常亮"), ("damaged", "灯杆或灯具损坏")))
POLE_NUMBER = Attribute("pole_number", "路灯杆编号（杆身喷印）", STRING, False,
                        datatype_description="如 RM-0123", max_length=32)
PLATE = Attribute("plate", "车牌号", STRING, False, datatype_description="如 鄂A12345", max_length=16)
BLOCKING = Attribute("blocking", "是否堵塞通道或影响通行", SINGLE, False, YES_NO)
TREE_DANGER = Attribute("danger", "是否有倒伏或砸伤危险", SINGLE, True, YES_NO)


@dataclass(frozen=True, slots=True)
class AttributeRule:
    """Which case types ask which questions."""

    applies: Callable[[CaseType], bool]
    attributes: tuple[Attribute, ...]


def _codes(*codes: str) -> Callable[[CaseType], bool]:
    wanted = frozenset(codes)
    return lambda t: t.code in wanted


RULES: tuple[AttributeRule, ...] = (
    AttributeRule(lambda t: "井盖" in t.name, (INJURED, COVER_STATE)),
    AttributeRule(_codes("06028"), (PERIOD, NOISE_SOURCE)),  # 噪声扰民
    AttributeRule(_codes("08001"), (PERIOD,)),  # 施工扰民: night work needs a permit
    AttributeRule(_codes("06029", "09006"), (Attribute("period", "发生时段", SINGLE, False, PERIOD.values),)),
    AttributeRule(_codes("01037"), (LIGHT_STATE, POLE_NUMBER)),  # 路灯异常
    AttributeRule(_codes("09009"), (PLATE, BLOCKING)),  # 机动车乱停放
    AttributeRule(_codes("04001", "04002", "04003"), (TREE_DANGER,)),  # 古树名木、行道树、独立树
)


def attributes_for(case_type: CaseType) -> tuple[Attribute, ...]:
    """Return the extra questions of a case type (empty for most types)."""
    for rule in RULES:
        if rule.applies(case_type):
            return rule.attributes
    return ()


def validate_attributes(case_type: CaseType, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check the answers against the definition; return the clean answers and Chinese error texts."""
    definition = {a.code: a for a in attributes_for(case_type)}
    clean: dict[str, Any] = {}
    errors: list[str] = []
    for code in raw:
        if code not in definition:
            errors.append(f"事项「{case_type.name}」没有属性 {code}")
    for attr in definition.values():
        value = raw.get(attr.code)
        if isinstance(value, str):
            value = value.strip()
        if value in (None, "", []):
            if attr.required:
                errors.append(f"缺少必填属性 attribute[{attr.code}]（{attr.description}）")
            continue
        keys = {k for k, _ in attr.values}
        if attr.datatype == MULTI:
            items = [str(v).strip() for v in (value if isinstance(value, list) else [value])]
            bad = [v for v in items if v not in keys]
            if bad:
                errors.append(f"属性 {attr.code} 的取值 {', '.join(bad)} 不在可选范围内")
            else:
                clean[attr.code] = items
            continue
        if isinstance(value, list):
            if len(value) != 1:
                errors.append(f"属性 {attr.code} 只能有一个取值")
                continue
            value = str(value[0]).strip()
        text = str(value)
        if attr.datatype == SINGLE and text not in keys:
            allowed = "、".join(f"{k}（{n}）" for k, n in attr.values)
            errors.append(f"属性 {attr.code} 的取值 {text[:32]} 不在可选范围内：{allowed}")
        elif attr.datatype == NUMBER and not re.fullmatch(r"-?\d+(\.\d+)?", text):
            errors.append(f"属性 {attr.code} 应为数字")
        elif len(text) > attr.max_length:
            errors.append(f"属性 {attr.code} 不能超过 {attr.max_length} 个字符")
        else:
            clean[attr.code] = text
    return clean, errors


def describe_answers(case_type: CaseType, answers: Mapping[str, Any]) -> list[str]:
    """Render the answers as lines an operator reads (e.g. 是否有人受伤：是)."""
    lines = []
    for attr in attributes_for(case_type):
        if attr.code not in answers:
            continue
        value = answers[attr.code]
        shown = "、".join(attr.label(v) for v in value) if isinstance(value, list) else attr.label(str(value))
        lines.append(f"{attr.description}：{shown}")
    return lines


def is_urgent(answers: Mapping[str, Any]) -> bool:
    """Tell whether the answers say someone is hurt or in danger (the operator should look first)."""
    return answers.get("injured") == "yes" or answers.get("danger") == "yes"


@dataclass(frozen=True, slots=True)
class AlarmType:
    """A kind of machine alarm, its Chinese name and the case type it usually becomes."""

    key: str
    label: str
    case_type_code: str | None
    aliases: tuple[str, ...] = field(default_factory=tuple)


ALARM_TYPES: tuple[AlarmType, ...] = (
    AlarmType("waterlogging", "道路积水", "01004", ("积水", "内涝", "flooding")),
    AlarmType("manhole_cover", "井盖位移或缺失", "01023", ("井盖", "井盖位移", "manhole")),
    AlarmType("heating_leak", "供热管道泄漏", "01061", ("供热", "供热泄漏", "heating")),
    AlarmType("gas_leak", "燃气泄漏", "01057", ("燃气", "燃气泄漏")),
    AlarmType("noise", "噪声超标", "06028", ("噪声", "噪音")),
    AlarmType("dust", "扬尘超标", "08004", ("扬尘",)),
    AlarmType("bin_overflow", "垃圾箱满溢", "06042", ("垃圾满溢", "满溢")),
    AlarmType("streetlight", "路灯故障", "01037", ("路灯",)),
    AlarmType("illegal_parking", "机动车乱停放", "09009", ("乱停车", "违停")),
    AlarmType("street_vendor", "占道经营", "09006", ("占道",)),
    AlarmType("garbage", "暴露垃圾", "06010", ("垃圾",)),
    AlarmType("sewage", "污水外溢", "06030", ("污水",)),
)
_ALARM_INDEX = {key.lower(): t for t in ALARM_TYPES for key in (t.key, t.label, *t.aliases)}


def alarm_type(name: str) -> AlarmType | None:
    """Find a known alarm type by key, Chinese name or alias."""
    return _ALARM_INDEX.get(name.strip().lower())
