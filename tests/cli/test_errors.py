"""The traceback families of the adversarial pass: each bad input stops with exit code 2 and one line naming the
value, why, and the valid choices or the fix — never a traceback. Config mistakes are checked before any data
work, so most of these runs take only the start-up; one tiny classifier (and its export) serves the rest."""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from attnfit.cli import CONFIG_DIR
from attnfit.errors import ConfigError
from attnfit.recipes.checks import check_common
from attnfit.recipes.predict import check_counts
from attnfit.runs.status import run_recorded
from attnfit.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY, cli_env, python_m


def cli(cache_dir: Path, cwd: Path, verb: str, *args: str) -> subprocess.CompletedProcess:
    return python_m(f"attnfit.{verb}", list(args), cwd, cli_env(cache_dir))


def assert_one_line(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert expected in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny classifier run (``run``) and its export (``export``), trained once for this module."""
    root = tmp_path_factory.mktemp("errors")
    tiny = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check"))]
    train = cli(cache_dir, root, "train", *tiny, "task=classification", "data=embedded_classification",
                "trainer.max_steps=2", "trainer.val_check_interval=2", f"hydra.run.dir={root / 'run'}")  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    exported = cli(cache_dir, root, "export", f"checkpoint={root / 'run'}", f"out={root / 'export'}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    return root


def composed(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


# Trainer options Lightning accepts when built but fails on (or silently misreads) later, and loader options:
# all checked before any data work, by Lightning's rules (fast: in process).
TRAINER_AND_LOADER = [
    ("trainer.precision=fp7", "unknown trainer.precision 'fp7'; valid choices: 16, 16-mixed"),
    ("trainer.max_steps=-5", "trainer.max_steps=-5 must be a whole number ≥ 1"),
    ("trainer.max_steps=0", "trainer.max_steps=0 must be a whole number ≥ 1"),
    ("trainer.max_steps=-1", "never stops"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 must be a whole number ≥ 1"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0 must be a whole number of batches ≥ 1"),
    ("trainer.val_check_interval=1.5", "trainer.val_check_interval=1.5 must be"),
    ("trainer.limit_val_batches=-1", "trainer.limit_val_batches=-1 must be a whole number of batches or a fraction"),
    ("+trainer.limit_train_batches=0", "0 would train nothing"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 must be a number ≥ 0"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 must be a whole number ≥ 1"),
    ("trainer.deterministic=maybe", "trainer.deterministic='maybe' must be true, false, warn or null"),
    ("trainer.devices=0", "trainer.devices=0 must be a number of devices ≥ 1"),
    ("trainer.accelerator=tpu", "trainer.accelerator=tpu: this machine has no tpu device"),
    ("trainer.accelerator=banana", "unknown trainer.accelerator 'banana'"),
    ("+trainer.strategy=foo", "Lightning refuses the trainer options: You selected an invalid strategy name"),
    ("data.num_workers=-1", "data.num_workers=-1 must be ≥ 0"),
    ("data.batch_size=0", "data.batch_size=0 must be ≥ 1"),
]


@pytest.mark.parametrize(("override", "expected"), TRAINER_AND_LOADER)
def test_trainer_and_loader_options_are_checked_before_data(override, expected):
    with pytest.raises(ConfigError) as error:
        check_common(composed(override))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_a_trainer_mistake_stops_the_command_in_one_line_before_data(cache_dir, tmp_path):
    proc = cli(cache_dir, tmp_path, "train", *TINY, "trainer.precision=fp7", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line(proc, "unknown trainer.precision 'fp7'")
    assert not (tmp_path / "run" / "tokenizer.json").exists()  # stopped before any data work


def _edit_config(directory: Path, **changes: object) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["model_config"].update(changes)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "verb", "expected"),
    [
        ("dim", "predict", "the weights do not fit their config (config.json edited, or weights of another model)"),
        ("truncated", "finetune", "model.safetensors is not a readable safetensors file"),
    ],
)
def test_an_export_that_no_longer_fits_its_weights_is_named(models, cache_dir, tmp_path, damage, verb, expected):
    broken = tmp_path / "export"
    shutil.copytree(models / "export", broken)
    if damage == "dim":
        _edit_config(broken, dim=64)
    else:
        weights = broken / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    args = {
        "predict": [f"checkpoint={broken}", "text=the dog sleeps"],
        "finetune": [f"pretrained={broken}", f"hydra.run.dir={tmp_path / 'run'}"],
    }[verb]
    assert_one_line(cli(cache_dir, tmp_path, verb, *args), expected)


@pytest.mark.parametrize(
    ("verb", "args", "expected"),
    [
        ("predict", ["text=the dog", "out={afile}"], "is a file, not a directory"),
        ("eval", ["batch_size=8", "out={root}"], "is a directory; give a file name"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_named(models, cache_dir, tmp_path, verb, args, expected):
    (tmp_path / "afile").write_text("x")
    paths = {"afile": tmp_path / "afile", "root": tmp_path, "run": models / "run"}
    args = [a.format(**paths) for a in args]
    assert_one_line(cli(cache_dir, tmp_path, verb, f"checkpoint={models / 'run'}", *args), expected)


def test_an_output_directory_hydra_cannot_create_is_named_before_hydra_starts(cache_dir, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = cli(cache_dir, tmp_path, "train", f"hydra.run.dir={tmp_path / 'afile' / 'run'}")
    assert_one_line(proc, "hydra.run.dir=")
    assert "cannot be created: Not a directory" in proc.stderr


def test_a_checkpoint_of_another_task_is_refused(models, cache_dir, tmp_path):
    proc = cli(cache_dir, tmp_path, "predict", f"checkpoint={models / 'run'}", "question=Who?", "context=a dog")
    assert_one_line(proc, "question= and context= are for question answering")


def test_an_input_longer_than_the_model_is_named(models, cache_dir, tmp_path):
    long = "text=" + "the dog sleeps " * 100
    proc = cli(cache_dir, tmp_path, "predict", f"checkpoint={models / 'run'}", long, "max_len=100000")
    assert_one_line(proc, "max_len=100000 must be a whole number from 1 to 32 (the model's positions)")


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ({"top_k": 0}, "top_k=0 must be an integer ≥ 1"),
        ({"max_new_tokens": -1}, "max_new_tokens=-1 must be an integer ≥ 1"),
        ({"nbest": 0}, "nbest=0 must be an integer ≥ 1"),
        ({"batch_size": 0}, "batch_size=0 must be an integer ≥ 1"),
        ({"beam_size": 0}, "beam_size=0 must be an integer ≥ 1"),
        ({"temperature": -1}, "temperature=-1 must be a number ≥ 0"),
    ],
)
def test_impossible_predict_and_eval_counts_are_named(option, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_counts(OmegaConf.create(option))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["search.n_trials=0"], "search.n_trials=0 must be an integer ≥ 1"),
        (["+search.workers=2"], "unknown search option(s) search.workers"),
        (["search.storage=postgresql://me:secret@db/x"], "search.storage=postgresql://me:***@db/x cannot be opened"),
    ],
)
def test_search_config_mistakes_stop_before_the_first_trial(cache_dir, tmp_path, args, expected):
    proc = cli(cache_dir, tmp_path, "cli.search", *TINY, "hparams_search=optuna", f"search.dir={tmp_path / 's'}", *args)
    assert_one_line(proc, expected)
    assert "trial 0" not in proc.stdout


@pytest.mark.parametrize(
    "library_error", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("enforce fail")]
)
def test_a_disk_that_fills_up_while_saving_is_one_line(tmp_path, monkeypatch, capsys, library_error):
    """torch's zip writer reports a full disk as a RuntimeError; the entry point says what happened in one line."""

    def fills_up(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")  # the atomic writer hands torch.save its temporary path
        raise library_error

    monkeypatch.setattr(torch, "save", fills_up)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 20, 1 << 20, 0))
    path = tmp_path / "last.ckpt"
    with pytest.raises(SystemExit) as exit_:
        run_recorded(lambda cfg: AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, path), OmegaConf.create({}))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: the disk is full: {path} could not be written")
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
