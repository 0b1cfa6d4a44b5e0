"""Loggers, callbacks and optimizers from config, each with the real component: MLflow on a SQLite store read
back through MlflowClient, W&B's offline files parsed, TensorBoard's events, an EMA callback's saved weights,
an optimizer by ``_target_``; and the one-line refusals of what used to be ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnfit.cli import check_not_a_search
from attnfit.errors import ConfigError
from attnfit.pretrained import export, load_artifact
from tests.conftest import TINY


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B ``run-*.wandb`` file: a ``:W&B`` header, then LevelDB-log records (checksum,
    length, type; a record split over 32 KiB blocks comes in FIRST/MIDDLE/LAST pieces)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending, records = 7, 32768, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_every_logger_gets_metrics_final_hparams_the_config_and_heat_maps(run_cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("WANDB_MODE", "offline")  # no network in tests; the preset also detects it by itself
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    loggers = "logger=[tensorboard,mlflow,wandb]"
    run_cli(
        "train", *TINY, "task=classification", "data=embedded_classification", "+callbacks.heatmaps=1",
        loggers, f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    config = (run_dir / "config.yaml").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())

    # MLflow: the run's own SQLite store and artifact folder
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "classification-transformer-self"]
    assert Path(experiment.artifact_location.removeprefix("file://")) == run_dir / "mlartifacts"
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert len(history) == 2 and history[-1].value == pytest.approx(metrics["val/loss"])
    assert run.data.metrics["final/best/val/f1"] == pytest.approx(metrics["best/val/f1"])
    assert run.data.params["optimizer.lr"] == "0.002" and run.data.params["task.name"] == "classification"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "attention"} <= artifacts
    assert Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text() == config
    images = [a.path for a in client.list_artifacts(run.info.run_id, "attention/example_0")]
    assert images == ["attention/example_0/step000003.png", "attention/example_0/step000006.png"]
    from attnfit.runs.report import _mlflow_scalars  # attnfit-report's curves of a run logged to MLflow only

    assert _mlflow_scalars(run_dir, ["val/loss"])["val/loss"][-1][1] == pytest.approx(metrics["val/loss"])

    # W&B: the offline run's record file, parsed
    [wandb_run] = (run_dir / "wandb").glob("offline-run-*")
    records = wandb_records(next(wandb_run.glob("run-*.wandb")))
    history = [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]  # fmt: skip
    val_losses = [json.loads(h["val/loss"]) for h in history if "val/loss" in h]
    assert val_losses and val_losses[-1] == pytest.approx(metrics["val/loss"], rel=1e-6)
    heat_maps = [
        json.loads(h["attention/example_0/filenames"])[0] for h in history if "attention/example_0/filenames" in h
    ]
    assert len(heat_maps) == 2  # the heat map, logged as an image at each validation
    assert all((wandb_run / "files" / name).read_bytes().startswith(b"\x89PNG") for name in heat_maps)
    configs = {i.key: i.value_json for r in records if r.WhichOneof("record_type") == "config" for i in r.config.update}
    lr = json.loads(configs["optimizer.lr"])
    assert (lr["value"] if isinstance(lr, dict) else lr) == 0.002  # some wandb versions wrap it: {"value": …}
    summary = {i.key or "/".join(i.nested_key): i.value_json for r in records
               if r.WhichOneof("record_type") == "summary" for i in r.summary.update}  # fmt: skip
    assert json.loads(summary["final/best/val/f1"]) == pytest.approx(metrics["best/val/f1"])
    assert (wandb_run / "files" / "run_config.yaml").read_text() == config
    assert list((wandb_run / "files" / "media" / "images").rglob("*.png"))

    # TensorBoard, still the default's layout, gets the images and the config too
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert "attention/example_0" in events.Tags()["images"] and "config/text_summary" in events.Tags()["tensors"]

    # Resumed in place, the run continues its MLflow run: one run, both halves, the first parameter values kept
    run_cli(
        "train", *TINY, "task=classification", "data=embedded_classification", "logger=[mlflow,wandb]",
        "ckpt_path=auto", "trainer.max_steps=9", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    # … and its W&B run: a second offline folder under the same run id, which `wandb sync` uploads into that run
    first_id = wandb_run.name.rsplit("-", 1)[1]
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(folder.name.endswith(f"-{first_id}") for folder in folders), folders
    resumed = wandb_records(next(folders[1].glob("run-*.wandb")))
    assert {r.run.run_id for r in resumed if r.WhichOneof("record_type") == "run"} == {first_id}
    [again] = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == run.info.run_id and again.data.tags["attnfit.run_dir"] == str(run_dir)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert steps[:2] == [2, 5] and len(steps) == 3 and steps[2] > 5  # the first run's two, then the resumed one's
    assert again.data.params["trainer.max_steps"] == "6" and again.data.metrics["final/step"] == 9


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, cache_dir) -> Path:
    """A tiny causal-LM run with an EMA callback (decay 0.5), a checkpoint every step, and RMSprop by ``_target_``."""
    from tests.conftest import cli_env, python_m

    run_dir = tmp_path_factory.mktemp("ema") / "run"
    args = [
        *TINY, "trainer.max_steps=4", "trainer.val_check_interval=4", "callbacks/extra=ema",
        "callbacks.extra.ema.decay=0.5", "callbacks.checkpoint.every_n_steps=1", "callbacks.checkpoint.keep_last_k=4",
        "optimizer=custom", "optimizer._target_=torch.optim.RMSprop", "+optimizer.alpha=0.9", "optimizer.lr=0.01",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    proc = python_m("attnfit.train", args, run_dir.parent, cli_env(cache_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_an_ema_callback_from_config_saves_the_average_and_an_optimizer_by_target_trains(ema_run):
    run_dir = ema_run
    steps = [torch.load(run_dir / "checkpoints" / f"step{s:06d}.ckpt", weights_only=True) for s in (1, 2, 3, 4)]
    floats = [k for k, v in steps[0]["state_dict"].items() if v.is_floating_point()]
    # state_dict holds the average, current_model_state the trained weights; EMA: a_1 = w_1, a_k = ½ a_(k-1) + ½ w_k
    average = {k: steps[0]["current_model_state"][k] for k in floats}
    for k in floats:
        torch.testing.assert_close(steps[0]["state_dict"][k], average[k])
    moved = 0
    for checkpoint in steps[1:]:
        average = {k: 0.5 * average[k] + 0.5 * checkpoint["current_model_state"][k] for k in floats}
        for k in floats:
            torch.testing.assert_close(checkpoint["state_dict"][k], average[k], rtol=1e-5, atol=1e-6)
        moved += sum(not torch.equal(checkpoint["state_dict"][k], checkpoint["current_model_state"][k]) for k in floats)
    assert moved > 0  # the average is not the trained weights
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for k in floats:  # the end of training keeps both: resume continues the trained weights and the average
        torch.testing.assert_close(last["state_dict"][k], steps[-1]["state_dict"][k])
        torch.testing.assert_close(last["current_model_state"][k], steps[-1]["current_model_state"][k])
    # the optimizer is RMSprop (its own state), still over the weight-decay groups
    assert set(last["optimizer_states"][0]["state"][0]) == {"step", "square_avg"}
    groups = last["optimizer_states"][0]["param_groups"]
    assert len(groups) == 2 and groups[0]["alpha"] == 0.9


def test_fine_tuning_starts_from_the_average_or_with_pretrained_weights_trained_the_trained_weights(
    run_cli, tmp_path, ema_run
):
    """Frozen embeddings: the fine-tuned run still holds exactly the embeddings it started from."""
    run_dir = ema_run
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    key = "backbone.embeddings.token.weight"
    average, trained = last["state_dict"][f"model.{key}"], last["current_model_state"][f"model.{key}"]
    assert not torch.equal(average, trained)
    for weights, expected in (("average", average), ("trained", trained)):
        tuned = tmp_path / weights
        run_cli(
            "finetune", f"pretrained={run_dir / 'checkpoints' / 'last.ckpt'}", f"pretrained_weights={weights}",
            "finetune.freeze_embeddings=true", "data.seq_len=32", "trainer.max_steps=2", "callbacks.progress_bar=none",
            "callbacks.heatmaps=0", f"hydra.run.dir={tuned}",
        )  # fmt: skip
        assert torch.equal(load_artifact(tuned).state_dict[key], expected), weights
    proc = run_cli("finetune", f"pretrained={run_dir}", "pretrained_weights=raw", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "unknown pretrained_weights 'raw'; valid choices: average, trained" in proc.stderr
    exported = export(load_artifact(run_dir), tmp_path / "exported")  # one set of weights: trained is refused
    with pytest.raises(ConfigError, match="pretrained_weights=trained needs a checkpoint"):
        load_artifact(exported, "trained", "pretrained_weights")


def test_eval_export_predict_and_serve_take_the_trained_weights_when_asked(run_cli, tmp_path, ema_run, monkeypatch):
    import uvicorn
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    import attnfit.serve
    from attnfit.recipes.serve import serve

    checkpoint = ema_run / "checkpoints" / "last.ckpt"
    last = torch.load(checkpoint, weights_only=True)
    losses, texts, served = {}, {}, {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    monkeypatch.setattr(attnfit.serve, "create_app", lambda artifact, model, limits: served.update(model=model))
    for weights in ("average", "trained"):
        run_cli("export", f"checkpoint={checkpoint}", f"weights={weights}", f"out={tmp_path / weights}")
        held = "state_dict" if weights == "average" else "current_model_state"
        exported = load_file(tmp_path / weights / "model.safetensors")
        for key, value in exported.items():
            assert torch.equal(value, last[held][f"model.{key}"]), (weights, key)
        run_cli("eval", f"checkpoint={checkpoint}", "split=validation", f"weights={weights}")
        name = "validation.json" if weights == "average" else "validation-trained.json"  # neither overwrites the other
        record = json.loads((ema_run / "eval" / name).read_text())
        assert record["weights"] == weights
        losses[weights] = record["metrics"]["loss"]
        out = tmp_path / f"predict-{weights}"
        run_cli("predict", f"checkpoint={checkpoint}", "text=the dog", f"weights={weights}", f"out={out}")
        texts[weights] = json.loads((out / "predictions.jsonl").read_text())["generated"]
        serve(
            OmegaConf.merge(
                OmegaConf.load(Path(__file__).parents[2] / "configs" / "serve.yaml"),
                {"checkpoint": str(checkpoint), "weights": weights},
            )
        )
        for key, value in served["model"].state_dict().items():
            assert torch.equal(value, last[held][f"model.{key}"]), (weights, key)
    assert losses["average"] != losses["trained"], losses
    assert texts["average"] != texts["trained"], texts  # the same seed, other weights
    proc = run_cli("eval", f"checkpoint={tmp_path / 'trained'}", "weights=trained", check=False)
    assert proc.returncode == 2 and "weights=trained needs a checkpoint" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["+callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveraging"],  # refused, not ignored
         "unknown key callbacks.swa; attnfit's callback keys: checkpoint, early_stopping, progress_bar, heatmaps, "
         "nonfinite, extra; a Lightning callback goes under callbacks.extra: +callbacks.extra.swa._target_=CLASS"),
        (["+callbacks.extra.t._target_=torch.nn.Linear"], "callbacks.extra.t._target_=torch.nn.Linear is not a "
         "Lightning callback"),
        (["+callbacks.extra.stop._target_=lightning.pytorch.callbacks.EarlyStopping"],
         "callbacks.extra.stop: EarlyStopping.__init__() missing 1 required positional argument: 'monitor'"),
        (["+callbacks.extra.x.decay=0.9"], "callbacks.extra.x has no _target_"),
        (["callbacks/extra=ema", "~callbacks.extra.ema._target_"],  # a preset removed under an experiment's settings
         "or remove the section: '~callbacks.extra.ema'"),
        (["optimizer=custom"], "optimizer=custom needs optimizer._target_=CLASS"),
        (["optimizer=custom", "optimizer._target_=torch.nn.Linear"], "is not a torch.optim.Optimizer class"),
        (["optimizer=sgd", "+optimizer.betas=[0.9,0.9]"], "optimizer.betas is not an option of torch.optim.sgd.SGD"),
        (["+logger.comet.project=x"], "logger.comet has no _target_"),
        (["+logger.x._target_=torch.optim.SGD"], "logger.x._target_=torch.optim.SGD is not a Lightning logger"),
        (["callbacks=finetune", "callbacks.early_stopping.monitor=val/acc"],  # a metric of its own needs its direction
         "callbacks.early_stopping.monitor=val/acc needs its direction: callbacks.early_stopping.mode=min or max"),
        (["callbacks=finetune", "callbacks.early_stopping.mode=maximum"],
         "unknown callbacks.early_stopping.mode 'maximum'; valid choices: max, min (did you mean 'max'?)"),
    ],
)  # fmt: skip
def test_bad_callbacks_optimizers_and_loggers_are_one_line_errors(args, expected):
    from hydra import compose, initialize_config_dir

    from attnfit.cli import CONFIG_DIR
    from attnfit.errors import ConfigError
    from attnfit.recipes.checks import check_optimization, check_run_options
    from attnfit.recipes.common import config_callbacks

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=args)
    with pytest.raises(ConfigError) as error:
        check_run_options(cfg)
        check_optimization(cfg)
        config_callbacks(cfg)
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("config", ["train", "finetune"])
def test_a_search_space_given_to_train_names_attnfit_search(capsys, config):
    with pytest.raises(SystemExit) as exit_:
        check_not_a_search(["-m", "hparams_search=optuna", "trainer.max_steps=5"], config)
    assert exit_.value.code == 2
    name = "" if config == "train" else "--config-name finetune "
    expected = f"error: hparams_search=optuna is run by attnfit-search: attnfit-search {name}hparams_search=optuna "
    assert capsys.readouterr().err == expected + "trainer.max_steps=5\n"
