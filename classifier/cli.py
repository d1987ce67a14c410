"""`intake classify` and `intake classifier build|train|evaluate|correct|info`."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

import click

from core.settings import Settings, get_settings

BATCH = 256


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as err:
        raise click.ClickException(f"invalid settings: {err}") from err


def _taxonomy(settings: Settings) -> Any:
    from kb.service import Taxonomy

    return Taxonomy.load(getattr(settings, "kb_taxonomy_file", None),
                         extra=getattr(settings, "kb_taxonomy_extra_file", None))


def _load_classifier(settings: Settings) -> Any:
    from classifier.service import Classifier
    from classifier.store import current_path

    if not current_path(settings.var_dir).exists():
        click.echo("building the classifier model (first use, about a minute)…", err=True)
    return Classifier.load(var_dir=settings.var_dir, review_threshold=settings.classifier_review_threshold,
                           taxonomy=_taxonomy(settings))


def _lines(stream: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


def _parse(number: int, line: str) -> tuple[Any, str | None, str | None, str | None]:
    """Return (id, text, district, error) for one input line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return None, None, None, f"line {number}: not valid JSON ({err.msg})"
    if not isinstance(row, dict):
        return None, None, None, f"line {number}: expected a JSON object"
    row_id = row.get("id")
    text = row.get("text")
    if not isinstance(text, str):
        return row_id, None, None, f"line {number}: \"text\" must be a string"
    district = row.get("district")
    return row_id, text, district if isinstance(district, str) else None, None


def _output(row_id: Any, result: Any) -> dict[str, Any]:
    data = result.to_dict()
    return {
        "id": row_id,
        "suggestions": data["suggestions"],
        "major": data["major"],
        "major_name": data["major_name"],
        "major_score": data["major_score"],
        "department": data["department"],
        "department_name": data["department_name"],
        "district": data["district"],
        "address": data["address"],
        "needs_review": data["needs_review"],
        "reason": data["reason"],
    }


def register(main: click.Group) -> None:
    """Attach the classifier commands to the `intake` CLI."""
    main.add_command(classify)
    main.add_command(classifier)


@click.command()
@click.option("--input", "input_file", type=click.File("r", encoding="utf-8", errors="replace"), required=True,
              help="JSON Lines, one {\"id\": …, \"text\": …} per line ('-' for stdin).")
@click.option("--output", "output_file", type=click.File("w", encoding="utf-8", atomic=False), required=True,
              help="JSON Lines with the suggestions ('-' for stdout).")
@click.option("-k", "--top", "k", default=5, show_default=True, type=click.IntRange(3, 50),
              help="How many case types to list per text.")
def classify(input_file: IO[str], output_file: IO[str], k: int) -> None:
    """Suggest case types, 大类, department and address for every text of a JSON Lines file."""
    settings = _settings()
    service = _load_classifier(settings)
    counts: Counter[str] = Counter()
    pending: list[tuple[Any, str, str | None]] = []

    def flush() -> None:
        try:
            results: list[Any] = service.batch([p[1] for p in pending], districts=[p[2] for p in pending], k=k)
        except Exception:  # noqa: BLE001 - find the one bad text instead of losing the whole batch
            results = [_one(text, district) for _, text, district in pending]
        for (row_id, _, _), result in zip(pending, results, strict=True):
            if isinstance(result, str):
                counts["errors"] += 1
                line = {"id": row_id, "error": result, "suggestions": [], "needs_review": True}
            else:
                counts["review"] += result.needs_review
                line = _output(row_id, result)
            output_file.write(json.dumps(line, ensure_ascii=False) + "\n")
        pending.clear()

    def _one(text: str, district: str | None) -> Any:
        try:
            return service.suggest(text, district=district, k=k)
        except Exception as err:  # noqa: BLE001 - one line's failure is that line's error field
            return f"classification failed: {type(err).__name__}"

    for number, line in _lines(input_file):
        counts["lines"] += 1
        row_id, text, district, error = _parse(number, line)
        if error is not None or text is None:
            flush()  # keep the output in input order
            counts["errors"] += 1
            output_file.write(json.dumps({"id": row_id, "error": error, "suggestions": [], "needs_review": True},
                                         ensure_ascii=False) + "\n")
            continue
        pending.append((row_id, text, district))
        if len(pending) >= BATCH:
            flush()
    flush()
    output_file.flush()
    click.echo(f"{counts['lines']} lines: {counts['lines'] - counts['errors']} classified "
               f"({counts['review']} need review), {counts['errors']} errors — model {service.model_id}", err=True)


@click.group()
def classifier() -> None:
    """The case-type classifier: build, retrain from a city's cases, evaluate."""


@classifier.command("build")
@click.option("--force", is_flag=True, help="Retrain even when a model for the current data exists.")
def build(force: bool) -> None:
    """Train the model from the corpus (+ imported cases and corrections) and cache it under var/models."""
    from classifier.store import current_path, load_or_build

    settings = _settings()
    started = time.perf_counter()
    model, trained = load_or_build(var_dir=settings.var_dir, force=force)
    path = current_path(settings.var_dir)
    verb = "trained" if trained else "already built"
    click.echo(f"{model.model_id} {verb}: {model.n_examples} texts, {len(model.classes)} types "
               f"({', '.join(f'{k} {v}' for k, v in sorted(model.sources.items()))}) in "
               f"{time.perf_counter() - started:.1f}s → {path}")


@classifier.command("train")
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False), required=True,
              help="CSV of historical cases with the columns text and code.")
