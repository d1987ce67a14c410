"""Labelled texts for training: the shipped corpus, a city's imported cases and operators' corrections."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from classifier.text import han_count, scrub_phones

CORPUS_DIR = Path(__file__).parent / "data" / "corpus"
# Texts the classifier's author added after error analysis, for pairs of types the corpus blurs
# (TSV: code, voice, text). Kept apart from the corpus, whose files other people own.
SUPPLEMENT_DIR = Path(__file__).parent / "data" / "supplement"
MAX_TRAIN_CHARS = 2000
_append_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text; `group` ties together texts that must stay on the same side of a split."""

    text: str
    code: str
    voice: str = ""
    source: str = "corpus"
    group: str = ""


def var_paths(var_dir: Path) -> tuple[Path, Path]:
    """Return the files of imported cases and of operators' corrections under the var dir."""
    base = var_dir / "classifier"
    return base / "cases.jsonl", base / "corrections.jsonl"


def load_corpus(directory: Path = CORPUS_DIR) -> list[Example]:
    """Read the shipped corpus (every *.jsonl in the directory, in name order)."""
    examples: list[Example] = []
    # The corpus writers described each scenario once per voice, in the same order: the n-th text of a
    # type in every voice is one scenario. Grouping by it keeps paraphrases out of each other's test folds.
    seen: Counter[tuple[str, str]] = Counter()
    for path in sorted(directory.glob("*.jsonl")):
        for row in _read_jsonl(path):
            code, voice = str(row["code"]), str(row.get("voice") or "")
            n = seen[(code, voice)]
            seen[(code, voice)] += 1
            examples.append(Example(str(row["text"]), code, voice, path.stem, f"{code}#{n}"))
    return examples


def load_supplement(directory: Path = SUPPLEMENT_DIR) -> list[Example]:
    """Read the supplement (every *.tsv in the directory, in name order); each text is its own group."""
    examples: list[Example] = []
    for path in sorted(directory.glob("*.tsv")):
        with path.open(encoding="utf-8", newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh, delimiter="\t")):
                text, code = (row.get("text") or "").strip(), (row.get("code") or "").strip()
                if text and code:
                    examples.append(Example(text, code, (row.get("voice") or "").strip(), "supplement",
                                            f"{path.stem}#{i}"))
    return examples


def load_extra(var_dir: Path | None) -> list[Example]:
    """Read the city's imported cases and the operators' corrections, if any."""
    if var_dir is None:
        return []
    examples: list[Example] = []
    for path, source in zip(var_paths(var_dir), ("cases", "corrections"), strict=True):
        if path.exists():
            for i, row in enumerate(_read_jsonl(path)):
                examples.append(Example(str(row["text"]), str(row["code"]), "", source, f"{source}#{i}"))
    return examples


def training_files(var_dir: Path | None, directory: Path = CORPUS_DIR) -> list[Path]:
    """Return every file whose content goes into the model (for the cache fingerprint)."""
    files = sorted(directory.glob("*.jsonl")) + sorted(SUPPLEMENT_DIR.glob("*.tsv"))
    if var_dir is not None:
        files += [p for p in var_paths(var_dir) if p.exists()]
    return files


def _read_jsonl(path: Path) -> Iterable[dict[str, object]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of an appended file must not stop training
            if isinstance(row, dict) and isinstance(row.get("text"), str) and isinstance(row.get("code"), str):
                yield row


def _valid_text(text: str) -> bool:
    return bool(text.strip()) and han_count(text) >= 2


def record_correction(text: str, code: str, *, var_dir: Path, known_codes: Iterable[str] | None = None) -> bool:
    """Append an operator's accepted label to <var>/classifier/corrections.jsonl for the next build.

    The next `Classifier.load()` sees a new training-data fingerprint and retrains with the correction.
    Returns False (and records nothing) for an empty text or a code outside `known_codes`.
    """
    text = scrub_phones(text.strip())[:MAX_TRAIN_CHARS]
    if not _valid_text(text) or (known_codes is not None and code not in set(known_codes)):
        return False
    _, path = var_paths(var_dir)
    row = {"text": text, "code": code, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    _append(path, [row])
    return True


def _append(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with _append_lock, path.open("a", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@dataclass(slots=True)
class ImportReport:
    """What `train --from cases.csv` accepted and rejected."""

    accepted: int = 0
    duplicates: int = 0
    unknown_codes: Counter[str] = field(default_factory=Counter)
    bad_rows: int = 0
    per_code: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        """Count every row that was not imported."""
        return self.bad_rows + sum(self.unknown_codes.values())


def import_cases(path: Path, *, var_dir: Path, known_codes: Iterable[str]) -> ImportReport:
    """Validate a city's historical cases (CSV with columns text, code) and add them to the training data."""
    known = set(known_codes)
    report = ImportReport()
    cases_path, _ = var_paths(var_dir)
    existing = {(str(r["text"]), str(r["code"])) for r in _read_jsonl(cases_path)} if cases_path.exists() else set()
    rows: list[dict[str, str]] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "text" not in columns or "code" not in columns:
            raise ValueError(f"{path.name}: needs the columns text and code (found: {', '.join(columns) or 'none'})")
        for raw in reader:
            text = (raw.get(columns["text"]) or "").strip()[:MAX_TRAIN_CHARS]
            code = (raw.get(columns["code"]) or "").strip()
            if code.isdigit() and len(code) < 5:
                code = code.zfill(5)  # spreadsheets drop the leading zero of 06010
            if not _valid_text(text) or not code:
                report.bad_rows += 1
                continue
            if code not in known:
                report.unknown_codes[code] += 1
                continue
            if (text, code) in existing:
                report.duplicates += 1
                continue
            existing.add((text, code))
            rows.append({"text": text, "code": code})
            report.accepted += 1
            report.per_code[code] += 1
    if rows:
        _append(cases_path, rows)
    return report
