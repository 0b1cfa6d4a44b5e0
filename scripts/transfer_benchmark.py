#!/usr/bin/env python
"""Does pretraining pay off on real data? Pretrain once (or take ``--pretrained RUN``), then fine-tune on the
sentence-classification sets of Kim (2014) -- TREC, Subj, CR, MPQA -- pretrained vs from scratch (same
architecture, tokenizer and budget: ``finetune.from_scratch=true`` only re-initialises the weights), over
several seeds, and print test accuracy (mean ± std) beside Kim's CNN figures.

    python scripts/transfer_benchmark.py --quick                       # a few minutes: smoke test of the pipeline
    python scripts/transfer_benchmark.py --pretrained RUN --seeds 3 --json transfer.json
    python scripts/transfer_benchmark.py --pretrained RUN --settings scripts/transfer_settings.yaml  # README's table
    python scripts/transfer_benchmark.py --pretrain-args "experiment=wikitext2_mlm"   # pretrains first (hours)
    python scripts/transfer_benchmark.py --pretrain-args "experiment=wikitext2_transfer" --pretrain-task-text
    python scripts/transfer_benchmark.py --pretrained RUN --variants pretrained,scratch,adapted --adapt-steps 300 \\
        trainer.max_steps=600 finetune.layer_lr_decay=0.8           # extra overrides go to every attnfit-finetune
    python scripts/transfer_benchmark.py --pretrained RUN --select optimizer.lr=3e-4,1e-3,3e-3   # lr per variant

Data: ``--data DIR`` holds TREC.train.all, TREC.test.all, subj.all, custrev.all and mpqa.all (one sentence a line,
the first word is the 0-indexed label). Bytes that are not UTF-8 are read as cp1252; lines split on "\\n" only
(subj.all has 0x85 bytes, which are "…" in cp1252, not line breaks); lines with no text after the label are
dropped (4 in custrev.all, 3 in mpqa.all).

Fixed splits, written once as header-less TSV (``label<TAB>text``) under ``OUT/data/<set>/{train,validation,test}.tsv``
and independent of ``--seeds``:

* TREC: test = the official TREC.test.all (500); validation = a stratified 10% of TREC.train.all; train = the rest.
* Subj, CR, MPQA (no official split): a stratified 10% test and 10% validation held out, the rest train.

Stratified = within each class (labels in sorted order), the class's lines in file order are shuffled with one
``random.Random(0)`` per set; the first round(10% × class size) go to test (no-split sets only), the next
round(10% × class size) to validation, the rest to train; each split keeps file order. Every usable line lands in
exactly one split. ``--train-rows N`` (``--quick``) fine-tunes on a stratified seeded subsample of the train split
(``train-N.tsv``); validation and test stay whole.

Each run is ``attnfit-finetune pretrained=RUN data=files data.train=… data.validation=… data.test=… data.format=tsv
data.column_names=[label,text] seed=S finetune.from_scratch=… hydra.run.dir=OUT/runs/<set>/<variant>-seed<S>``;
it selects its best checkpoint by validation macro-F1 and scores the test split with it (``test/acc`` in its
``metrics.json``). ``--select KEY=V1,V2`` tunes one override per set and variant without touching the test split:
seed 0 runs every value, the value with the best validation macro-F1 runs the other seeds, and only the chosen
runs enter the table (so pretrained and from-scratch each get their own best learning rate, say).
``--select-seeds K`` chooses on the mean over seeds 0..K-1 instead, for a choice less at the mercy of one seed;
``--select-margin sd`` keeps the first value listed unless another beats its mean by more than the seeds' own spread
(the larger standard deviation of the two), so a tie within the noise does not move the setting.
``--pretrain-task-text`` (when the benchmark pretrains) adds the chosen sets' training sentences, without their labels,
to the pretraining corpus (task-adaptive pretraining, Gururangan et al. 2020): ``OUT/data/task-text.txt``, listed in
``data.train`` after the corpus of ``--pretrain-args``; no validation or test sentence is in it.
``--settings FILE`` (YAML) gives overrides for every run (``common``) and per variant and set (``pretrained: {trec:
[...]}``), as ``scripts/transfer_settings.yaml`` holds the ones validation chose for the README's table; a second
``--settings`` layers its lists after the first's (``scripts/transfer_settings_word.yaml``: validation's changes for
a word backbone), and the command line's overrides come after them all, so they win.
A run whose metrics.json exists is not redone; a failed run is reported and marked, and the benchmark goes on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # scripts/: `bench` imports from any working directory
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.common import usable_cpus

# Kim (2014), "Convolutional Neural Networks for Sentence Classification", test accuracy in %.
KIM = {"trec": (91.2, 93.6), "subj": (89.6, 93.4), "cr": (79.8, 85.0), "mpqa": (83.4, 89.6)}
# set name -> (train file, official test file or None)
FILES = {
    "trec": ("TREC.train.all", "TREC.test.all"),
    "subj": ("subj.all", None),
    "cr": ("custrev.all", None),
    "mpqa": ("mpqa.all", None),
}
DISPLAY = {"trec": "TREC", "subj": "Subj", "cr": "CR", "mpqa": "MPQA"}
VARIANTS = ("pretrained", "scratch", "adapted")
HOLDOUT = 0.1
SPLIT_SEED = 0
SPLIT_RULE = (
    "TREC: test = official TREC.test.all, validation = stratified 10% of TREC.train.all, train = the rest. "
    "Subj, CR, MPQA: stratified 10% test and 10% validation held out, the rest train. Stratified: per class "
    "(sorted labels), the class's lines shuffled with one random.Random(0) per set; the first round(10% x class "
    "size) to test (no-split sets), the next round(10% x class size) to validation, the rest to train; file "
    "order kept within each split. Lines with no text after the label are dropped; independent of --seeds."
)
QUICK_PRETRAIN = (
    "experiment=embedded_mlm data.seq_len=64 data.num_train_docs=3000 data.num_val_docs=200 model.dim=64 "
    "attention.num_heads=2 tokenizer.vocab_size=2000 trainer.max_steps=400 trainer.val_check_interval=200 "
    "trainer.limit_val_batches=4 scheduler.warmup_steps=20"
)
QUICK_FINETUNE = [
    "data.batch_size=32",
    "trainer.max_steps=150",
    "trainer.val_check_interval=50",
    "trainer.log_every_n_steps=10",
    "scheduler.warmup_steps=15",
    "callbacks.heatmaps=0",
]

Row = tuple[str, str]  # (label, text)


# ---------------------------------------------------------------------------------------------------- splits
def read_sentences(path: Path) -> tuple[list[Row], int]:
    """(label, text) for each line of a Kim-format file, and how many lines had no text (dropped)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    rows, dropped = [], 0
    for line in text.split("\n"):
        parts = line.replace("\t", " ").replace("\r", " ").split(None, 1)
        if not parts:
            continue  # blank line (the file's final newline)
        if len(parts) < 2 or not parts[1].strip():
            dropped += 1
            continue
        rows.append((parts[0], " ".join(parts[1].split())))
    return rows, dropped


