#!/usr/bin/env python
"""The CMRC 2018 split the README's figures use: train = the trial set + 75% of dev's paragraphs; the other 25%
of dev's paragraphs (seeded, by paragraph, so no context is in both) are held out as validation and test halves.

    python scripts/cmrc2018_split.py --data ../shared/data/cmrc2018 --out outputs/cmrc2018-split

Writes train.json, validation.json and test.json (SQuAD v1.1 format), and contexts.txt (the training paragraphs'
contexts, one a line: the unlabelled text that experiment=cmrc2018_mlm pretrains on), and prints the counts.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def paragraphs(path: Path) -> list[tuple[str, dict]]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return [(article.get("title", ""), paragraph) for article in data for paragraph in article["paragraphs"]]


def write(path: Path, items: list[tuple[str, dict]]) -> int:
    articles = [{"title": title, "paragraphs": [paragraph]} for title, paragraph in items]
    path.write_text(json.dumps({"version": "cmrc2018-split", "data": articles}, ensure_ascii=False), encoding="utf-8")
    return sum(len(paragraph["qas"]) for _, paragraph in items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cmrc2018", help="folder with cmrc2018_{trial,dev}.json")
    parser.add_argument("--out", default="outputs/cmrc2018-split")
    parser.add_argument("--held-out", type=float, default=0.25, help="fraction of dev's paragraphs held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data, out = Path(args.data), Path(args.out)
    trial, dev = paragraphs(data / "cmrc2018_trial.json"), paragraphs(data / "cmrc2018_dev.json")
    order = list(range(len(dev)))
    random.Random(args.seed).shuffle(order)
    cut = round(args.held_out * len(dev))
    held = [dev[i] for i in sorted(order[:cut])]
    train = trial + [dev[i] for i in sorted(order[cut:])]
    out.mkdir(parents=True, exist_ok=True)
    counts = {
        "train": write(out / "train.json", train),
        "validation": write(out / "validation.json", held[: len(held) // 2]),
        "test": write(out / "test.json", held[len(held) // 2 :]),
    }
    contexts = "\n".join(" ".join(paragraph["context"].split()) for _, paragraph in train)
    (out / "contexts.txt").write_text(contexts + "\n", encoding="utf-8")
    paragraphs_of = {"train": len(train), "validation": len(held) // 2, "test": len(held) - len(held) // 2}
    for split, n in counts.items():
        print(f"{split:10s} {n:5d} questions in {paragraphs_of[split]:4d} paragraphs -> {out / (split + '.json')}")


if __name__ == "__main__":
    main()
