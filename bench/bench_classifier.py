"""Classifier latency and load time, as ratios to baselines measured in the same run.

Warm latency: one `Classifier.suggest` call (normalise, TF-IDF, SVM, temperature softmax, top-k, 大类,
address extraction, routing) against the bare TF-IDF transform of the same text and a dict lookup.
Load: a fresh interpreter that imports the service and loads the cached model, against a fresh
interpreter that only starts Python. Targets: p99 ≤ 10 ms per suggestion, load ≤ 2 s.
Run: `.venv/bin/python bench/bench_classifier.py [--var-dir var] [--n 2000]` (builds the model if missing).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.corpus import load_corpus  # noqa: E402
from classifier.linear import LinearModel  # noqa: E402
from classifier.service import Classifier  # noqa: E402
from classifier.store import current_path, load_or_build  # noqa: E402

P99_TARGET_MS = 10.0
LOAD_TARGET_S = 2.0


def _timings(fn: Callable[[str], object], texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        started = time.perf_counter()
        fn(text)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _fresh_process(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - started


def main() -> int:
    """Measure and print; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var")
    parser.add_argument("--n", type=int, default=2000, help="texts to time")
    args = parser.parse_args()

    model, trained = load_or_build(var_dir=args.var_dir)
    if trained:
        print(f"built {model.model_id} in {model.meta.get('train_seconds', 0):.1f}s")
    service = Classifier.load(var_dir=args.var_dir, build=False)
    rng = random.Random(0)
    corpus = [e.text for e in load_corpus()]
    texts = [rng.choice(corpus) for _ in range(args.n)]
    from classifier.text import normalise

    vectorise = model.parts[0].vector
    table = {t: i for i, t in enumerate(corpus)}

    for text in texts[:50]:  # warm caches (regexes, numpy, lazy imports)
        service.suggest(text)
    suggest = _timings(lambda t: service.suggest(t), texts)
    transform = _timings(lambda t: vectorise(normalise(t)), texts)
    lookup = _timings(lambda t: table.get(t), texts)
    batch_started = time.perf_counter()
    service.batch(texts)
    batch_ms = (time.perf_counter() - batch_started) * 1000 / len(texts)

    var = str(args.var_dir)
    load_code = ("from pathlib import Path; from classifier.service import Classifier; "
                 f"Classifier.load(var_dir=Path({var!r}), build=False)")
    python_only = min(_fresh_process("pass") for _ in range(3))
    load_runs = [_fresh_process(load_code) for _ in range(3)]
    load_s = statistics.median(load_runs)
    path = current_path(args.var_dir)
    started = time.perf_counter()
    LinearModel.load(path)
    file_s = time.perf_counter() - started

    p50, p99 = _pct(suggest, 0.50), _pct(suggest, 0.99)
    t50, t99 = _pct(transform, 0.50), _pct(transform, 0.99)
    l50 = _pct(lookup, 0.50)
    print(f"model {model.model_id}: {len(model.classes)} types, {model.n_examples} texts, "
          f"{path.stat().st_size / 1e6:.1f} MB")
    print(f"suggest        p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (n={len(texts)}; batch {batch_ms:.2f} ms/text)")
    print(f"tf-idf only    p50 {t50:6.2f} ms  p99 {t99:6.2f} ms  → suggest/transform p50 ×{p50 / t50:.1f}, "
          f"p99 ×{p99 / t99:.1f}")
    print(f"dict lookup    p50 {l50 * 1000:6.2f} µs          → suggest/lookup p50 ×{p50 / max(l50, 1e-6):.0f}")
    print(f"load (fresh process, imports + cached model) {load_s:.2f} s; bare python {python_only:.2f} s "
          f"→ ×{load_s / python_only:.1f}; npz file alone {file_s:.2f} s")
    ok_latency, ok_load = p99 <= P99_TARGET_MS, load_s <= LOAD_TARGET_S
    print(f"targets: p99 ≤ {P99_TARGET_MS:.0f} ms {'OK' if ok_latency else 'MISSED'}, "
          f"load ≤ {LOAD_TARGET_S:.0f} s {'OK' if ok_load else 'MISSED'}")
    return 0 if ok_latency and ok_load else 1


if __name__ == "__main__":
    sys.exit(main())
