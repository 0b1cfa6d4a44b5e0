"""Sweeps and scaling out: a multirun that survives a failing run, DDP on 2 CPU processes, SLURM job rendering,
and every experiment config composing and running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY

EXACT = [o for o in TINY if not o.startswith(("data.batch_size", "trainer.max_steps"))] + [
    "task=clm",
    "data.shuffle=false",
    "trainer.max_steps=4",
]


def test_multirun_records_a_failing_run_and_goes_on(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("train", "-m", *TINY, "attention.num_heads=2,3", f"hydra.sweep.dir={sweep}")
    runs = {}
    for path in sweep.glob("*/status.json"):
        status = json.loads(path.read_text())
        heads = next(o for o in status["overrides"] if o.startswith("attention.num_heads="))
        runs[heads] = (path.parent, status)
    assert set(runs) == {"attention.num_heads=2", "attention.num_heads=3"}, proc.stdout[-2000:]
    good_dir, good = runs["attention.num_heads=2"]
    bad_dir, bad = runs["attention.num_heads=3"]
    assert (
        good["status"] == "completed"
        and good["objective"] == json.loads((good_dir / "metrics.json").read_text())["val/loss"]
    )
    assert bad["status"] == "failed" and "num_heads=3 does not divide model.dim=32" in bad["error"]
    assert not (bad_dir / "checkpoints").exists()

    # The report reads this real sweep: the completed run first, the failed one with its error, and a plot.
    report = run_cli("cli.report", str(sweep))
    assert report.stdout.index("attention.num_heads=2") < report.stdout.index("attention.num_heads=3")
    markdown = (sweep / "report.md").read_text()
    assert "completed" in markdown and "failed" in markdown and "does not divide" in markdown
    assert (sweep / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_ddp_on_two_cpu_processes_matches_one_process(run_cli, tmp_path):
    """2 processes × batch 4 (gloo) against 1 process × batch 8: the same global batches, the same weights."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_cli("train", *EXACT, "data.batch_size=8", f"hydra.run.dir={single}")
    run_cli("train", *EXACT, "trainer=ddp_cpu", "data.batch_size=4", f"hydra.run.dir={ddp}")
    a = torch.load(single / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(ddp / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, atol=1e-4, rtol=1e-4, msg=key)
    # One run directory, one set of logs and checkpoints, whatever the number of processes.
    writers = {path.name.split(".")[4] for path in (ddp / "tensorboard").glob("events.out.tfevents.*")}
    assert len(writers) == 1, writers  # event files of one process (the PID field): rank zero only
    names = sorted(p.name for p in (ddp / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("best-step") and names[1] == "last.ckpt", names
    assert json.loads((ddp / "status.json").read_text())["status"] == "completed"


def test_slurm_launcher_composes_and_renders_a_job(tmp_path):
    from hydra import compose, initialize_config_dir
    from submitit.slurm.slurm import _make_sbatch_string

    from attnfit.cli import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            [
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "trainer=ddp",
                "trainer.devices=4",
                "hydra.launcher.tasks_per_node=4",
                "hydra.launcher.gpus_per_node=4",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and cfg.trainer.strategy == "ddp"
    script = _make_sbatch_string(
        command="python -m attnfit.train trainer=ddp",
        folder=str(tmp_path),
        job_name="attnfit",
        partition=launcher.partition,
        nodes=launcher.nodes,
        ntasks_per_node=launcher.tasks_per_node,
        gpus_per_node=launcher.gpus_per_node,
        cpus_per_task=launcher.cpus_per_task,
        mem=f"{launcher.mem_gb}GB",
        time=launcher.timeout_min,
    )
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "srun",
        "python -m attnfit.train trainer=ddp",
    ):
        assert line in script


@pytest.fixture
def corpora(tmp_path) -> dict[str, Path]:
    """Stand-ins for ../shared/data written by the test: the experiments must not need the real corpora."""
    words = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "a",
        "is",
        "was",
        "he",
        "for",
        "it",
        "with",
        "as",
        "his",
        "on",
        "be",
        "at",
        "by",
        "i",
    ]
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(300)]
    root = tmp_path / "shared"
    (root / "wikitext-2").mkdir(parents=True)
    (root / "wikitext-2" / "train.txt").write_text("\n".join(lines))
    (root / "wikitext-2" / "valid.txt").write_text("\n".join(lines[:40]))
    (root / "tinyshakespeare").mkdir()
    (root / "tinyshakespeare" / "input.txt").write_text("\n".join(f"ROMEO: {line}" for line in lines))
    (root / "sms-spam").mkdir()
    spam = 'WIN a "prize" now'  # quotes are literal in the SMS file
    rows = [f"spam\t{spam}" if i % 4 == 0 else f"ham\t{line}" for i, line in enumerate(lines)]
    (root / "sms-spam" / "SMSSpamCollection.tsv").write_text("\n".join(rows))
    return {"ATTNFIT_SHARED_DATA": str(root)}


@pytest.mark.parametrize("experiment", ["embedded_mlm", "wikitext2_mlm", "tinyshakespeare_char"])
def test_pretraining_experiments_run(run_cli, tmp_path, corpora, monkeypatch, experiment):
    monkeypatch.setenv("ATTNFIT_SHARED_DATA", corpora["ATTNFIT_SHARED_DATA"])
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        f"experiment={experiment}",
        "debug=fast_dev_run",
        "data.seq_len=64",
        "model.dim=32",
        "tokenizer.vocab_size=300",
        "callbacks.progress_bar=none",
        f"hydra.run.dir={run_dir}",
    )
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_finetuning_experiment_runs(run_cli, tmp_path, corpora, monkeypatch):
    monkeypatch.setenv("ATTNFIT_SHARED_DATA", corpora["ATTNFIT_SHARED_DATA"])
    pretrained = tmp_path / "pretrained"
    run_cli("train", *TINY, "task=mlm", f"hydra.run.dir={pretrained}")
    run_dir = tmp_path / "sms"
    run_cli(
        "finetune",
        "experiment=sms_spam",
        f"pretrained={pretrained}",
        "debug=fast_dev_run",
        "data.seq_len=32",
        "callbacks.progress_bar=none",
        f"hydra.run.dir={run_dir}",
    )
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
