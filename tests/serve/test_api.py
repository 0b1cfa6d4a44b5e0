"""attnfit-serve's API in-process (FastAPI's TestClient): every endpoint, the weights it returns, streaming, the
micro-batcher, and every bad request with its status code and message."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from attnfit.data.classification import encode_for_classification
from attnfit.pretrained import build_model
from attnfit.serve import Limits, create_app
from attnfit.tasks import get_task

ENDPOINTS = {
    "clm": ("/v1/generate", {"text": "the dog", "max_new_tokens": 6, "temperature": 0}),
    "mlm": ("/v1/fill-mask", {"text": "the <mask> runs ."}),
    "classification": ("/v1/classify", {"text": "the dog runs ."}),
    "seq2seq": ("/v1/translate", {"text": "the dog runs .", "max_new_tokens": 8}),
    "qa": ("/v1/answer", {"question": "Where does Marel live?", "context": "Marel lives in Torford ."}),
}


@pytest.fixture(scope="module")
def clients(artifacts):
    """One running app per task (lifespan started: the batcher's worker runs)."""
    opened = {}
    for task, artifact in artifacts.items():
        client = TestClient(create_app(artifact, limits=Limits(max_chars=200, max_inputs=4, max_new_tokens=20)))
        opened[task] = client.__enter__()
    yield opened
    for client in opened.values():
        client.__exit__(None, None, None)


@pytest.mark.parametrize("task", list(ENDPOINTS))
def test_every_endpoint_answers_like_the_task_itself(clients, artifacts, task):
    path, body = ENDPOINTS[task]
    client = clients[task]
    assert client.get("/health").json() == {"status": "ok", "task": task, "endpoint": path}
    info = client.get("/v1/info").json()
    assert info["task"] == task and info["endpoint"] == path and info["parameters"] > 0
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 1 and "attention" not in results[0]
    # The same prediction as the task's own batched inference, which attnfit-predict shares.
    artifact = artifacts[task]
    model = build_model(artifact).eval()
    texts = [f"{body['question']}\t{body['context']}"] if task == "qa" else [body["text"]]
    options = {k: v for k, v in body.items() if k not in ("text", "question", "context")}
    assert results == json.loads(json.dumps(get_task(task).infer(model, artifact, texts, options, False)))
    # Other tasks' endpoints are a clear 404.
    other = next(p for t, (p, _) in ENDPOINTS.items() if t != task)
    missing = client.post(other, json={"text": "x"})
    assert missing.status_code == 404 and path in missing.json()["error"]


@pytest.mark.parametrize("task", list(ENDPOINTS))
def test_weights_are_the_models_own(clients, artifacts, task):
    path, body = ENDPOINTS[task]
    record = clients[task].post(path, json={**body, "need_weights": True}).json()["results"][0]
    attention = record["attention"]
    layers = torch.tensor(attention["layers"], dtype=torch.float64)  # (L, H, T, T)
    assert layers.shape[:2] == (2, 2) and layers.shape[2] == layers.shape[3]
    assert torch.allclose(layers.sum(-1), torch.ones(layers.shape[:3], dtype=layers.dtype), atol=1e-3)  # distributions
    if task == "classification":
        tokens = attention["tokens"]
        assert tokens[0] == "<cls>" and tokens[-1] == "<eos>" and len(attention["pooling"]) == len(tokens)
        model = build_model(artifacts[task]).eval()
        tokenizer = artifacts[task].record.tokenizers()[0]
        with torch.no_grad():
            out = model(torch.tensor([encode_for_classification(body["text"], tokenizer, 64)]), need_weights=True)
        assert torch.allclose(layers[-1, 1], out.attentions[-1][0, 1].double(), atol=1e-4)
        pooling = torch.tensor(attention["pooling"], dtype=torch.float64)
        assert torch.allclose(pooling, out.pooling_weights[0].double(), atol=1e-4)
    if task == "seq2seq":
        alignment = torch.tensor(attention["alignment"])
        assert alignment.shape == (len(attention["target_tokens"]), len(attention["source_tokens"]))
        assert torch.allclose(alignment.sum(-1), torch.ones(alignment.shape[0], dtype=alignment.dtype), atol=1e-3)


def test_generate_streams_server_sent_events(clients):
    client = clients["clm"]
    whole = client.post("/v1/generate", json={"text": "the dog", "max_new_tokens": 8, "temperature": 0}).json()
    with client.stream("POST", "/v1/generate", json={"text": "the dog", "max_new_tokens": 8, "temperature": 0,
                                                     "stream": True}) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [block for block in response.read().decode().split("\n\n") if block]
    pieces = [json.loads(e.removeprefix("data: "))["token"] for e in events if e.startswith("data: ")]
    assert events[-1].startswith("event: done")
    done = json.loads(events[-1].split("data: ", 1)[1])
    assert "".join(pieces) == done["generated"] == whole["results"][0]["generated"]
    assert len(pieces) >= 2  # it really streamed, piece by piece


def test_batched_inputs_match_single_requests(clients):
    client = clients["classification"]
    texts = ["the dog runs .", "a bird sings in the old tree .", "cats\tdogs"]
    batch = client.post("/v1/classify", json={"inputs": texts}).json()["results"]
    singles = [client.post("/v1/classify", json={"text": t}).json()["results"][0] for t in texts]
    for got, alone in zip(batch, singles, strict=True):
        assert got["label"] == alone["label"]
        for label, p in got["probabilities"].items():
            assert abs(p - alone["probabilities"][label]) < 1e-5
    gen = clients["clm"]
    prompts = ["the dog", "a bird sings in the", "Marel"]
    together = gen.post("/v1/generate", json={"inputs": prompts, "max_new_tokens": 6, "temperature": 0}).json()
    for prompt, result in zip(prompts, together["results"], strict=True):
        alone = gen.post("/v1/generate", json={"text": prompt, "max_new_tokens": 6, "temperature": 0}).json()
        assert result["generated"] == alone["results"][0]["generated"]  # left padding changes nothing


def test_concurrent_requests_share_forward_passes(clients):
    client = clients["classification"]
    batcher = client.app.state.batcher
    before = batcher.batches
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: client.post("/v1/classify", json={"text": f"the dog {i}"}).status_code,
                              range(24)))  # fmt: skip
    assert codes == [200] * 24
    assert batcher.batches - before < 24  # some requests were answered by one shared forward pass


