"""Small random models of every servable task, built in-process (no training): the API's behaviour does not
depend on what a model learned, and building them takes a fraction of a second."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnfit.pretrained import Artifact, ModelRecord, build_model, export

TEXTS = [
    "the small dogs that the cat sees run .",
    "a bird sings in the old tree near the river .",
    "Marel lives in Torford and works as a baker .",
    "the cats see the dog and the dog runs away .",
] * 20


@pytest.fixture(scope="session")
def tokenizer():
    from attnfit.data.tokenizer import train_tokenizer

    return train_tokenizer("bpe", TEXTS, vocab_size=300)


def backbone(vocab: int, causal: bool = False, encoder: str = "transformer", attention: str = "self") -> dict:
    return {
        "vocab_size": vocab,
        "dim": 32,
        "max_len": 64,
        "causal": causal,
        "encoder": {"name": encoder, "num_layers": 2, "dropout": 0.0},
        "attention": {"name": attention, "num_heads": 2, "window": 4},
    }


def make_artifact(task: str, tokenizer, seed: int = 0) -> Artifact:
    """A random model of ``task`` with its record, as a checkpoint would hold them."""
    vocab, tok = tokenizer.get_vocab_size(), tokenizer.to_str()
    records = {
        "clm": ModelRecord("clm", backbone(vocab, causal=True), tok),
        "mlm": ModelRecord("mlm", backbone(vocab), tok),
        "classification": ModelRecord(
            "classification", backbone(vocab), tok, head_config={"num_labels": 2}, label_names=["no", "yes"]
        ),
        "seq2seq": ModelRecord(
            "seq2seq",
            {
                "encoder": backbone(vocab, attention="local"),
                "target_vocab_size": vocab,
                "decoder": {"name": "transformer", "num_layers": 1, "num_heads": 2, "dropout": 0.0},
                "cross_attention": {"name": "self", "num_heads": 2},
                "max_target_len": 32,
            },
            tok,
            decode={"beam_size": 2, "length_penalty": 1.0, "max_len": 12},
        ),
        "qa": ModelRecord(
            "qa",
            backbone(vocab),
            tok,
            head_config={"interaction": "concat"},
            decode={"seq_len": 64, "doc_stride": 32, "max_question_len": 16, "max_answer_len": 8},
        ),
    }
    record = records[task]
    torch.manual_seed(seed)
    model = build_model(Artifact(record, {}, Path(task)), load_weights=False)
    return Artifact(record, model.state_dict(), Path(f"<random {task}>"))


@pytest.fixture(scope="session")
def artifacts(tokenizer) -> dict[str, Artifact]:
    return {task: make_artifact(task, tokenizer) for task in ("clm", "mlm", "classification", "seq2seq", "qa")}


@pytest.fixture(scope="session")
def exported_classifier(artifacts, tmp_path_factory) -> Path:
    """The classifier as an exported directory: what ``attnfit-serve checkpoint=`` reads."""
    return export(artifacts["classification"], tmp_path_factory.mktemp("serve") / "classifier")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(exported_classifier, cache_dir, tmp_path_factory):
    """``attnfit-serve checkpoint=EXPORT port=P`` as a real process (uvicorn on loopback); yields its URL."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    env = {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "attnfit.cli.serve", f"checkpoint={exported_classifier}", f"port={port}",
             "log_level=warning"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"attnfit-serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
