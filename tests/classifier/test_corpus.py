"""The shipped corpus and the imported data: every code known, scenario groups, validation on import."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from classifier.corpus import Example, import_cases, load_extra, record_correction
from classifier.evaluation import leak_groups, splits
from kb.service import Taxonomy


def test_corpus_covers_the_taxonomy(corpus: list[Example]) -> None:
    taxonomy = Taxonomy.load()
    counts = Counter(e.code for e in corpus)
    assert set(counts) == set(taxonomy.types)
    assert min(counts.values()) >= 5
    assert {e.voice for e in corpus} == {"call", "wechat", "order", "caption"}


def test_scenario_groups_keep_paraphrases_together(corpus: list[Example]) -> None:
    sample = [e for e in corpus if e.code in {"03007", "07006", "06010"}]
    groups = leak_groups(sample)
    by_scenario: dict[str, set[str]] = {}
    for e, g in zip(sample, groups, strict=True):
        by_scenario.setdefault(e.group, set()).add(g)
    assert all(len(g) == 1 for g in by_scenario.values())
    for train, test in splits(sample, split="scenario", n_splits=3):
        assert not {groups[i] for i in train} & {groups[i] for i in test}
    for train, test in splits(sample, split="voice"):
        assert len({sample[i].voice for i in test}) == 1
        assert not {groups[i] for i in train} & {groups[i] for i in test}


def test_import_and_corrections_feed_training(tmp_path: Path) -> None:
    csv_path = tmp_path / "cases.csv"
    csv_path.write_text("\ufeffText,Code\n井盖丢了很危险,01002\n油烟太大了,6027\n", encoding="utf-8")
    report = import_cases(csv_path, var_dir=tmp_path, known_codes={"01002", "06027"})
    assert report.accepted == 2 and report.rejected == 0 and report.per_code["06027"] == 1
    again = import_cases(csv_path, var_dir=tmp_path, known_codes={"01002", "06027"})
    assert again.accepted == 0 and again.duplicates == 2
    assert record_correction("桥下有人搭棚子住", "09017", var_dir=tmp_path)
    extra = load_extra(tmp_path)
    assert [(e.source, e.code) for e in extra] == [("cases", "01002"), ("cases", "06027"), ("corrections", "09017")]
    # A torn last line (crash while appending) is skipped, not fatal.
    with (tmp_path / "classifier" / "corrections.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"text": "半截')
    assert len(load_extra(tmp_path)) == 3


def test_supplement_is_valid_and_kept_apart_from_the_test_texts(corpus: list[Example]) -> None:
    import csv

    from classifier.corpus import load_supplement, training_files
    from classifier.duplicates import corpus_vectorizer
    from classifier.text import normalise_many

    supplement = load_supplement()
    assert len(supplement) > 500 and {e.source for e in supplement} == {"supplement"}
    assert {e.code for e in supplement} <= set(Taxonomy.load().types)
    assert not {e.text for e in supplement} & {e.text for e in corpus}
    assert any(p.suffix == ".tsv" for p in training_files(None))
    holdout = Path(__file__).parent / "data" / "holdout.tsv"
    with holdout.open(encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(fh, delimiter="\t")]
    # The supplement was written by the same hand as the hold-out texts: no paraphrases of them.
    vectorizer = corpus_vectorizer()
    sims = vectorizer.transform(normalise_many(texts)) @ vectorizer.transform(
        normalise_many(e.text for e in supplement)).T
    assert sims.max() < 0.42
    # Supplement texts are trained on, never tested on.
    sample = corpus[:400] + supplement[:50]
    for _, test in splits(sample, split="scenario", n_splits=3):
        assert all(sample[i].source != "supplement" for i in test)
