#!/usr/bin/env python
"""The trivial QA baseline a model must beat: answer with the context sentence that shares most words (characters,
for Chinese) with the question; scored with the same EM/F1 as attnfit-eval.

    python scripts/qa_baseline.py outputs/cmrc2018-split/test.json [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnfit.data.qa import read_squad_json
from attnfit.data.qa_metrics import overlap_baseline, squad_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="SQuAD v1.1 JSON files (plain or .gz)")
    parser.add_argument("--json", help="write the scores here")
    args = parser.parse_args()
    results = {}
    for path in args.files:
        rows, _ = read_squad_json(path, require_located=False)  # score every question, as evaluation does
        predictions = {r["id"]: overlap_baseline(r["question"], r["context"]) for r in rows}
        scores = squad_scores(predictions, {r["id"]: r["answer_texts"] for r in rows})
        results[path] = scores
        print(f"{path}: {scores['count']} questions, EM {scores['exact_match']:.1f}, F1 {scores['f1']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
