"""data: the data pipeline's rate vs the raw tokenizer, and the cached rerun.

WikiText-2 through the mlm task's ``prepare_lm_data`` (data=files, task=mlm, BPE 8000, seq_len 128,
packing) in a fresh process with an empty cache, then again in a new process with the cache warm.
The steps are timed by ``prepare_lm_data`` itself (``Prepared.timings``: load_s, tokenizer_s,
tokenize_pack_s, unigram_baseline_s), so tokenizer training is timed separately and left out of the
rate. Pipeline rate = tokens / (load + tokenize + pack); raw rate = the same tokens /
``Tokenizer.encode_batch`` over the same lines (those ``load_text_splits`` returns for the same
files), in memory. After the first run, raw encoding and ``prepare_lm_data`` with the first run's
tokenizer (datasets caching off, so tokenizing and packing are redone) alternate twice more; the
rates use the best tokenize_pack_s of the three runs and the best raw encoding, so both saw the same
machine load. cached_rerun_s: ``prepare_lm_data`` start → first training batch in the second process
(interpreter and imports excluded; reported apart).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import SCRIPT, subprocess_env, table


def data_run(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``prepare_lm_data`` in this (fresh) process, with its own step timings; ``spec`` comes from the
    command line as JSON (``benchmark.py --_data-run SPEC``, started by :func:`run`)."""
    started = time.perf_counter()
    import attnfit.data
    import attnfit.training.datamodule  # noqa: F401
    from attnfit.cli import compose_config
    from attnfit.tasks.language_modeling import prepare_lm_data

    timings: dict[str, Any] = {"import_s": time.perf_counter() - started}
    cfg = compose_config(
        "train",
        [
            "data=files",
            "task=mlm",
            f"data.train={spec['train']}",
            f"data.validation={spec['validation']}",
            f"data.seq_len={spec['seq_len']}",
            f"tokenizer.vocab_size={spec['vocab_size']}",
            f"paths.cache_dir={spec['cache_dir']}",
            f"paths.output_dir={spec['cache_dir']}/run",
        ],
    )
    start = time.perf_counter()
    prepared = prepare_lm_data(cfg)
    timings["prepare_data_s"] = time.perf_counter() - start
    batch = next(iter(prepared.datamodule.train_dataloader()))
    timings["ready_s"] = time.perf_counter() - start  # prepare_lm_data start → first training batch
    timings.update(prepared.timings)  # load_s, tokenizer_s, tokenize_pack_s, unigram_baseline_s
    timings["rows"] = prepared.num_train
    timings["batch_tokens"] = int(batch["num_tokens"])
    if spec.get("raw"):
        import datasets

        from attnfit.data import load_text_splits

        files = {"train": spec["train"], "validation": spec["validation"]}
        splits = load_text_splits("files", files=files, cache_dir=Path(spec["cache_dir"]) / "raw-lines")
        texts = [t for split in ("train", "validation") for t in splits[split]["text"]]
        raw, pipeline = [], [prepared.timings["tokenize_pack_s"]]
        datasets.disable_caching()  # the repeats below redo the work instead of reloading the first run's result
        datasets.disable_progress_bars()
        for _ in range(spec.get("repeats", 2)):  # interleaved, so both rates see the same machine load
            start = time.perf_counter()
            encodings = prepared.tokenizer.encode_batch(texts, add_special_tokens=False)
            raw.append(time.perf_counter() - start)
            pipeline.append(prepare_lm_data(cfg, tokenizer=prepared.tokenizer).timings["tokenize_pack_s"])
        timings["raw_encode_s"] = min(raw)
        timings["tokenize_pack_best_s"] = min(pipeline)
        timings["tokens"] = sum(len(e.ids) for e in encodings) + len(texts)  # + one <eos> per line, as packing
        timings["lines"] = len(texts)
    return timings