def stratified(rows: list[Row], fractions: list[float], seed: int = SPLIT_SEED) -> list[list[Row]]:
    """Split ``rows`` into len(fractions) held-out parts (per class, round(f × class size) each) and the rest,
    last. Within each class the lines are shuffled with one ``random.Random(seed)``; each part keeps file order."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, (label, _) in enumerate(rows):
        by_class[label].append(i)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(by_class):
        indices = by_class[label][:]
        rng.shuffle(indices)
        start = 0
        for k, fraction in enumerate(fractions):
            n = round(fraction * len(indices))
            parts[k].extend(indices[start : start + n])
            start += n
        parts[-1].extend(indices[start:])
    return [[rows[i] for i in sorted(part)] for part in parts]


def subsample(rows: list[Row], n: int, seed: int = SPLIT_SEED) -> list[Row]:
    """A stratified seeded subsample of about ``n`` rows (at least one per class), in file order."""
    if n >= len(rows):
        return rows
    counts: dict[str, int] = defaultdict(int)
    for label, _ in rows:
        counts[label] += 1
    rng = random.Random(seed)
    keep: list[int] = []
    for label in sorted(counts):
        indices = [i for i, (lab, _) in enumerate(rows) if lab == label]
        rng.shuffle(indices)
        keep.extend(indices[: max(1, round(n * counts[label] / len(rows)))])
    return [rows[i] for i in sorted(keep)]


def make_splits(name: str, data_dir: Path) -> tuple[dict[str, list[Row]], int]:
    """The fixed train/validation/test rows of one set, and the number of dropped (empty) lines."""
    train_file, test_file = FILES[name]
    rows, dropped = read_sentences(data_dir / train_file)
    if test_file is not None:
        test, extra = read_sentences(data_dir / test_file)
        validation, train = stratified(rows, [HOLDOUT])
        return {"train": train, "validation": validation, "test": test}, dropped + extra
    test, validation, train = stratified(rows, [HOLDOUT, HOLDOUT])
    return {"train": train, "validation": validation, "test": test}, dropped


def tsv(rows: list[Row]) -> str:
    return "".join(f"{label}\t{text}\n" for label, text in rows)


def write_split(path: Path, rows: list[Row]) -> None:
    """Write once: an existing file must hold exactly these rows (else the runs would mix splits). Written
    whole or not at all, so instances sharing an ``--out`` never read each other's half-written split."""
    from attnfit.atomic import atomic_write

    content = tsv(rows)
    if path.exists():
        if path.read_text(encoding="utf-8") != content:
            sys.exit(f"{path} exists with different rows (another --data?); use another --out or remove it")
        return
    atomic_write(path, lambda tmp: tmp.write_text(content, encoding="utf-8"))