def test_a_bad_input_fails_alone_in_a_shared_batch(clients):
    client = clients["mlm"]
    bodies = [{"text": "the <mask> runs ."}, {"text": "no mask here"}, {"text": "a <mask> ."}] * 3
    with ThreadPoolExecutor(9) as pool:
        responses = list(pool.map(lambda b: client.post("/v1/fill-mask", json=b), bodies))
    for body, response in zip(bodies, responses, strict=True):
        if "<mask>" in body["text"]:
            assert response.status_code == 200
        else:
            assert response.status_code == 400 and "has none" in response.json()["error"]


BAD = [
    ("classification", "/v1/classify", {}, 422, "exactly one of text"),
    ("classification", "/v1/classify", {"text": "a", "inputs": ["b"]}, 422, "exactly one of text"),
    ("classification", "/v1/classify", {"text": 5}, 422, "text: Input should be a valid string"),
    ("classification", "/v1/classify", {"text": "a", "colour": "red"}, 422, "colour: Extra inputs"),
    ("classification", "/v1/classify", {"text": "   "}, 422, "input 0 is empty"),
    ("classification", "/v1/classify", {"text": "x" * 201}, 413, "201 characters; this server takes at most 200"),
    ("classification", "/v1/classify", {"inputs": ["a"] * 5}, 413, "5 inputs in one request; this server takes"),
    ("clm", "/v1/generate", {"text": "a", "max_new_tokens": 21}, 400, "max_new_tokens=21 exceeds this server's limit"),
    ("clm", "/v1/generate", {"text": "a", "max_new_tokens": 0}, 422, "max_new_tokens: Input should be greater than"),
    ("clm", "/v1/generate", {"text": "a", "top_p": 1.5}, 422, "top_p: Input should be less than or equal to 1"),
    ("clm", "/v1/generate", {"text": "a", "temperature": -1}, 422, "temperature: Input should be greater"),
    ("clm", "/v1/generate", {"inputs": ["a", "b"], "max_new_tokens": 5, "stream": True}, 422, "takes one text"),
    ("mlm", "/v1/fill-mask", {"text": "no mask"}, 400, "a masked LM fills <mask> tokens; the text has none"),
    ("mlm", "/v1/fill-mask", {"text": "a <mask>", "top_k": 0}, 422, "top_k: Input should be greater"),
    ("seq2seq", "/v1/translate", {"text": "a", "beam_size": 17}, 400, "beam_size=17 exceeds this server's limit of 16"),
    ("seq2seq", "/v1/translate", {"text": "a", "length_norm": "mean"}, 422, "length_norm: Input should be"),
    ("seq2seq", "/v1/translate", {"text": "a", "nbest": 0}, 422, "nbest: Input should be greater than or equal to 1"),
    ("qa", "/v1/answer", {"question": "who?"}, 422, "context: Field required"),
    ("qa", "/v1/answer", {"question": " ", "context": "x"}, 422, "question and context must both be non-empty"),
    ("qa", "/v1/answer", {"text": "who?"}, 422, "text: Extra inputs are not permitted"),
    ("qa", "/v1/answer", {"question": "a", "context": "b", "nbest": 21}, 422, "nbest: Input should be less than"),
]


@pytest.mark.parametrize(("task", "path", "body", "status", "message"), BAD, ids=[f"{b[0]}-{b[3]}" for b in BAD])
def test_bad_requests_get_a_clear_4xx(clients, task, path, body, status, message):
    response = clients[task].post(path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_malformed_json_and_unknown_paths(clients):
    client = clients["classification"]
    response = client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["error"]
    assert client.get("/nowhere").status_code == 404
    wrong_method = client.get("/v1/classify")
    assert wrong_method.status_code == 405 and "takes POST" in wrong_method.json()["error"]


def test_docs_and_the_page_are_served(clients):
    client = clients["seq2seq"]
    schema = client.get("/openapi.json").json()
    assert "/v1/translate" in schema["paths"] and "/health" in schema["paths"]
    assert "nbest" in json.dumps(schema["components"]["schemas"]["TranslateBody"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "attention explorer" in page.text
    assert client.get("/static/explorer.js").status_code == 200


def test_requests_write_nothing(clients, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for task, (path, body) in ENDPOINTS.items():
        assert clients[task].post(path, json={**body, "need_weights": True}).status_code == 200
    assert list(tmp_path.iterdir()) == []


def test_limits_defaults_agree_with_serve_yaml():
    import dataclasses
    from pathlib import Path

    import yaml

    from attnfit.cli import CONFIG_DIR

    yaml_limits = yaml.safe_load((Path(CONFIG_DIR) / "serve.yaml").read_text())["limits"]
    python_limits = {f.name: f.default for f in dataclasses.fields(Limits)}
    assert yaml_limits == python_limits
