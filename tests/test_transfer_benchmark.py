"""scripts/transfer_benchmark.py on a toy copy of the sentence-classification folder: fixed stratified splits that
cover every line once, both variants per set in the JSON, Kim's figures in the table, and a re-run that redoes
nothing."""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from tests.conftest import TINY

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "transfer_benchmark.py"
ROOT = SCRIPT.parents[1]

# A handful of fine-tuning steps; the tiny pretrained model fixes width, depth and max_len.
FT = [
    "data.seq_len=32",
    "data.batch_size=16",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "scheduler.warmup_steps=1",
    "callbacks.heatmaps=0",
]


@pytest.fixture(scope="module")
def tb():
    spec = importlib.util.spec_from_file_location("attnfit_transfer_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _lines(rng: random.Random, n: int, classes: int, cues: list[str]) -> list[str]:
    filler = ["the", "a", "of", "and", "is", "it", "this", "that", "with", "for", "on", "very", "so", "just"]
    lines = []
    for _ in range(n):
        label = rng.randrange(classes)
        words = rng.choices(filler, k=rng.randint(3, 8)) + [cues[label]] * 2
        rng.shuffle(words)
        lines.append(f"{label} {' '.join(words)} .")
    return lines


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """Kim-format files (label first, space-separated) whose labels a cue word gives away."""
    folder = tmp_path_factory.mktemp("sentence-classification")
    rng = random.Random(1)
    trec = ["who", "where", "when", "what", "how", "why"]
    (folder / "TREC.train.all").write_text("\n".join(_lines(rng, 300, 6, trec)) + "\n")
    (folder / "TREC.test.all").write_text("\n".join(_lines(rng, 60, 6, trec)) + "\n")
    (folder / "subj.all").write_text("\n".join(_lines(rng, 200, 2, ["plot", "brilliant"])) + "\n")
    cr = _lines(rng, 200, 2, ["broken", "great"])
    cr.insert(7, "0 ")  # a label without text, as in the real custrev.all: dropped
    (folder / "custrev.all").write_text("\n".join(cr) + "\n")
    # cp1252 bytes, as in the real subj.all: 0x85 is "…" there, not a line break
    mpqa = _lines(rng, 200, 2, ["fail", "support"])
    (folder / "mpqa.all").write_bytes(("\n".join(mpqa) + "\n").encode() + b"1 support \x85 well\n")
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    env = {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "attnfit.train", *TINY, "task=mlm", f"hydra.run.dir={run_dir}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=run_dir.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def _read_tsv(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        label, text = line.split("\t")
        rows.append((label, text))
    return rows


def test_splits_are_fixed_stratified_and_cover_every_line_once(tb, toy_data, tmp_path):
    for name in ("trec", "subj", "cr", "mpqa"):
        info = tb.prepare_data(name, toy_data, tmp_path, None)
        splits = {s: _read_tsv(Path(p)) for s, p in info["files"].items()}
        assert {s: len(r) for s, r in splits.items()} == info["sizes"]
        train_file, test_file = tb.FILES[name]
        source, dropped = tb.read_sentences(toy_data / train_file)
        assert dropped == (1 if name == "cr" else 0)
        # Every usable line once: as a multiset (toy lines may repeat) and by position.
        held = splits["train"] + splits["validation"] + ([] if test_file else splits["test"])
        assert collections.Counter(held) == collections.Counter(source)
        if test_file:
            assert splits["test"] == tb.read_sentences(toy_data / test_file)[0]  # the official test file
        parts = tb.stratified(source, [0.1] if test_file else [0.1, 0.1])
        assert sum(len(p) for p in parts) == len(source)
        # Stratified: each held-out split has round(10%) of every class.
        counts = collections.Counter(label for label, _ in source)
        for split in ("validation",) if test_file else ("validation", "test"):
            got = collections.Counter(label for label, _ in splits[split])
            assert got == {label: round(0.1 * n) for label, n in counts.items() if round(0.1 * n)}, (name, split)
        # Fixed: a second preparation (another --seeds, another day) gives the same files.
        again = tb.prepare_data(name, toy_data, tmp_path, None)
        assert again["sizes"] == info["sizes"]
    mpqa = _read_tsv(tmp_path / "data" / "mpqa" / "train.tsv") + _read_tsv(tmp_path / "data" / "mpqa" / "test.tsv")
    mpqa += _read_tsv(tmp_path / "data" / "mpqa" / "validation.tsv")
    assert ("1", "support … well") in mpqa
    # A train subsample keeps every class and its own file.
    info = tb.prepare_data("trec", toy_data, tmp_path, 30)
    subset = _read_tsv(Path(info["files"]["train"]))
    assert len(subset) == info["train_rows_used"] and {label for label, _ in subset} == set("012345")


def test_summary_marks_failed_runs(tb, capsys):
    runs = [
        {"set": "cr", "variant": "pretrained", "seed": 0, "seconds": 3.0, "metrics": {"test/acc": 0.8}},
        {"set": "cr", "variant": "pretrained", "seed": 1, "failed": True, "seconds": 1.0, "stderr_tail": "boom"},
        {"set": "cr", "variant": "scratch", "seed": 0, "seconds": 2.0, "metrics": {"test/acc": 0.7}},
        {"set": "cr", "variant": "scratch", "seed": 1, "seconds": 2.0, "metrics": {"test/acc": 0.6}},
    ]
    summary = tb.summarise(runs, ["cr"], ["pretrained", "scratch"], 2)
    entry = summary["sets"]["cr"]
    assert entry["pretrained"]["failed"] == 1 and entry["pretrained"]["runs"] == 1
    assert entry["gain_pretrained"] == pytest.approx(15.0)
    tb.print_table(summary, ["pretrained", "scratch"])
    out = capsys.readouterr().out
    assert "80.0 ± 0.0 (1/2)" in out and "65.0 ± 7.1" in out and "+15.0" in out and "79.8" in out


def test_select_tunes_each_variant_on_validation_only(tb, toy_data, tmp_path, monkeypatch, capsys):
    assert tb.selection_grid([]) == [[]]
    assert tb.selection_grid(["optimizer.lr=1e-3,3e-3", "finetune.dropout=0,0.1"]) == [
        ["optimizer.lr=1e-3", "finetune.dropout=0"],
        ["optimizer.lr=1e-3", "finetune.dropout=0.1"],
        ["optimizer.lr=3e-3", "finetune.dropout=0"],
        ["optimizer.lr=3e-3", "finetune.dropout=0.1"],
    ]
    assert tb.run_tag(["optimizer.lr=1e-3", "task.pooling=[a,b]"]) == "-lr1e-3-pooling_a_b_"
    with pytest.raises(SystemExit, match="KEY=VALUE1"):
        tb.selection_grid(["optimizer.lr"])

    # The fine-tuning runs are faked: validation F1 prefers lr 3e-3 for scratch and 1e-3 for pretrained, while
    # test accuracy would prefer the other; the table must follow validation and ignore the losing trials.
    calls = []

    def fake(job, seed, selected=()):
        name, variant = job.name, job.variant
        calls.append((variant, seed, tuple(selected)))
        lr = selected[0].split("=")[1]
        good = (lr == "3e-3") == (variant == "scratch")
        metrics = {"val/f1": 0.9 if good else 0.5, "test/acc": (0.6 if good else 0.99) + seed / 100}
        return {"set": name, "variant": variant, "seed": seed, "seconds": 1.0, "metrics": metrics}

    monkeypatch.setattr(tb, "finetune", fake)
    argv = [f"--data={toy_data}", "--sets=cr", "--seeds=2", "--pretrained=/nowhere", f"--out={tmp_path}"]
    result = tb.main([*argv, "--select", "optimizer.lr=1e-3,3e-3"])
    assert calls == [
        ("pretrained", 0, ("optimizer.lr=1e-3",)),
        ("pretrained", 0, ("optimizer.lr=3e-3",)),
        ("pretrained", 1, ("optimizer.lr=1e-3",)),
        ("scratch", 0, ("optimizer.lr=1e-3",)),
        ("scratch", 0, ("optimizer.lr=3e-3",)),
        ("scratch", 1, ("optimizer.lr=3e-3",)),
    ]
    assert result["selections"]["cr"]["pretrained"]["chosen"] == ["optimizer.lr=1e-3"]
    assert result["selections"]["cr"]["scratch"]["chosen"] == ["optimizer.lr=3e-3"]
    entry = result["summary"]["sets"]["cr"]
    assert entry["pretrained"]["accuracies"] == pytest.approx([60.0, 61.0]) and entry["pretrained"]["runs"] == 2
    assert "pretrained optimizer.lr=1e-3; scratch optimizer.lr=3e-3" in capsys.readouterr().out


def test_select_seeds_chooses_on_the_mean_over_the_first_seeds(tb, toy_data, tmp_path, monkeypatch, capsys):
    # Seed 0 alone prefers lr 1e-3 (0.80 against 0.78); seeds 0 and 1 together prefer 3e-3 (0.84 against 0.75).
    val_f1 = {("1e-3", 0): 0.80, ("3e-3", 0): 0.78, ("1e-3", 1): 0.70, ("3e-3", 1): 0.90}
    calls = []

    def fake(job, seed, selected=()):
        name, variant = job.name, job.variant
        calls.append((seed, tuple(selected)))
        lr = selected[0].split("=")[1]
        metrics = {"val/f1": val_f1.get((lr, seed), 0.0), "test/acc": 0.5 + seed / 100}
        return {"set": name, "variant": variant, "seed": seed, "seconds": 1.0, "metrics": metrics}

    monkeypatch.setattr(tb, "finetune", fake)
    argv = [f"--data={toy_data}", "--sets=cr", "--seeds=3", "--variants=pretrained", "--pretrained=/nowhere"]
    argv += [f"--out={tmp_path}", "--select", "optimizer.lr=1e-3,3e-3"]
    assert tb.main(argv)["selections"]["cr"]["pretrained"]["chosen"] == ["optimizer.lr=1e-3"]
    calls.clear()
    result = tb.main([*argv, "--select-seeds=2"])
    assert calls == [
        (0, ("optimizer.lr=1e-3",)),
        (1, ("optimizer.lr=1e-3",)),
        (0, ("optimizer.lr=3e-3",)),
        (1, ("optimizer.lr=3e-3",)),
        (2, ("optimizer.lr=3e-3",)),
    ]
    selection = result["selections"]["cr"]["pretrained"]
    assert selection["chosen"] == ["optimizer.lr=3e-3"] and selection["val/f1"] == pytest.approx([0.75, 0.84])
    entry = result["summary"]["sets"]["cr"]["pretrained"]  # the chosen runs only: seeds 0, 1 and 2 at 3e-3
    assert entry["runs"] == 3 and entry["accuracies"] == pytest.approx([50.0, 51.0, 52.0])
    assert "mean of seeds 0-1 of each" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tb.main([*argv, "--select-seeds=4"])
    assert "--select-seeds must be between 1 and --seeds (3), got 4" in capsys.readouterr().err


def test_select_margin_keeps_the_first_value_when_the_lead_is_within_the_seeds_spread(
    tb, toy_data, tmp_path, monkeypatch, capsys
):
    # Each mean leads the first value's (0.80): 3e-3 by 0.02 with seeds spread by 0.057; 1e-2 by 0.05 with 0.014.
    val_f1 = {"1e-3": (0.80, 0.80), "3e-3": (0.78, 0.86), "1e-2": (0.84, 0.86)}

    def fake(job, seed, selected=()):
        lr = selected[0].split("=")[1]
        metrics = {"val/f1": val_f1[lr][seed] if seed < 2 else 0.0, "test/acc": 0.5}
        return {"set": job.name, "variant": job.variant, "seed": seed, "seconds": 1.0, "metrics": metrics}

    monkeypatch.setattr(tb, "finetune", fake)
    argv = [f"--data={toy_data}", "--sets=cr", "--seeds=2", "--variants=pretrained", "--pretrained=/nowhere",
            f"--out={tmp_path}", "--select-seeds=2"]  # fmt: skip

    def chosen(*extra: str) -> list[str]:
        return tb.main([*argv, *extra])["selections"]["cr"]["pretrained"]["chosen"]

    assert chosen("--select", "optimizer.lr=1e-3,3e-3") == ["optimizer.lr=3e-3"]  # the best mean, by default
    assert chosen("--select", "optimizer.lr=1e-3,3e-3", "--select-margin=sd") == ["optimizer.lr=1e-3"]
    assert "optimizer.lr=3e-3 leads by 0.0200, within the seeds' spread (0.0566); the first value stays" in (
        capsys.readouterr().out
    )
    assert chosen("--select", "optimizer.lr=1e-3,1e-2", "--select-margin=sd") == ["optimizer.lr=1e-2"]
    with pytest.raises(SystemExit):
        tb.main([*argv, "--select", "optimizer.lr=1e-3,3e-3", "--select-margin=sd", "--select-seeds=1"])
    assert "--select-margin sd needs a spread to compare with: give --select-seeds 2 or more" in capsys.readouterr().err


def test_pretrain_task_text_adds_the_training_sentences_only(tb, toy_data, tmp_path, monkeypatch, capsys):
    from attnfit.cli import compose_config

    pretrained_with = []
    monkeypatch.setattr(tb, "pretrain_once", lambda out, args, extra=(): pretrained_with.append(extra) or Path("/p"))
    monkeypatch.setattr(tb, "finetune", lambda job, seed, selected=(): {"set": job.name, "variant": job.variant})
    out = tmp_path / "it's here"  # a quote in the path: the override must still name it exactly
    argv = [f"--data={toy_data}", "--sets=cr,mpqa", "--seeds=1", "--variants=pretrained", f"--out={out}"]
    tb.main([*argv, "--pretrain-task-text", "--pretrain-args", "experiment=wikitext2_mlm data.train=/corpus/wiki.txt"])
    (override,) = pretrained_with[0]
    data = compose_config("train", ["experiment=wikitext2_mlm", override]).data
    task_text = out / "data" / "task-text.txt"
    assert list(data.train) == ["/corpus/wiki.txt", str(task_text)]
    train = [text for name in ("cr", "mpqa") for _, text in _read_tsv(out / "data" / name / "train.tsv")]
    assert task_text.read_text(encoding="utf-8").splitlines() == train  # no label, no held-out sentence
    tb.main([*argv, "--pretrain-args", "experiment=wikitext2_mlm"])
    assert pretrained_with[1] == ()  # without the flag the corpus stays as it is
    with pytest.raises(SystemExit, match="needs a pretraining corpus from files"):
        tb.main([*argv, "--pretrain-task-text", "--pretrain-args", "experiment=embedded_mlm"])
    with pytest.raises(SystemExit):
        tb.main([*argv, "--pretrain-task-text", "--pretrained=/nowhere"])
    assert "--pretrain-task-text changes the pretraining, which --pretrained skips" in capsys.readouterr().err


def test_settings_file_gives_each_variant_and_set_its_own_overrides(tb, toy_data, tmp_path, monkeypatch):
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "common: [experiment=sentence_finetune, ~callbacks.extra]\n"
        "pretrained:\n  cr: [optimizer.lr=2e-3, task.pooling=max]\n"
        "scratch:\n  mpqa: [data.seq_len=16]\n"
    )
    commands = {}

    def fake_cli(verb, overrides, timeout):  # records the command and leaves the metrics a finished run leaves
        run_dir = Path(next(o for o in overrides if o.startswith("hydra.run.dir=")).partition("=")[2])
        commands[run_dir.parent.name, run_dir.name] = overrides
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text('{"test/acc": 0.5, "val/f1": 0.5}')
        return subprocess.CompletedProcess(overrides, 0, "", "")

    monkeypatch.setattr(tb, "cli", fake_cli)
    monkeypatch.setattr(tb, "pretrained_max_len", lambda pretrained: 64)
    argv = [f"--data={toy_data}", "--sets=cr,mpqa", "--seeds=1", "--pretrained=/nowhere", f"--out={tmp_path / 'o'}"]
    layer = tmp_path / "layer.yaml"  # a second file layered on the first: its lists follow the first's
    layer.write_text("common: [task.dropout=0.2]\npretrained:\n  cr: [task.pooling=mean]\n")
    result = tb.main([*argv, "--settings", str(settings), "--settings", str(layer), "task.dropout=0.3"])

    def after_fixed(overrides):  # what follows the benchmark's own overrides (the last is progress_bar=none)
        return overrides[overrides.index("callbacks.progress_bar=none") + 1 :]

    common = ["experiment=sentence_finetune", "~callbacks.extra", "task.dropout=0.2"]
    assert after_fixed(commands["cr", "pretrained-seed0"]) == [
        "data.seq_len=64",
        *common,
        "optimizer.lr=2e-3",
        "task.pooling=max",
        "task.pooling=mean",
        "task.dropout=0.3",
    ]
    assert after_fixed(commands["cr", "scratch-seed0"]) == ["data.seq_len=64", *common, "task.dropout=0.3"]
    assert after_fixed(commands["mpqa", "pretrained-seed0"]) == ["data.seq_len=64", *common, "task.dropout=0.3"]
    # a set's own data.seq_len replaces the one fitted to the model, for that set and variant only
    assert after_fixed(commands["mpqa", "scratch-seed0"]) == [*common, "data.seq_len=16", "task.dropout=0.3"]
    assert result["settings"]["files"] == [str(settings), str(layer)]
    assert result["settings"]["pretrained/cr"] == ["optimizer.lr=2e-3", "task.pooling=max", "task.pooling=mean"]

    for text, message in [
        ("pretrained:\n  sst2: [optimizer.lr=1e-3]\n", "unknown set 'sst2' under pretrained; choose from trec, subj"),
        ("finetuned:\n  cr: [optimizer.lr=1e-3]\n", "unknown key 'finetuned'; choose from common, pretrained"),
        ("common: optimizer.lr=1e-3\n", "common must be a list of key=value (or ~key) overrides, got 'optimizer"),
        ("scratch:\n  cr: [optimizer.lr]\n", "scratch.cr must be a list of key=value (or ~key) overrides"),
        ("[unclosed\n", "cannot read it (ParserError"),
    ]:
        settings.write_text(text)
        with pytest.raises(SystemExit, match=re.escape(message)):
            tb.main([*argv, "--settings", str(settings)])
    with pytest.raises(SystemExit, match="cannot read it .FileNotFoundError"):
        tb.main([*argv, "--settings", str(tmp_path / "missing.yaml")])
    # the shipped files name only known sets and variants, and their overrides compose into a fine-tuning config
    from attnfit.cli import compose_config

    shipped = tb.load_settings(str(ROOT / "scripts" / "transfer_settings.yaml"))
    assert {key.split("/")[0] for key in shipped} == {"common", "pretrained", "scratch"}
    word = tb.load_settings(str(ROOT / "scripts" / "transfer_settings_word.yaml"))  # layered on the first
    for key in shipped.keys() | word.keys():
        layered = [*shipped.get(key, []), *word.get(key, [])]
        compose_config("finetune", ["pretrained=/nowhere", *shipped["common"], *layered])


def test_benchmark_end_to_end_and_resumes(toy_data, pretrained, tmp_path, cache_dir):
    out, json_path = tmp_path / "bench", tmp_path / "result.json"
    env = {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        str(SCRIPT),
        f"--data={toy_data}",
        "--sets=trec,cr",
        "--seeds=1",
        f"--pretrained={pretrained}",
        f"--out={out}",
        f"--json={json_path}",
        *FT,
    ]

    def bench() -> str:
        proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    stdout = bench()
    result = json.loads(json_path.read_text())
    assert "stratified" in result["split_rule"] and result["data"]["cr"]["dropped_empty_lines"] == 1
    assert result["data"]["trec"]["sizes"] == {"train": 270, "validation": 30, "test": 60}
    for name in ("trec", "cr"):
        for variant in ("pretrained", "scratch"):
            (run,) = [r for r in result["runs"] if r["set"] == name and r["variant"] == variant]
            assert not run.get("failed"), run.get("stderr_tail")
            assert 0.0 <= run["metrics"]["test/acc"] <= 1.0 and run["seconds"] > 0
            assert (Path(run["run_dir"]) / "metrics.json").exists()
            assert 0.0 <= result["summary"]["sets"][name][variant]["mean"] <= 100.0
    scratch = OmegaConf.load(out / "runs" / "cr" / "scratch-seed0" / "config.yaml")
    tuned = OmegaConf.load(out / "runs" / "cr" / "pretrained-seed0" / "config.yaml")
    assert scratch.finetune.from_scratch is True and tuned.finetune.from_scratch is False and scratch.seed == 0
    assert Path(scratch.data.test).resolve() == (out / "data" / "cr" / "test.tsv").resolve()
    assert "Kim CNN-rand" in stdout and "Kim CNN-word2vec" in stdout and "from scratch" in stdout
    assert "TREC" in stdout and "91.2" in stdout and "85.0" in stdout and "mean gain" in stdout
    assert "train 270, validation 30, test 60" in stdout

    again = bench()
    assert again.count(": done already (") == 4 and "$ attnfit-finetune" not in again
    assert "4 of 4 runs were done already" in again and "WARNING" not in again
    assert json.loads(json_path.read_text())["summary"]["sets"]["cr"]["scratch"]["mean"] == pytest.approx(
        result["summary"]["sets"]["cr"]["scratch"]["mean"]
    )


def test_step_breakdown_times_the_pretrained_model_and_refuses_a_classifier(pretrained, tmp_path, monkeypatch):
    """scripts/step_breakdown.py on the benchmark's tiny MLM: the three timings, the vocabulary's share, the JSON."""
    from attnfit.errors import ConfigError

    spec = importlib.util.spec_from_file_location("attnfit_step_breakdown", SCRIPT.parent / "step_breakdown.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "breakdown.json"
    (row,) = module.main([str(pretrained), "--batch=4", "--seq-len=16", "--steps=2", f"--json={out}"])
    assert json.loads(out.read_text()) == [row]
    assert row["vocab_size"] == 300 and row["parameters"] > 300 * 32
    assert min(row["step_ms"], row["no_optimizer_ms"], row["encoder_ms"]) > 0
    assert row["vocabulary_share"] == pytest.approx((row["no_optimizer_ms"] - row["encoder_ms"]) / row["step_ms"])

    monkeypatch.setattr("attnfit.pretrained.load_artifact", lambda run: SimpleNamespace(task="classification"))
    with pytest.raises(ConfigError, match="is a classification model; step_breakdown times language models"):
        module.model_of("a-classifier-run")


def test_pretraining_under_a_thread_cap_is_warned_about(tb):
    warning = tb.thread_cap_warning({"OMP_NUM_THREADS": "1"}, 2)
    assert warning and "OMP_NUM_THREADS=1" in warning and "1 of this machine's 2 cores" in warning
    assert tb.thread_cap_warning({"OMP_NUM_THREADS": "2"}, 2) is None
    assert tb.thread_cap_warning({"OMP_NUM_THREADS": "8"}, 2) is None
    assert tb.thread_cap_warning({}, 2) is None