def prepare_data(name: str, data_dir: Path, out: Path, train_rows: int | None) -> dict:
    splits, dropped = make_splits(name, data_dir)
    folder = out / "data" / name
    files = {}
    for split, rows in splits.items():
        write_split(folder / f"{split}.tsv", rows)
        files[split] = folder / f"{split}.tsv"
    info = {
        "sizes": {split: len(rows) for split, rows in splits.items()},
        "classes": {
            split: dict(sorted((lab, sum(1 for r in rows if r[0] == lab)) for lab in {r[0] for r in rows}))
            for split, rows in splits.items()
        },
        "dropped_empty_lines": dropped,
    }
    if train_rows is not None and train_rows < len(splits["train"]):
        subset = subsample(splits["train"], train_rows)
        files["train"] = folder / f"train-{train_rows}.tsv"
        write_split(files["train"], subset)
        info["train_rows_used"] = len(subset)
    info["files"] = {split: str(path) for split, path in files.items()}
    return info


# ---------------------------------------------------------------------------------------------------- runs
def cli(verb: str, args: list[str], timeout: float | None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", f"attnfit.{verb}", *args]
    print("$ attnfit-" + verb, " ".join(shlex.quote(a) for a in args), flush=True)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(command, 124, "", f"{stderr}\ntimed out after {timeout} s")


def pretrained_max_len(pretrained: Path) -> int | None:
    """The pretrained model's max_len from its run directory's config.yaml or an export's config.json."""
    try:
        if (pretrained / "config.yaml").exists():
            from omegaconf import OmegaConf

            return int(OmegaConf.select(OmegaConf.load(pretrained / "config.yaml"), "model.max_len"))
        if (pretrained / "config.json").exists():
            config = json.loads((pretrained / "config.json").read_text())
            return int(config.get("max_len") or config.get("model", {}).get("max_len"))
    except Exception:  # an unusual layout: attnfit-finetune itself will say if data.seq_len does not fit
        return None
    return None


def names_seq_len(overrides: Iterable[str]) -> bool:
    """Whether ``overrides`` set the fine-tuning length themselves (then the model's max_len is not imposed)."""
    return any(o.startswith("data.seq_len=") for o in overrides)


def selection_grid(specs: list[str]) -> list[list[str]]:
    """``--select KEY=V1,V2`` specs -> every combination of their values, as override lists (``[[]]`` for none)."""
    axes = []
    for spec in specs:
        key, _, values = spec.partition("=")
        choices = [v for v in values.split(",") if v]
        if not key or not choices:
            sys.exit(f"--select {spec!r}: expected KEY=VALUE1,VALUE2,… (e.g. optimizer.lr=5e-4,2e-3)")
        axes.append([f"{key}={v}" for v in choices])
    return [list(combination) for combination in itertools.product(*axes)]


def run_tag(overrides: list[str]) -> str:
    """A run-directory suffix naming the selected values: ``["optimizer.lr=5e-4"]`` -> ``"-lr5e-4"``."""
    parts = [key.rsplit(".", 1)[-1] + value for key, _, value in (o.partition("=") for o in overrides)]
    return "".join("-" + re.sub(r"[^A-Za-z0-9.+_-]", "_", part) for part in parts)


@dataclass(frozen=True)
class Job:
    """One set and variant: its split files, the pretrained run, the benchmark's directory and options."""

    name: str
    variant: str
    files: dict[str, str]
    pretrained: Path
    out: Path
    args: argparse.Namespace
    settings: tuple[str, ...] = ()  # --settings: its common overrides, then this variant's and set's


def load_settings(path: str) -> dict[str, list[str]]:
    """``--settings FILE`` -> ``{"common": [...], "<variant>/<set>": [...]}``; exits with one line naming what is
    wrong (a missing file, an unknown variant or set, an entry that is not a list of ``key=value`` overrides)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        sys.exit(f"--settings {path}: cannot read it ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    if not isinstance(raw, dict):
        sys.exit(f"--settings {path}: expected a mapping of common and variants, got {type(raw).__name__}")

    def overrides(value: object, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and ("=" in v or v[:1] == "~") for v in value):
            sys.exit(f"--settings {path}: {where} must be a list of key=value (or ~key) overrides, got {value!r}")
        return value

    settings = {"common": overrides(raw.get("common", []), "common")}
    for variant, by_set in raw.items():
        if variant == "common":
            continue
        if variant not in VARIANTS:
            sys.exit(f"--settings {path}: unknown key {variant!r}; choose from common, {', '.join(VARIANTS)}")
        if not isinstance(by_set, dict):
            sys.exit(f"--settings {path}: {variant} must map sets to overrides, got {by_set!r}")
        for name, value in by_set.items():
            if name not in FILES:
                sys.exit(f"--settings {path}: unknown set {name!r} under {variant}; choose from {', '.join(FILES)}")
            settings[f"{variant}/{name}"] = overrides(value, f"{variant}.{name}")
    return settings


def finetune(job: Job, seed: int, selected: list[str] = ()) -> dict:
    """Fine-tunes one seed of ``job`` with the ``selected`` overrides, or reads the finished run back."""
    name, variant, files, args = job.name, job.variant, job.files, job.args
    run_dir = job.out / "runs" / name / f"{variant}{run_tag(list(selected))}-seed{seed}"
    metrics_file, record_file = run_dir / "metrics.json", run_dir / "transfer_benchmark.json"
    overrides = [
        f"pretrained={job.pretrained}",
        "data=files",
        f"data.train={files['train']}",
        f"data.validation={files['validation']}",
        f"data.test={files['test']}",
        "data.format=tsv",
        "data.column_names=[label,text]",
        f"seed={seed}",
        f"finetune.from_scratch={str(variant == 'scratch').lower()}",
        *([f"finetune.adapt_steps={args.adapt_steps}"] if variant == "adapted" else []),
        f"hydra.run.dir={run_dir}",
        "callbacks.progress_bar=none",
        *job.settings,
        *args.finetune_overrides,
        *selected,
    ]
    record: dict = {"set": name, "variant": variant, "seed": seed, "run_dir": str(run_dir), "selected": list(selected)}
    if metrics_file.exists():
        previous = json.loads(record_file.read_text()) if record_file.exists() else {}
        print(f"  {name} {variant} seed {seed}: done already ({metrics_file}), not redone", flush=True)
        if previous.get("overrides") not in (None, overrides):
            print("  WARNING: it was run with other overrides (see its transfer_benchmark.json); use another --out")
            record["other_overrides"] = previous["overrides"]
        return {**record, "seconds": previous.get("seconds"), "skipped": True, "metrics": read_metrics(metrics_file)}
    if run_dir.exists():  # an interrupted or failed run: start it afresh
        print(f"  {name} {variant} seed {seed}: {run_dir} has no metrics.json; removing it and running again")
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    proc = cli("finetune", overrides, args.timeout)
    seconds = time.perf_counter() - start
    record.update(seconds=seconds, skipped=False)
    if proc.returncode != 0 or not metrics_file.exists():
        tail = (proc.stderr or proc.stdout or "")[-2000:]
        print(f"  FAILED ({proc.returncode}) after {seconds:.0f} s; stderr tail:\n{tail}", flush=True)
        return {**record, "failed": True, "returncode": proc.returncode, "stderr_tail": tail}
    metrics = read_metrics(metrics_file)
    record_file.write_text(json.dumps({"seconds": seconds, "overrides": overrides}, indent=2) + "\n")
    acc = metrics.get("test/acc")
    print(f"  test/acc {acc if acc is None else f'{100 * acc:.2f}%'} in {seconds:.0f} s", flush=True)
    return {**record, "metrics": metrics}


def read_metrics(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------- summary
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict], sets: list[str], variants: list[str], seeds: int) -> dict:
    summary: dict = {"sets": {}, "unit": "test accuracy, %"}
    for name in sets:
        entry: dict = {"kim_cnn_rand": KIM[name][0], "kim_cnn_word2vec": KIM[name][1]}
        for variant in variants:
            chosen = [r for r in runs if r["set"] == name and r["variant"] == variant and not r.get("not_chosen")]
            accs = [100 * r["metrics"]["test/acc"] for r in chosen if "test/acc" in r.get("metrics", {})]
            seconds = [r["seconds"] for r in chosen if r.get("seconds") is not None and not r.get("failed")]
            item: dict = {"runs": len(accs), "of": seeds, "failed": sum(1 for r in chosen if r.get("failed"))}
            if accs:
                item["mean"], item["std"] = mean_sd(accs)
                item["accuracies"] = accs
            if seconds:
                item["seconds_per_run"] = statistics.mean(seconds)
            entry[variant] = item
        for variant in ("pretrained", "adapted"):
            if variant in entry and "scratch" in entry and "mean" in entry[variant] and "mean" in entry["scratch"]:
                entry[f"gain_{variant}"] = entry[variant]["mean"] - entry["scratch"]["mean"]
        summary["sets"][name] = entry
    for variant in ("pretrained", "adapted"):
        gains = [e[f"gain_{variant}"] for e in summary["sets"].values() if f"gain_{variant}" in e]
        if gains:
            summary[f"mean_gain_{variant}"] = statistics.mean(gains)
            summary[f"mean_gain_{variant}_sets"] = len(gains)
    return summary


def cell(item: dict | None) -> str:
    if not item:
        return "-"
    if "mean" not in item:
        return "failed" if item.get("failed") else "-"
    text = f"{item['mean']:.1f} ± {item['std']:.1f}"
    return text if item["runs"] == item["of"] else f"{text} ({item['runs']}/{item['of']})"


def print_table(summary: dict, variants: list[str]) -> None:
    names = {"pretrained": "pretrained", "scratch": "from scratch", "adapted": "adapted"}
    header = ["set", *(names[v] for v in variants)]
    gains = [v for v in ("pretrained", "adapted") if v in variants and "scratch" in variants]
    header += ["gain" if g == "pretrained" else "gain (adapted)" for g in gains]
    header += ["Kim CNN-rand", "Kim CNN-word2vec"]
    rows = []
    for name, entry in summary["sets"].items():
        row = [DISPLAY[name]]
        row += [cell(entry.get(v)) for v in variants]
        row += [f"{entry[f'gain_{g}']:+.1f}" if f"gain_{g}" in entry else "-" for g in gains]
        row += [f"{entry['kim_cnn_rand']:.1f}", f"{entry['kim_cnn_word2vec']:.1f}"]
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print("\n" + line + "\n" + "-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    gain_note = "; gain = pretrained − from scratch, in points" if gains else ""
    print(f"(test accuracy in %, mean ± std over seeds{gain_note})")
    for g in gains:
        if f"mean_gain_{g}" in summary:
            what = "pretrained" if g == "pretrained" else "adapted"
            n, gain = summary[f"mean_gain_{g}_sets"], summary[f"mean_gain_{g}"]
            print(f"mean gain ({what} − scratch) over {n} sets: {gain:+.2f} points")


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/sentence-classification", help="the Kim-format files")
    parser.add_argument("--sets", default="trec,subj,cr,mpqa", help="comma-separated: trec, subj, cr, mpqa")
    parser.add_argument("--seeds", type=int, default=None, help="fine-tuning seeds 0..N-1 (default 3; --quick 1)")
    parser.add_argument("--pretrained", help="a pretrained run directory, .ckpt or export (default: pretrain one)")
    parser.add_argument(
        "--pretrain-args",
        default=None,
        help='attnfit-train overrides when pretraining here (default "experiment=wikitext2_mlm"; --quick: a short '
        "MLM on the embedded corpus)",
    )
    parser.add_argument(
        "--pretrain-task-text",
        action="store_true",
        help="pretraining here also reads the chosen sets' training sentences, unlabelled (task-adaptive "
        "pretraining); the corpus must come from files (data=files)",
    )
    parser.add_argument("--variants", default="pretrained,scratch", help="comma-separated: pretrained,scratch,adapted")
    parser.add_argument("--adapt-steps", type=int, default=200, help="finetune.adapt_steps of the adapted variant")
    parser.add_argument("--out", default=None, help="default outputs/transfer-benchmark (--quick: …-quick)")
    parser.add_argument("--json", help="write every run's metrics, the splits and the summary here")
    parser.add_argument("--train-rows", type=int, default=None, help="fine-tune on a stratified subsample of train")
    parser.add_argument(
        "--settings",
        metavar="FILE",
        action="append",
        help="YAML of overrides: common ones and per variant and set (scripts/transfer_settings.yaml: the README's); "
        "given again, a file's lists follow the earlier files', so its overrides win",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per fine-tuning run")
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="choose this override per set and variant on validation: seed 0 runs every value (every combination "
        "of several --select), the best goes on to the other seeds; e.g. --select optimizer.lr=3e-4,1e-3,3e-3",
    )
    parser.add_argument("--select-metric", default="val/f1", help="the metrics.json key --select maximises")
    parser.add_argument(
        "--select-seeds",
        type=int,
        default=1,
        metavar="K",
        help="--select chooses on the mean over seeds 0..K-1 of every combination (default 1: seed 0 alone)",
    )
    parser.add_argument(
        "--select-margin",
        choices=("none", "sd"),
        default="none",
        help="sd: keep the first value of --select unless another's mean beats it by more than the larger standard "
        "deviation over the seeds of the two (needs --select-seeds ≥ 2); none: the best mean wins",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few minutes on 2 cores: 1 seed, short pretraining on the embedded corpus (without --pretrained), "
        f"{QUICK_FINETUNE[1]}, 1000 training rows",
    )
    parser.add_argument(
        "finetune_overrides", nargs="*", help="extra attnfit-finetune overrides, e.g. trainer.max_steps=600"
    )
    args = parser.parse_intermixed_args(argv)
    args.sets = [s.strip().lower() for s in args.sets.split(",") if s.strip()]
    args.variants = [v.strip().lower() for v in args.variants.split(",") if v.strip()]
    for name in args.sets:
        if name not in FILES:
            parser.error(f"unknown set {name!r}; choose from {', '.join(FILES)}")
    for variant in args.variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        parser.error("--seeds must be ≥ 1")
    if not 1 <= args.select_seeds <= args.seeds:
        parser.error(f"--select-seeds must be between 1 and --seeds ({args.seeds}), got {args.select_seeds}")
    if args.select_margin == "sd" and args.select_seeds < 2:
        parser.error("--select-margin sd needs a spread to compare with: give --select-seeds 2 or more")
    if args.pretrain_task_text and args.pretrained:
        parser.error("--pretrain-task-text changes the pretraining, which --pretrained skips")
    args.loaded_settings = {}  # args.settings stays the paths
    for path in args.settings or []:  # layered: a later file's overrides follow (and so win over) an earlier one's
        for key, overrides in load_settings(path).items():
            args.loaded_settings[key] = [*args.loaded_settings.get(key, []), *overrides]
    if args.pretrain_args is None:
        args.pretrain_args = QUICK_PRETRAIN if args.quick else "experiment=wikitext2_mlm"
    if args.out is None:
        args.out = "outputs/transfer-benchmark" + ("-quick" if args.quick else "")
    if args.quick:
        args.finetune_overrides = [*QUICK_FINETUNE, *args.finetune_overrides]  # the user's overrides win
        if args.train_rows is None:
            args.train_rows = 1000
    return args


def task_text_override(pretrain_args: str, sets: list[str], out: Path) -> str:
    """``data.train=[CORPUS…, OUT/data/task-text.txt]``: the pretraining corpus of ``pretrain_args`` and a file of
    the training sentences of ``sets`` (written here, labels dropped)."""
    from omegaconf import OmegaConf

    from attnfit.atomic import atomic_write
    from attnfit.cli import compose_config

    data = compose_config("train", shlex.split(pretrain_args)).data
    if data.source != "files":
        sys.exit(f"--pretrain-task-text needs a pretraining corpus from files (data=files), not {data.source}")
    corpus = OmegaConf.to_container(data, resolve=True)["train"]
    rows = (line for name in sets for line in (out / "data" / name / "train.tsv").read_text("utf-8").splitlines())
    text = "".join(row.split("\t", 1)[1] + "\n" for row in rows)
    path = out / "data" / "task-text.txt"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    files = [*([corpus] if isinstance(corpus, str) else corpus), str(path)]
    quoted = ",".join("'" + f.replace("\\", "\\\\").replace("'", "\\'") + "'" for f in files)
    return f"data.train=[{quoted}]"


def thread_cap_warning(environ: dict[str, str], cores: int) -> str | None:
    """A warning when ``OMP_NUM_THREADS`` holds pretraining below the machine's cores: the setting that lets two
    fine-tuning streams share the cores would otherwise make the recipe's hour of pretraining a slower one."""
    value = environ.get("OMP_NUM_THREADS", "")
    if not value.isdigit() or int(value) >= cores:
        return None
    return (
        f"warning: OMP_NUM_THREADS={value} limits pretraining to {value} of this machine's {cores} cores, and a "
        "time-budgeted recipe then runs fewer steps; unset it for the pretraining (--pretrained RUN reuses the result)"
    )


def pretrain_once(out: Path, pretrain_args: str, extra: tuple[str, ...] = ()) -> Path:
    """``OUT/pretrained``: pretrained with ``attnfit-train PRETRAIN_ARGS EXTRA`` unless a finished run is there."""
    pretrained = out / "pretrained"
    if (pretrained / "metrics.json").exists():
        print(f"pretrained model: {pretrained} done already, not redone")
        return pretrained
    warning = thread_cap_warning(dict(os.environ), usable_cpus())
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if pretrained.exists():
        shutil.rmtree(pretrained)
    start = time.perf_counter()
    overrides = [*shlex.split(pretrain_args), *extra, f"hydra.run.dir={pretrained}", "callbacks.progress_bar=none"]
    proc = cli("train", overrides, None)
    if proc.returncode != 0:
        sys.exit(f"pretraining failed:\n{proc.stderr[-3000:]}")
    print(f"  pretrained in {time.perf_counter() - start:.0f} s")
    return pretrained


def select_on_validation(job: Job, grid: list[list[str]], runs: list[dict], total: int) -> dict:
    """Fine-tunes seeds 0..K-1 (``--select-seeds``) of every combination in ``grid``, appending the runs to
    ``runs``; returns the choice: the combination with the best mean ``--select-metric`` (with ``--select-margin
    sd``, only if it beats the first combination by more than either's standard deviation over the seeds), and every
    mean."""
    name, variant, args = job.name, job.variant, job.args
    trials: list[list[dict]] = [[] for _ in grid]
    for selected, trial in zip(grid, trials, strict=True):
        for seed in range(args.select_seeds):
            print(f"[{len(runs) + 1}/{total}] {name} {variant} seed {seed} {' '.join(selected)}", flush=True)
            trial.append(finetune(job, seed, selected))
            runs.append(trial[-1])
    metric = args.select_metric
    values = [[r.get("metrics", {}).get(metric, float("-inf")) for r in trial] for trial in trials]
    scores = [statistics.mean(v) for v in values]
    best = max(range(len(grid)), key=scores.__getitem__)
    if args.select_margin == "sd" and best != 0:
        spread = max(statistics.stdev(values[0]), statistics.stdev(values[best]))
        if not scores[best] - scores[0] > spread:
            print(f"  {name} {variant}: {' '.join(grid[best])} leads by {scores[best] - scores[0]:.4f}, within the "
                  f"seeds' spread ({spread:.4f}); the first value stays")  # fmt: skip
            best = 0
    for i, trial in enumerate(trials):
        for run in trial:
            run["not_chosen"] = i != best
    print(f"  {name} {variant}: {' '.join(grid[best])} chosen ({metric} {scores[best]:.4f})")
    return {"chosen": grid[best], metric: scores, "seeds": args.select_seeds}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out, data_dir = Path(args.out).resolve(), Path(args.data).resolve()
    out.mkdir(parents=True, exist_ok=True)
    missing = [f for name in args.sets for f in FILES[name] if f and not (data_dir / f).exists()]
    if missing:
        sys.exit(f"{data_dir} lacks {', '.join(missing)} (see --data)")

    print("fixed splits (stratified, seed 0: 10% test and 10% validation; TREC: its official test, 10% validation):")
    data = {}
    for name in args.sets:
        data[name] = prepare_data(name, data_dir, out, args.train_rows)
        sizes = data[name]["sizes"]
        used = f", fine-tuning on {data[name]['train_rows_used']} of train" if "train_rows_used" in data[name] else ""
        dropped = data[name]["dropped_empty_lines"]
        print(
            f"  {name}: train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}"
            f"{f' ({dropped} empty lines dropped)' if dropped else ''}{used}"
        )

    if args.pretrained:
        pretrained = Path(args.pretrained).resolve()
    else:
        extra = (task_text_override(args.pretrain_args, args.sets, out),) if args.pretrain_task_text else ()
        pretrained = pretrain_once(out, args.pretrain_args, extra)
    fitted = None  # data=files defaults to 128 tokens: a model with fewer positions gets its own max_len
    if not names_seq_len(args.finetune_overrides):
        max_len = pretrained_max_len(pretrained)
        fitted = f"data.seq_len={max_len}" if max_len is not None and max_len < 128 else None

    runs: list[dict] = []
    selections: dict = {}
    grid = selection_grid(args.select)
    tried = args.select_seeds if len(grid) > 1 else 0  # seeds that every combination runs
    total = len(args.sets) * len(args.variants) * (args.seeds + tried * (len(grid) - 1))
    for name in args.sets:
        for variant in args.variants:
            settings = (*args.loaded_settings.get("common", []), *args.loaded_settings.get(f"{variant}/{name}", []))
            if fitted and not names_seq_len(settings):
                settings = (fitted, *settings)
            job, chosen = Job(name, variant, data[name]["files"], pretrained, out, args, settings), grid[0]
            if tried:  # seeds 0..K-1 of every combination; the best on validation goes on to the other seeds
                selection = select_on_validation(job, grid, runs, total)
                selections.setdefault(name, {})[variant], chosen = selection, selection["chosen"]
            for seed in range(tried, args.seeds):
                print(f"[{len(runs) + 1}/{total}] {name} {variant} seed {seed}", flush=True)
                runs.append(finetune(job, seed, chosen))

    summary = summarise(runs, args.sets, args.variants, args.seeds)
    print_table(summary, args.variants)
    if selections:
        over = "seed 0" if args.select_seeds == 1 else f"mean of seeds 0-{args.select_seeds - 1}"
        print(f"chosen on validation ({args.select_metric}, {over} of each):")
        for name, by_variant in selections.items():
            picks = [f"{v} {' '.join(sel['chosen'])}" for v, sel in by_variant.items()]
            print(f"  {DISPLAY[name]}: {'; '.join(picks)}")
    print("wall-clock per fine-tuning run (mean s):")
    for name, entry in summary["sets"].items():
        times = [f"{v} {entry[v]['seconds_per_run']:.0f}" for v in args.variants if "seconds_per_run" in entry[v]]
        print(f"  {DISPLAY[name]}: {', '.join(times) or '-'}")
    failed = [r for r in runs if r.get("failed")]
    if failed:
        print("FAILED runs: " + ", ".join(f"{r['set']}/{r['variant']}-seed{r['seed']}" for r in failed))
    skipped = sum(1 for r in runs if r.get("skipped"))
    if skipped:
        print(f"{skipped} of {len(runs)} runs were done already and not redone")

    result = {
        "command": [sys.executable, *sys.argv] if argv is None else [sys.argv[0], *argv],
        "pretrained": str(pretrained),
        "split_rule": SPLIT_RULE,
        "data": data,
        "variants": args.variants,
        "seeds": args.seeds,
        "finetune_overrides": args.finetune_overrides,
        "settings": {"files": args.settings, **args.loaded_settings} if args.settings else None,
        "selections": selections,
        "kim2014": {name: {"cnn_rand": KIM[name][0], "cnn_word2vec": KIM[name][1]} for name in args.sets},
        "summary": summary,
        "runs": runs,
    }
    json_path = Path(args.json) if args.json else out / "transfer_benchmark.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {json_path}")
    return result


if __name__ == "__main__":
    main()
