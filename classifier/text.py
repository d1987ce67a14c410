"""Text normalisation and the jieba tokenizer shared by training, prediction and duplicate checks."""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
USERDICT = DATA_DIR / "userdict.txt"

# Placeholders are single symbols so that char n-grams see "a number here" rather than digit noise.
PHONE, DATE, TIME, NUM = "☎", "㏐", "㏋", "#"

_PHONE_RE = re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)|(?<!\d)0\d{2,3}-?\d{7,8}(?!\d)")
_DATE_RE = re.compile(
    r"\d{2,4}\s*[年./-]\s*\d{1,2}\s*[月./-]\s*\d{1,2}\s*[日号]?|\d{1,2}\s*月\s*\d{1,2}\s*[日号]|\d{2,4}\s*年"
)
_TIME_RE = re.compile(r"\d{1,2}\s*[:：]\s*\d{2}|\d{1,2}\s*[点时]\s*(?:\d{1,2}\s*分|半|多)?")
_NUM_RE = re.compile(r"\d+(?:\.\d+)?")
_SPACE_RE = re.compile(r"\s+")
# Latin words are rare in the corpus, so a stray "help" or "hhh" would get a huge IDF and outvote the Chinese
# text; only the abbreviations citizens really use for things we handle are kept.
_LATIN_RE = re.compile(r"[a-z]+")
_LATIN_KEEP = frozenset({"led", "ktv", "atm", "catv", "sos", "wc", "pm", "suv", "cng", "lng", "app", "ic", "gps",
                         "wifi", "bus", "brt", "etc", "kfc", "usb"})
# The same for "!!!" or "😡😡": a run of punctuation or symbols says no more than one of them.
_RUN_RE = re.compile(r"([^\w\s☎㏐㏋#])\1+")
_INVISIBLE_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2060\ufeff]")

# Operator boilerplate appears in every class; keeping it would only teach the model the writer's habits.
_WHO = r"(?:有|据)?(?:市民|群众|诉求人|来电人|反映人|网友|居民|热线)"
_SAYS = r"(?:反映|称|表示|投诉|举报|求助)"
_OPENING_RE = re.compile(
    rf"^(?:{_WHO}?(?:来电|致电|留言){_SAYS}?|{_WHO}{_SAYS}|接群众诉求)\s*[：:，,]?\s*"
)
_CLOSING_RE = re.compile(
    r"[，,。；;！!]?\s*(?:请|望|希望|要求|恳请|麻烦)(?:相关|有关)?(?:部门|单位)?(?:尽快|及时|马上|赶紧)?"
    r"(?:派人)?(?:核实|核查|查看|现场查看后)?(?:处理|处置|解决|跟进)(?:一下)?[。！!]*\s*$"
)


def normalise(text: str) -> str:
    """Return the text in canonical form: NFKC, lower case, placeholders, no boilerplate."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PHONE_RE.sub(PHONE, text)
    text = _DATE_RE.sub(DATE, text)
    text = _TIME_RE.sub(TIME, text)
    text = _NUM_RE.sub(NUM, text)
    text = _LATIN_RE.sub(lambda m: m.group(0) if m.group(0) in _LATIN_KEEP else " ", text)
    text = _RUN_RE.sub(r"\1", _INVISIBLE_RE.sub("", text))
    text = _SPACE_RE.sub(" ", text).strip()
    stripped = _OPENING_RE.sub("", text, count=1)
    stripped = _CLOSING_RE.sub("", stripped)
    # A text that is nothing but boilerplate keeps its words rather than becoming empty.
    return stripped or text


def scrub_phones(text: str) -> str:
    """Replace phone numbers by the placeholder, so stored training texts carry no contact data."""
    return _PHONE_RE.sub(PHONE, text)


def normalise_many(texts: Iterable[str]) -> list[str]:
    """Normalise a batch (used as the first step of the pipeline)."""
    return [normalise(t) for t in texts]


def han_count(text: str) -> int:
    """Count the CJK ideographs in a text."""
    return sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")


class _Segmenter:
    """A private jieba tokenizer with the domain dictionary, built once per process on first use."""

    def __init__(self) -> None:
        """Create the holder; the dictionary loads lazily."""
        self._tok: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """Return the initialised tokenizer (jieba is imported only when word features are used)."""
        if self._tok is None:
            with self._lock:
                if self._tok is None:
                    import jieba

                    jieba.setLogLevel(logging.WARNING)
                    tok = jieba.Tokenizer()
                    tok.initialize()
                    for word, freq in user_words():
                        tok.add_word(word, freq)
                    self._tok = tok
        return self._tok


_SEGMENTER = _Segmenter()


def user_words(path: Path = USERDICT) -> list[tuple[str, int | None]]:
    """Read the domain dictionary (word [freq]) and add the gazetteer's place names."""
    words: list[tuple[str, int | None]] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            words.append((parts[0], int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None))
    from classifier.address import Gazetteer

    words.extend((name, None) for name in Gazetteer.load().all_names())
    return words


def tokenize(text: str) -> list[str]:
    """Split normalised text into jieba words, dropping spaces and punctuation (module-level: picklable)."""
    return [w for w in _SEGMENTER.get().lcut(text) if w.strip() and not _is_punct(w)]


def _is_punct(word: str) -> bool:
    return all(unicodedata.category(ch)[0] in "PZS" for ch in word) and word not in (PHONE, DATE, TIME, NUM)
