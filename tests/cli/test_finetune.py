"""Pretrain → fine-tune → evaluate → predict → export → load, all through the CLI; and the ways it must refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import attnfit
from attnfit.pretrained import build_model, load_artifact
from tests.conftest import TINY, denormal_probe, flushed, scalars

# Fine-tuning knobs for speed; the pretrained model fixes width and depth.
FT = [
    "data.seq_len=32",
    "data.batch_size=16",
    "trainer.max_steps=8",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "scheduler.warmup_steps=2",
    "callbacks.progress_bar=none",
    "callbacks.heatmaps=2",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, cache_dir) -> Path:
    """One tiny pretrained MLM run shared by the tests of this module."""
    from tests.conftest import cli_env, python_m

    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    args = [*TINY, "task=mlm", "encoder.num_layers=2", f"hydra.run.dir={run_dir}"]
    proc = python_m("attnfit.train", args, run_dir.parent, cli_env(cache_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_finetune_eval_predict_export_round_trip(run_cli, tmp_path, pretrained):
    run_dir = tmp_path / "finetuned"
    proc = run_cli("finetune", f"pretrained={pretrained}", *FT, f"hydra.run.dir={run_dir}")
    assert "loaded" in proc.stdout and "newly initialised" in proc.stdout and "trainable parameters" in proc.stdout

    # The fine-tuned encoder started from the pretrained weights: compare by value, not by log message.
    source, tuned = load_artifact(pretrained), load_artifact(run_dir)
    assert tuned.task == "classification" and tuned.label_names == ["grammatical", "ungrammatical"]
    assert tuned.tokenizer_json == source.tokenizer_json  # the vocabulary was reused, not retrained
    key = "backbone.embeddings.token.weight"
    moved = (tuned.state_dict[key] - source.state_dict[key]).abs().max()
    assert 0 < moved < 0.1, moved  # trained a little from the pretrained values, not from a fresh init

    # Self-contained run directory, with attention heat maps in TensorBoard.
    for name in ("config.yaml", "tokenizer.json", "metrics.json", "checkpoints/last.ckpt"):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val/acc", "val/f1", "test/acc", "test/f1"} <= set(metrics)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"attention/example_0", "attention/example_1"} <= set(events.Tags()["images"])

    # Evaluate: a table, and JSON with the same metric names.
    proc = run_cli("eval", f"checkpoint={run_dir}", "split=test")
    record = json.loads((run_dir / "eval" / "test.json").read_text())
    assert record["split"] == "test" and {"acc", "f1", "loss"} <= set(record["metrics"])
    assert "f1" in proc.stdout

    # Predict with attention: label, probabilities, a PNG heat map and the weights as text.
    out = tmp_path / "pred"
    proc = run_cli(
        "predict", f"checkpoint={run_dir}", "text=the small dogs that the cat sees run .", "heatmap=true", f"out={out}"
    )
    prediction = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert prediction["label"] in ("grammatical", "ungrammatical")
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    png = Path(prediction["attention"]["heatmap"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert sum(prediction["attention"]["pooling"]) == pytest.approx(1.0, abs=1e-3)

    # Export → load in one call → identical logits; and the export can be fine-tuned again.
    export_dir = tmp_path / "export"
    run_cli("export", f"checkpoint={run_dir}", f"out={export_dir}")
    assert {p.name for p in export_dir.iterdir()} == {"model.safetensors", "config.json", "tokenizer.json", "README.md"}
    exported, tokenizer = attnfit.load_pretrained(export_dir)
    original, _ = attnfit.load_pretrained(run_dir)
    ids = torch.tensor([tokenizer.encode("the cat sees the dogs .").ids])
    torch.testing.assert_close(exported(ids).logits, original(ids).logits, rtol=0, atol=0)
    again = tmp_path / "again"
    run_cli("finetune", f"pretrained={export_dir}", *FT, "trainer.max_steps=2", f"hydra.run.dir={again}")
    assert (again / "checkpoints" / "last.ckpt").exists()


def test_freezing_keeps_weights_bit_identical_and_dropout_is_replaced(run_cli, tmp_path, pretrained):
    run_dir = tmp_path / "frozen"
    run_cli(
        "finetune",
        f"pretrained={pretrained}",
        *FT,
        "finetune.freeze_embeddings=true",
        "finetune.freeze_layers=1",
        "finetune.dropout=0.3",
        f"hydra.run.dir={run_dir}",
    )
    source_artifact, tuned_artifact = load_artifact(pretrained), load_artifact(run_dir)
    assert source_artifact.model_config["encoder"]["dropout"] == 0.0
    assert tuned_artifact.model_config["encoder"]["dropout"] == 0.3  # and the saved model rebuilds with it
    layer = build_model(tuned_artifact).backbone.encoder.stack.layers[0]
    assert layer.dropout.p == 0.3
    source, tuned = source_artifact.state_dict, tuned_artifact.state_dict
    frozen = [k for k in source if k.startswith(("backbone.embeddings.", "backbone.encoder.stack.layers.0."))]
    assert frozen and all(torch.equal(source[k], tuned[k]) for k in frozen)
    trained = [k for k in tuned if k.startswith("backbone.encoder.stack.layers.1.")]  # above the frozen layer
    assert any(not torch.equal(source[k], tuned[k]) for k in trained)


def test_lora_trains_adapters_only_and_merges_on_export(run_cli, tmp_path, pretrained):
    run_dir = tmp_path / "lora"
    proc = run_cli(
        "finetune",
        f"pretrained={pretrained}",
        *FT,
        "finetune.lora.enabled=true",
        "finetune.lora.r=4",
        f"hydra.run.dir={run_dir}",
    )
    assert "LoRA" in proc.stdout
    source, tuned = load_artifact(pretrained), load_artifact(run_dir)
    assert tuned.lora and tuned.lora["r"] == 4
    base = {
        k.replace(".base.", "."): v
        for k, v in tuned.state_dict.items()
        if k.startswith("backbone.") and "lora_" not in k
    }
    assert all(torch.equal(source.state_dict[k], v) for k, v in base.items()), "a base weight changed under LoRA"
    assert any("lora_" in k for k in tuned.state_dict)

    export_dir = tmp_path / "merged"
    run_cli("export", f"checkpoint={run_dir}", f"out={export_dir}")
    merged, tokenizer = attnfit.load_pretrained(export_dir)
    unmerged, _ = attnfit.load_pretrained(run_dir)
    assert not any("lora_" in k for k in merged.state_dict())
    ids = torch.tensor([tokenizer.encode("a dog runs .").ids])
    torch.testing.assert_close(merged(ids).logits, unmerged(ids).logits, rtol=1e-4, atol=1e-5)


def test_causal_lm_generates_text_and_fine_tunes_as_a_classifier_backbone(run_cli, tmp_path):
    run_dir = tmp_path / "clm"
    run_cli("train", *TINY, "task=clm", f"hydra.run.dir={run_dir}")
    out = tmp_path / "pred"
    inputs = tmp_path / "prompts.txt"
    inputs.write_text("the dog\n\na cat sees\n")  # blank lines are skipped
    run_cli("predict", f"checkpoint={run_dir}", f"file={inputs}", "max_new_tokens=5", "heatmap=true", f"out={out}")
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["prompt"] for p in predictions] == ["the dog", "a cat sees"]
    assert all(isinstance(p["generated"], str) for p in predictions)
    assert (out / "attention_0.png").exists() and (out / "attention_1.png").exists()
    run_cli("eval", f"checkpoint={run_dir}", "split=validation")

    # A causal LM is a classifier backbone too: it stays causal, and 'last' pools the one position that saw it all.
    tuned_dir = tmp_path / "clm-classifier"
    run_cli("finetune", f"pretrained={run_dir}", *FT, "task.pooling=last", f"hydra.run.dir={tuned_dir}")
    source, tuned = load_artifact(run_dir), load_artifact(tuned_dir)
    assert tuned.task == "classification" and tuned.model_config["causal"] is True
    key = "backbone.embeddings.token.weight"
    assert 0 < (tuned.state_dict[key] - source.state_dict[key]).abs().max() < 0.1  # started from the LM's weights
    assert json.loads((run_dir / "eval" / "validation.json").read_text())["metrics"]["ppl"] > 1


def _junk(d: Path) -> Path:
    (d / "junk.ckpt").write_bytes(b"not a checkpoint")
    return d / "junk.ckpt"


def _plain(d: Path) -> Path:
    torch.save({"state_dict": {}}, d / "plain.ckpt")
    return d / "plain.ckpt"


def _empty_dir(d: Path) -> Path:
    (d / "empty").mkdir()
    return d / "empty"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.ckpt", "does not exist"),
        (_junk, "not a readable checkpoint"),
        (_plain, "not an attnfit checkpoint"),
        (_empty_dir, "neither a run directory"),
        (lambda d: 16, "checkpoint 16 does not exist"),
    ],
)
def test_incompatible_checkpoints_are_refused(run_cli, tmp_path, make, expected):
    proc = run_cli("finetune", f"pretrained={make(tmp_path)}", *FT, check=False)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused(run_cli, tmp_path, pretrained):
    """E.g. another vocabulary size: a clear message naming the tensor, never a silent partial load."""
    checkpoint = torch.load(pretrained / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["attnfit"]["model_config"]["vocab_size"] += 5
    torch.save(checkpoint, tmp_path / "other-vocab.ckpt")
    proc = run_cli("finetune", f"pretrained={tmp_path / 'other-vocab.ckpt'}", *FT, check=False)
    assert proc.returncode == 2 and "backbone.embeddings.token.weight" in proc.stderr, proc.stderr[-2000:]


def test_missing_pretrained_and_bad_split_are_explained(run_cli, tmp_path, pretrained):
    proc = run_cli("finetune", *FT, check=False)
    assert proc.returncode == 2 and "pretrained=PATH is required" in proc.stderr
    proc = run_cli("eval", f"checkpoint={pretrained}", "split=test", check=False)
    assert proc.returncode == 2 and "available splits: train, validation" in proc.stderr
    proc = run_cli("finetune", f"pretrained={pretrained}", *FT, "data.seq_len=999", check=False)
    assert proc.returncode == 2 and "exceeds the pretrained model's max_len=32" in proc.stderr


def test_domain_adaptation_continues_pretraining_on_the_task_text_then_fine_tunes(run_cli, tmp_path, pretrained):
    run_dir = tmp_path / "adapted"
    args = [*FT, "finetune.adapt_steps=3", denormal_probe(tmp_path), f"hydra.run.dir={run_dir}"]
    proc = run_cli("finetune", f"pretrained={pretrained}", *args)
    adapt = run_dir / "adapt"
    assert "domain adaptation done" in proc.stdout + proc.stderr
    corpus = (adapt / "train.txt").read_text().splitlines()
    assert len(corpus) > 100 and all(line.strip() for line in corpus)  # the labelled set's own sentences
    # The tokenizer is kept through both stages.
    tokenizer = (pretrained / "tokenizer.json").read_text()
    assert (adapt / "tokenizer.json").read_text() == tokenizer == (run_dir / "tokenizer.json").read_text()
    source, adapted, tuned = load_artifact(pretrained), load_artifact(adapt), load_artifact(run_dir)
    assert adapted.task == "mlm" and adapted.record.model_config == source.record.model_config
    assert json.loads((adapt / "metrics.json").read_text())["step"] == 3
    schedule = OmegaConf.load(adapt / "config.yaml").scheduler  # its own span: warmup ≤ a tenth, decay over 3 steps
    assert schedule.decay_steps is None and schedule.warmup_steps == 0
    key = "backbone.encoder.stack.layers.0.ffn.0.weight"
    assert not torch.equal(adapted.state_dict[key], source.state_dict[key])  # three MLM steps moved it
    assert tuned.task == "classification"
    assert flushed(tmp_path) == {0: True}  # fine-tuning flushes, though the adaptation run ended


def test_domain_adaptation_and_auxiliary_mlm_need_a_pretrained_language_model(run_cli, tmp_path, pretrained):
    classifier = tmp_path / "clf"
    run_cli("finetune", f"pretrained={pretrained}", *FT, "trainer.max_steps=2", f"hydra.run.dir={classifier}")
    proc = run_cli("finetune", f"pretrained={classifier}", *FT, "finetune.adapt_steps=2", check=False)
    assert proc.returncode == 2 and "continues a pretrained language model" in proc.stderr
    proc = run_cli("finetune", f"pretrained={classifier}", *FT, "finetune.mlm_weight=0.5", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "is a classification model; set finetune.mlm_weight=0 or fine-tune a task=mlm model"
    )
    proc = run_cli("finetune", f"pretrained={pretrained}", *FT, "finetune.mlm_weight=-1", check=False)
    assert proc.returncode == 2 and "finetune.mlm_weight=-1 must be ≥ 0" in proc.stderr


def test_label_smoothing_reaches_the_training_loss(run_cli, tmp_path, pretrained):
    first_loss = {}
    for smoothing in (0.0, 0.3):  # the same seed, weights and first batch: only the targets differ
        run_dir = tmp_path / f"ls{smoothing}"
        run_cli("finetune", f"pretrained={pretrained}", *FT, "trainer.max_steps=1", f"task.label_smoothing={smoothing}",
                f"hydra.run.dir={run_dir}")  # fmt: skip
        first_loss[smoothing] = scalars(run_dir)["train/loss"][0][1]
    assert first_loss[0.3] != pytest.approx(first_loss[0.0], rel=1e-4), first_loss


def test_adversarial_training_adds_its_loss_to_an_unchanged_clean_loss(run_cli, tmp_path, pretrained):
    logged = {}
    for eps in (0.0, 0.5):  # the same seed, weights and first batch; the clean pass comes first in both
        run_dir = tmp_path / f"adv{eps}"
        run_cli("finetune", f"pretrained={pretrained}", *FT, "trainer.max_steps=1", f"task.adversarial_eps={eps}",
                f"hydra.run.dir={run_dir}")  # fmt: skip
        logged[eps] = scalars(run_dir)
    assert logged[0.5]["train/loss"][0][1] == pytest.approx(logged[0.0]["train/loss"][0][1], rel=1e-6)
    assert "train/adversarial_loss" not in logged[0.0]
    assert 0 < logged[0.5]["train/adversarial_loss"][0][1] < 20


# Biases that shift all of a softmax's inputs alike (attention keys, pooling scores): their exact gradient is zero.
SHIFT_INVARIANT = ("k_proj.bias", "pooler.score.bias")


def test_adversarial_training_under_ddp_matches_one_process(run_cli, tmp_path, pretrained):
    """2 processes × batch 4 (gloo) against 1 process × batch 8: each example's perturbation is normalised on its
    own, so the 1/B of the batch mean cancels and the averaged gradients give the same steps."""
    exact = [o for o in FT if not o.startswith(("data.batch_size", "trainer.max_steps"))]
    exact += ["data.shuffle=false", "task.dropout=0", "trainer.max_steps=3", "task.adversarial_eps=0.5"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_cli("finetune", f"pretrained={pretrained}", *exact, "data.batch_size=8", f"hydra.run.dir={single}")
    run_cli("finetune", f"pretrained={pretrained}", *exact, "trainer=ddp_cpu", "data.batch_size=4",
            f"hydra.run.dir={ddp}")  # fmt: skip
    a = torch.load(single / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(ddp / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 3
    moved = 0.0
    source = load_artifact(pretrained).state_dict
    for key, value in a["state_dict"].items():
        if key.endswith(SHIFT_INVARIANT):  # a softmax's inputs shifted alike: zero gradient, Adam steps on noise
            continue
        torch.testing.assert_close(b["state_dict"][key], value, atol=1e-4, rtol=1e-4, msg=key)
        if (name := key.removeprefix("model.")) in source:
            moved = max(moved, (value - source[name]).abs().max().item())
    assert moved > 1e-3  # the steps changed the pretrained weights: the comparison is not of two untouched copies
    assert "train/adversarial_loss" in scalars(ddp)


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.label_smoothing=1.0", "task.label_smoothing=1.0 must be in [0, 1)"),
        ("task.label_smoothing=x", "task.label_smoothing must be int or float"),
        ("task.adversarial_eps=-0.5", "task.adversarial_eps=-0.5 must be ≥ 0 (0: no adversarial training)"),
        ("task.adversarial_eps=big", "task.adversarial_eps must be int or float"),
    ],
)
def test_bad_loss_option_is_one_line(run_cli, pretrained, override, message):
    proc = run_cli("finetune", f"pretrained={pretrained}", *FT, override, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(f"error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_auxiliary_mlm_trains_with_the_task_and_leaves_a_plain_classifier(run_cli, tmp_path, pretrained):
    run_dir = tmp_path / "aux"
    run_cli("finetune", f"pretrained={pretrained}", *FT, "finetune.mlm_weight=0.5", f"hydra.run.dir={run_dir}")
    tuned = load_artifact(run_dir)
    assert not any(key.startswith("auxiliary") for key in tuned.state_dict)
    build_model(tuned)  # the saved classifier loads as any other: no auxiliary tensors missing or left over
    masked = [value for _, value in scalars(run_dir)["train/mlm_loss"]]
    assert len(masked) == 8 and all(0 < value < 20 for value in masked)  # logged at every step
    log = (run_dir / "finetune.log").read_text()
    assert "the pretrained MLM head × finetune.mlm_weight=0.5" in log
    assert "dropped: none" in log and "head.decoder" not in log  # the MLM head goes on, so the load keeps it
    proc = run_cli("finetune", f"pretrained={pretrained}", *FT, "finetune.mlm_weight=0.5",
                   "finetune.mlm_masking=words", check=False)  # fmt: skip
    assert proc.returncode == 2 and "finetune.mlm_masking" in proc.stderr and "whole_word" in proc.stderr