def train(source: str) -> None:
    """Import a city's historical cases (validated against the taxonomy) and retrain."""
    from pathlib import Path

    from classifier.corpus import import_cases
    from classifier.store import load_or_build

    settings = _settings()
    taxonomy = _taxonomy(settings)
    try:
        report = import_cases(Path(source), var_dir=settings.var_dir, known_codes=taxonomy.types)
    except (ValueError, UnicodeDecodeError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"accepted {report.accepted} cases over {len(report.per_code)} types; "
               f"{report.duplicates} already imported, {report.bad_rows} empty or without Chinese text, "
               f"{sum(report.unknown_codes.values())} with codes not in the taxonomy")
    if report.unknown_codes:
        shown = ", ".join(f"{c} ×{n}" for c, n in report.unknown_codes.most_common(10))
        click.echo(f"unknown codes: {shown}")
    majors = Counter(taxonomy.types[c].major_code for c in report.per_code.elements())
    if majors:
        click.echo("by 大类: " + ", ".join(f"{m} {taxonomy.majors.get(m, '')} {n}" for m, n in sorted(majors.items())))
    model, _ = load_or_build(var_dir=settings.var_dir)
    click.echo(f"model {model.model_id}: {model.n_examples} texts "
               f"({', '.join(f'{k} {v}' for k, v in sorted(model.sources.items()))})")


@classifier.command("evaluate")
@click.option("--split", type=click.Choice(["scenario", "voice", "random"]), default="scenario", show_default=True,
              help="scenario: new situations; voice: new situations in an unseen writing style; random: plain.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2, 10))
@click.option("--compare", is_flag=True, help="Cross-validate the feature/classifier grid instead (slow).")
@click.option("--per-class", "per_class", is_flag=True, help="List every type, not only the weakest.")
def evaluate(split: str, folds: int, compare: bool, per_class: bool) -> None:
    """Report accuracy, top-3, macro-F1, per-class results and confusions on a held-out part."""
    from classifier import evaluation
    from classifier.evaluation import holdout_report
    from classifier.spec import DEFAULT_SPEC
    from classifier.store import training_examples

    settings = _settings()
    taxonomy = _taxonomy(settings)
    examples = training_examples(settings.var_dir)

    def name(code: str) -> str:
        case_type = taxonomy.get(code)
        return f"{code} {case_type.name if case_type else '?'}"

    if compare:
        click.echo(f"{folds}-fold cross-validation, {split} split, {len(examples)} texts")
        click.echo("| features | classifier | accuracy | top-3 | macro-F1 | latency ms |")
        click.echo("|---|---|---|---|---|---|")
        for spec in evaluation.COMPARISON:
            metrics = evaluation.cross_validate(examples, spec=spec, split=split, n_splits=folds)  # type: ignore[arg-type]
            features, algo = spec.label().split(" ", 1)
            click.echo(f"| {features} | {algo} | {metrics.row()} |")
            sys.stdout.flush()  # rows take minutes each: show them as they come
        return
    report = holdout_report(examples, spec=DEFAULT_SPEC, split=split, n_splits=folds,  # type: ignore[arg-type]
                            review_threshold=settings.classifier_review_threshold)
    m = report.metrics
    click.echo(f"held-out ({split} split, 1/{folds} of {len(examples)} texts): {m.n} texts")
    click.echo(f"accuracy {m.accuracy:.3f}  top-3 {m.top3:.3f}  macro-F1 {m.macro_f1:.3f}  "
               f"latency {m.latency_ms:.2f} ms/text")
    click.echo(f"大类 right {report.major_accuracy:.3f}; department right (city-wide routing) "
               f"{report.department_accuracy:.3f}")
    click.echo("by voice: " + ", ".join(f"{v} {a:.3f}" for v, a in report.per_voice.items()))
    click.echo(f"score ≥ {report.review_threshold:.2f}: {report.auto_share:.1%} of texts, "
               f"{report.auto_accuracy:.3f} accurate; calibration error {report.expected_calibration_error:.3f}")
    rows = sorted(report.per_class, key=lambda r: (r.f1, r.code))
    click.echo("per class (precision recall F1 support)" + ("" if per_class else ", weakest 20:"))
    for r in rows if per_class else rows[:20]:
        click.echo(f"  {name(r.code):24} {r.precision:.2f} {r.recall:.2f} {r.f1:.2f} {r.support}")
    click.echo("most confused (true → predicted):")
    for true, pred, n in report.confused:
        click.echo(f"  {n:3}  {name(true)} → {name(pred)}")


@classifier.command("correct")
@click.option("--text", required=True, help="The citizen's text.")
@click.option("--code", required=True, help="The case type the operator accepted.")
def correct(text: str, code: str) -> None:
    """Record an operator's correction; the next build trains with it."""
    from classifier.corpus import record_correction

    settings = _settings()
    if not record_correction(text, code, var_dir=settings.var_dir, known_codes=_taxonomy(settings).types):
        raise click.ClickException("not recorded: empty text or unknown code")
    click.echo("recorded; run `intake classifier build` (or restart) to retrain")


@classifier.command("info")
def info() -> None:
    """Show whether a model for the current data is built and what it was trained on."""
    from classifier.store import current_path, load

    settings = _settings()
    path = current_path(settings.var_dir)
    if not path.exists():
        click.echo(f"not built yet ({path}); `intake classifier build` trains it")
        sys.exit(1)
    click.echo(json.dumps(load(path).describe(), ensure_ascii=False, indent=2))