def _subprocess_json(args: list[str], cwd: Path, timeout: float = 600) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=subprocess_env(), cwd=cwd,
        check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{"))
    return {**json.loads(line), "process_s": wall}


def run(args: argparse.Namespace, results: dict[str, Any], work: Path) -> None:
    data_dir = Path(args.data_dir)
    train, validation = data_dir / "train.txt", data_dir / "valid.txt"
    if args.quick:  # a tenth of the text: valid.txt as the training split, test.txt as validation
        train, validation = data_dir / "valid.txt", data_dir / "test.txt"
    if args.data_train:
        train, validation = Path(args.data_train), Path(args.data_validation or args.data_train)
    missing = [str(p) for p in (train, validation) if not p.is_file()]
    if missing:
        reason = f"data files not found: {', '.join(missing)} (give --data-dir, e.g. ../shared/data/wikitext-2)"
        results["data_skipped"] = reason
        print(f"\n== data pipeline: skipped: {reason}")
        return
    spec = {
        "train": str(train.resolve()),
        "validation": str(validation.resolve()),
        "seq_len": args.seq_len,
        "vocab_size": args.vocab,
        "cache_dir": str(work / "data-cache"),
    }
    first = _subprocess_json([str(SCRIPT), "--_data-run", json.dumps({**spec, "raw": True})], work)
    second = _subprocess_json([str(SCRIPT), "--_data-run", json.dumps(spec)], work)
    tokens = first["tokens"]
    pipeline_s = first["load_s"] + first["tokenize_pack_best_s"]
    results.update(
        data_train_file=str(train),
        data_lines=first["lines"],
        data_tokens=tokens,
        data_rows=first["rows"],
        data_load_s=first["load_s"],
        data_tokenizer_train_s=first["tokenizer_s"],
        data_tokenize_pack_s=first["tokenize_pack_s"],
        data_tokenize_pack_best_s=first["tokenize_pack_best_s"],
        data_unigram_baseline_s=first["unigram_baseline_s"],
        data_first_run_ready_s=first["ready_s"],
        data_raw_encode_s=first["raw_encode_s"],
        data_pipeline_tokens_per_s=tokens / pipeline_s,
        data_tokenize_pack_tokens_per_s=tokens / first["tokenize_pack_best_s"],
        data_raw_tokens_per_s=tokens / first["raw_encode_s"],
        pipeline_ratio_vs_raw_tokenizer=first["raw_encode_s"] / pipeline_s,
        cached_rerun_s=second["ready_s"],
        cached_rerun_load_s=second["load_s"],
        cached_rerun_tokenizer_s=second["tokenizer_s"],
        cached_rerun_tokenize_pack_s=second["tokenize_pack_s"],
        cached_rerun_unigram_baseline_s=second["unigram_baseline_s"],
        cached_rerun_import_s=second["import_s"],
        cached_rerun_process_s=second["process_s"],
    )
    nan = float("nan")
    rows = [
        ["load (load_text_splits)", first["load_s"], second["load_s"]],
        ["tokenizer (train BPE / cached)", first["tokenizer_s"], second["tokenizer_s"]],
        ["tokenize + pack (2 splits)", first["tokenize_pack_s"], second["tokenize_pack_s"]],
        ["  best of first + 2 uncached repeats", first["tokenize_pack_best_s"], nan],
        ["raw encode_batch, same lines (best of 2)", first["raw_encode_s"], nan],
        ["unigram baseline", first["unigram_baseline_s"], second["unigram_baseline_s"]],
        ["prepare_lm_data → first batch", first["ready_s"], second["ready_s"]],
        ["imports (not in the above)", first["import_s"], second["import_s"]],
        ["whole process", first["process_s"], second["process_s"]],
    ]
    table(
        f"data pipeline: {train.name} + {validation.name}, {first['lines']:,} lines, {tokens:,} tokens, "
        f"BPE {args.vocab}, seq_len {args.seq_len} (seconds)",
        ["step", "first run", "cached rerun"],
        rows,
    )
    print(
        f"  pipeline (load + tokenize + pack) {results['data_pipeline_tokens_per_s']:,.0f} tokens/s; "
        f"tokenize + pack alone {results['data_tokenize_pack_tokens_per_s']:,.0f}; raw encode_batch "
        f"{results['data_raw_tokens_per_s']:,.0f} tokens/s; ratio {results['pipeline_ratio_vs_raw_tokenizer']:.2f}"
    )
