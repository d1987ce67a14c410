"""Understand a citizen's SMS reply: an opt-out, a satisfaction rating, or free text that may report a problem."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# The survey offers 1 满意 / 2 基本满意 / 3 不满意; the workflow rates 1-5. 满意 is the top of the scale,
# 不满意 the bottom and 基本满意 the middle, so the mapping keeps the meaning rather than the digit.
RATING_SCORES: dict[str, int] = {"1": 5, "2": 3, "3": 1}
RATING_WORDS: dict[str, str] = {
    "非常满意": "1", "满意": "1", "很满意": "1",
    "基本满意": "2", "一般": "2", "还行": "2",
    "不满意": "3", "很不满意": "3", "非常不满意": "3",
}
# 退订 / T / TD are what Chinese SMS users type (and what "回T退订" promises); the others are common variants.
OPT_OUT_WORDS = frozenset({"t", "td", "退订", "退订短信", "取消订阅", "取消短信", "退", "unsubscribe", "stop"})

_SEPARATORS = " \t\r\n,，.。!！?？:：;；、~～-—_*#"
_RATING = re.compile(
    r"^(?:(?P<digit>[123])(?P<word_after>非常满意|很满意|基本满意|不满意|满意)?|"
    r"(?P<word>非常不满意|很不满意|非常满意|很满意|基本满意|不满意|满意|一般|还行))"
    r"(?:[" + re.escape(_SEPARATORS) + r"]+(?P<comment>.*)|$)",
    re.S,
)
_HAN = re.compile(r"[\u4e00-\u9fff]")
# Things people report to a 数字城管 hotline; a reply mentioning one of them is worth a draft.
_PROBLEM_CUES = (
    "坏", "破", "损", "堵", "漏", "积水", "垃圾", "乱", "占道", "违章", "违建", "违法", "噪音", "噪声", "扰民", "臭",
    "脏", "倒", "塌", "缺", "没人管", "投诉", "举报", "反映", "问题", "不亮", "摆摊", "停车", "井盖", "路灯", "广告",
    "油烟", "施工", "渣土", "污水", "树", "绿化", "下水道", "窨井", "隐患", "危险", "着火", "冒烟", "烧", "挖",
)
_COURTESY = (
    "谢谢", "感谢", "多谢", "好的", "好", "收到", "知道了", "嗯", "ok", "辛苦了", "你好", "您好", "在吗", "再见",
)


@dataclass(frozen=True, slots=True)
class OptOut:
    """The citizen wants no more SMS."""


@dataclass(frozen=True, slots=True)
class RatingReply:
    """A survey answer: the survey choice (1/2/3), the 1-5 score, and any words after it."""

    choice: str
    score: int
    comment: str | None


@dataclass(frozen=True, slots=True)
class FreeText:
    """Anything else."""

    text: str


Reply = OptOut | RatingReply | FreeText


def normalise(text: str) -> str:
    """NFKC (full-width digits and letters become ASCII), trimmed, lower case."""
    return unicodedata.normalize("NFKC", text).strip().lower()


def classify(text: str) -> Reply:
    """Tell an opt-out, a rating and free text apart."""
    norm = normalise(text)
    bare = norm.strip(_SEPARATORS)
    if bare in OPT_OUT_WORDS:
        return OptOut()
    match = _RATING.match(bare)
    if match:
        word = match.group("word") or match.group("word_after")
        digit = match.group("digit")
        choice = digit or RATING_WORDS[str(word)]
        # "1不满意" contradicts itself: better a seat reads it than a wrong score reaches the workflow.
        if digit and word and RATING_WORDS[word] != digit:
            return FreeText(text.strip())
        comment = (match.group("comment") or "").strip() or None
        return RatingReply(choice=choice, score=RATING_SCORES[choice], comment=comment)
    return FreeText(text.strip())


def looks_like_report(text: str, *, case_type_names: tuple[str, ...] = ()) -> bool:
    """Guess whether free text describes a problem (then a seat gets a draft, not just a message)."""
    norm = normalise(text)
    core = norm
    for word in _COURTESY:
        core = core.replace(word, "")
    han = len(_HAN.findall(core))
    if han < 5:
        return False
    if any(name and name in norm for name in case_type_names):
        return True
    if any(cue in norm for cue in _PROBLEM_CUES):
        return True
    # A long message with no cue is still more likely a report than small talk.
    return han >= 20
