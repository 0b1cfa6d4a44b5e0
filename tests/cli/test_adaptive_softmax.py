"""A word-vocabulary model with an adaptive-softmax head (``model.adaptive_cutoffs``) through the CLI: it learns,
fills masks, fine-tunes with its head as the auxiliary MLM, and refuses the export it has no equivalent for."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY, scalars

WORDS = [f"w{i}" for i in range(60)]
ADAPTIVE = ["tokenizer=word", "model.adaptive_cutoffs=[12,30]", "data=files"]  # the word vocabulary: ~70 ids


@pytest.fixture
def corpus(tmp_path):
    # Frequent words first, as a frequency-ordered vocabulary has them; every sentence repeats a pattern to learn.
    lines = [f"the {WORDS[i % 10]} saw {WORDS[10 + i % 50]} near the {WORDS[i % 10]} ." for i in range(600)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("task", ["mlm", "clm"])
def test_an_adaptive_head_learns_and_predicts(run_cli, tmp_path, corpus, task):
    run_dir = tmp_path / "run"
    steps = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))]
    run_cli("train", *steps, *ADAPTIVE, f"data.train={corpus}", f"task={task}", "trainer.max_steps=40",
            "trainer.val_check_interval=10", "optimizer.lr=3e-3", f"hydra.run.dir={run_dir}")  # fmt: skip
    losses = [value for _, value in scalars(run_dir)["val/loss"]]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    unigram = metrics["unigram_baseline"]
    assert len(losses) == 4 and losses[-1] < min(losses[0], unigram), (losses, unigram)
    # Ids below 12: the 7 specials, "the", ".", "near", "saw" and "w0", so 6.2 of a line's 9 tokens (its 8 words and
    # <eos>: the two "the", ".", "near", "saw", <eos>, and its frequent word twice when it is w0, one line in ten).
    assert metrics["adaptive_head_share"] == pytest.approx(6.2 / 9, abs=0.01), metrics
    assert "adaptive softmax: ids below 12 hold" in (run_dir / "train.log").read_text()
    prompt = "the w3 saw <mask> near the w3 ." if task == "mlm" else "the w3 saw"
    run_cli("predict", f"checkpoint={run_dir}", f"text={prompt}", "heatmap=false")
    record = json.loads((tmp_path / "predictions" / "predictions.jsonl").read_text().splitlines()[0])
    if task == "mlm":
        # The serving path (attnfit-serve's fill-mask, the CLI's five) softmaxes the head's output, which is right
        # only if the adaptive head returns log-probabilities over the whole vocabulary: they must sum to 1 as they
        # come, and the five printed are their top five.
        import torch

        from attnfit.pretrained import build_model, load_artifact

        artifact = load_artifact(run_dir)
        model = build_model(artifact).eval()
        tokenizer = artifact.record.tokenizers()[0]
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        at_mask = ids.index(tokenizer.token_to_id("<mask>"))
        with torch.no_grad():
            log_p = model.head(model.backbone(torch.tensor([ids]), None, False)[0])[0, at_mask].double()  # (V,)
        assert log_p.shape == (artifact.model_config["vocab_size"],)
        assert float(torch.logsumexp(log_p, -1)) == pytest.approx(0.0, abs=1e-5)
        top = torch.topk(log_p.exp(), 5)
        assert [c["p"] for c in record["fills"][0]] == pytest.approx(top.values.tolist(), abs=1e-5)
    else:
        assert record["generated"]


def test_fine_tuning_continues_the_adaptive_head_and_export_refuses_it(run_cli, tmp_path, corpus):
    pretrained = tmp_path / "pretrained"
    run_cli("train", *TINY, *ADAPTIVE, f"data.train={corpus}", "task=mlm", f"hydra.run.dir={pretrained}")
    tuned = tmp_path / "tuned"
    run_cli("finetune", f"pretrained={pretrained}", "data.seq_len=32", "data.batch_size=16", "trainer.max_steps=4",
            "trainer.val_check_interval=4", "trainer.limit_val_batches=2", "trainer.log_every_n_steps=1",
            "callbacks.progress_bar=none", "finetune.mlm_weight=0.5", f"hydra.run.dir={tuned}")  # fmt: skip
    log = (tuned / "finetune.log").read_text()
    assert "the pretrained MLM head × finetune.mlm_weight=0.5" in log and "dropped: none" in log
    assert all(0 < value < 20 for _, value in scalars(tuned)["train/mlm_loss"])
    # Continued pretraining keeps the pretrained head, so its share is the pretrained cutoffs' though this config
    # names none; either entry point continues (attnfit-finetune's early stopping then watches val/loss).
    for entry, pretrained_key in (("train", "+pretrained"), ("finetune", "pretrained")):
        continued = tmp_path / f"continued-{entry}"
        proc = run_cli(entry, f"{pretrained_key}={pretrained}", "task=mlm", "data=files", f"data.train={corpus}",
                       "data.seq_len=32", "data.batch_size=8", "trainer.max_steps=2", "trainer.val_check_interval=2",
                       "callbacks.progress_bar=none", f"hydra.run.dir={continued}")  # fmt: skip
        metrics = json.loads((continued / "metrics.json").read_text())
        assert metrics["adaptive_head_share"] == pytest.approx(6.2 / 9, abs=0.01), (entry, metrics)
        assert f"attnfit-{entry} {pretrained_key}={pretrained}" in proc.stdout  # the continue command's own entry
    proc = run_cli("export", f"checkpoint={pretrained}", "format=transformers", f"out={tmp_path / 'hf'}", check=False)
    assert proc.returncode != 0
    assert "cannot export this model: model.adaptive_cutoffs=[12, 30]" in proc.stderr, proc.stderr[-2000:]


def test_a_head_cluster_holding_little_of_the_text_is_warned_about(caplog):
    from attnfit.recipes.run import log_head_share

    with caplog.at_level("INFO", logger="attnfit"):
        log_head_share(0.801, [2000, 8000])
        assert [r.levelname for r in caplog.records] == ["INFO"] and "80.1%" in caplog.text
        log_head_share(0.3, [12, 30])
    warning = caplog.records[-1]
    assert warning.levelname == "WARNING"
    assert "model.adaptive_cutoffs=[12, 30] puts only 30.0% of the training tokens in the head" in warning.message
