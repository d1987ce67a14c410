"""Consultation knowledge base: articles in kb/data/articles/*.yaml searched with jieba tokens + BM25."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import jieba
import yaml

from kb.service import DATA_DIR

ARTICLES_DIR = DATA_DIR / "articles"
# Words that carry no meaning in a citizen's question; negations and places are kept on purpose.
STOPWORDS = frozenset(
    "的 了 吗 呢 吧 啊 呀 哦 么 嘛 是 我 你 他 她 它 我们 你们 请问 请 一下 怎么 怎样 如何 什么 哪里 哪儿 "
    "可以 能 能不能 要 想 问 问下 咨询 一个 这个 那个 有 在 和 与 及 或 就 都 也 还 吗？ ？ ? ， , 。 . ！ ! "
    "、 ： : ； ; （ ） ( ) 「 」 “ ” \" ' 有没有 是不是".split()
)


@dataclass(frozen=True, slots=True)
class Article:
    """One consultation article."""

    id: str
    title: str
    category: str
    questions: tuple[str, ...]
    answer: str
    keywords: tuple[str, ...]
    handoff: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result with its BM25 score."""

    article: Article
    score: float


def tokenize(text: str) -> list[str]:
    """Cut text into search tokens: jieba words plus character bigrams for robustness to typos."""
    text = text.lower()
    words = [w.strip() for w in jieba.lcut(text) if w.strip() and w.strip() not in STOPWORDS]
    han = "".join(re.findall(r"[\u4e00-\u9fff]", text))
    bigrams = [han[i : i + 2] for i in range(len(han) - 1)]
    return words + bigrams


def load_articles(directory: Path | None = None) -> list[Article]:
    """Read every YAML file of articles in the directory."""
    articles: list[Article] = []
    seen: set[str] = set()
    for path in sorted((directory or ARTICLES_DIR).glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            article = Article(
                id=str(raw["id"]),
                title=str(raw["title"]),
                category=str(raw.get("category", "其他")),
                questions=tuple(str(q) for q in raw.get("questions") or ()),
                answer=str(raw["answer"]).strip(),
                keywords=tuple(str(k) for k in raw.get("keywords") or ()),
                handoff=str(raw["handoff"]) if raw.get("handoff") else None,
            )
            if article.id in seen:
                raise ValueError(f"duplicate article id {article.id} in {path.name}")
            seen.add(article.id)
            articles.append(article)
    return articles


@dataclass(slots=True)
class KnowledgeIndex:
    """An in-memory BM25 index; a few hundred articles index in milliseconds."""

    articles: list[Article]
    k1: float = 1.5
    b: float = 0.75
    _docs: list[Counter[str]] = field(default_factory=list)
    _lengths: list[int] = field(default_factory=list)
    _idf: dict[str, float] = field(default_factory=dict)
    _avg: float = 1.0

    def __post_init__(self) -> None:
        """Build the index."""
        df: Counter[str] = Counter()
        for article in self.articles:
            # Title, questions and keywords count double: they say what the article is about.
            tokens = tokenize(article.answer)
            for text in (article.title, *article.questions, " ".join(article.keywords)):
                tokens += tokenize(text) * 2
            counts = Counter(tokens)
            self._docs.append(counts)
            self._lengths.append(sum(counts.values()))
            df.update(counts.keys())
        n = len(self.articles) or 1
        self._avg = (sum(self._lengths) / n) if self._lengths else 1.0
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    @classmethod
    def load(cls, directory: Path | None = None) -> KnowledgeIndex:
        """Load the shipped articles and index them."""
        return cls(load_articles(directory))

    def search(self, query: str, *, limit: int = 5, min_score: float = 0.0) -> list[Hit]:
        """Return the best articles for a question, best first."""
        terms = [t for t in tokenize(query[:500]) if t in self._idf]
        if not terms:
            return []
        hits: list[Hit] = []
        for article, counts, length in zip(self.articles, self._docs, self._lengths, strict=True):
            score = 0.0
            for term in terms:
                tf = counts.get(term, 0)
                if tf:
                    norm = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * length / self._avg))
                    score += self._idf[term] * norm
            if score > min_score:
                hits.append(Hit(article, score))
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits[:limit]

    def get(self, article_id: str) -> Article | None:
        """Return an article by id."""
        return next((a for a in self.articles if a.id == article_id), None)
