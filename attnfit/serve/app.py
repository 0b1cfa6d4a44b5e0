"""The HTTP API of ``attnfit-serve``: one endpoint for what the checkpoint's task does, the attention explorer page.

Predictions come from the task's own :meth:`~attnfit.tasks.base.Task.infer` (the code ``attnfit-predict`` uses),
batched across concurrent requests by :class:`~attnfit.serve.batcher.MicroBatcher`. Every mistake in a request
is a 4xx JSON ``{"error": "..."}`` naming the bad value; nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from attnfit.errors import AttnfitError
from attnfit.pretrained import Artifact, build_model
from attnfit.serve.batcher import MicroBatcher
from attnfit.tasks import get_task

STATIC = resources.files("attnfit.serve") / "static"


@dataclass(frozen=True)
class Limits:
    """What one request may ask; beyond it, a 4xx naming the limit."""

    max_chars: int = 4000  # characters of one input (413)
    max_inputs: int = 16  # inputs in one request (413)
    max_new_tokens: int = 256  # generate / translate (400)
    max_beam: int = 16  # translate: beam_size and nbest (400)
    max_batch: int = 16  # inputs of concurrent requests batched into one forward pass
    max_wait_ms: float = 5.0  # how long the batcher waits for more requests


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---- request bodies (one per endpoint, so the OpenAPI docs show exactly what each takes) -------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="one input")
    inputs: list[str] | None = Field(None, description="several inputs, answered in order (instead of text)")
    need_weights: bool = Field(False, description="also return the attention weights (the explorer page's heat map)")

    def texts(self) -> list[str]:
        if (self.text is None) == (self.inputs is None):
            raise ApiError(422, "give exactly one of text (a string) or inputs (a list of strings)")
        return [self.text] if self.text is not None else list(self.inputs)

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude={"text", "inputs", "need_weights", "stream"}, exclude_none=True)


class ClassifyBody(_Body):
    """A tab separates the two texts of a pair."""


class FillMaskBody(_Body):
    top_k: int = Field(5, ge=1, le=50, description="candidates per mask")


class GenerateBody(_Body):
    max_new_tokens: int = Field(50, ge=1)
    temperature: float = Field(0.8, ge=0, description="0 = greedy")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    stop: list[str] = Field(default_factory=list, description="stop strings (the text is cut before the first)")
    seed: int | None = Field(None, description="a fixed seed makes sampling repeatable")
    stream: bool = Field(False, description="server-sent events: one event per piece of text, then 'done'")


class TranslateBody(_Body):
    beam_size: int | None = Field(None, ge=1)
    nbest: int | None = Field(None, ge=1, description="also list the n best translations")
    max_new_tokens: int | None = Field(None, ge=1)
    min_len: int = Field(0, ge=0)
    no_repeat_ngram: int = Field(0, ge=0)
    length_norm: Literal["gnmt", "average", "none"] = "gnmt"
    length_penalty: float | None = None


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    context: str
    nbest: int = Field(5, ge=1, le=20, description="how many candidate answers to list")
    max_answer_len: int | None = Field(None, ge=1)
    need_weights: bool = False

    def texts(self) -> list[str]:
        if not self.question.strip() or not self.context.strip():
            raise ApiError(422, "question and context must both be non-empty")
        return [f"{self.question}\t{self.context}"]

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude={"question", "context", "need_weights"}, exclude_none=True)


BODIES: dict[str, type[BaseModel]] = {
    "classify": ClassifyBody,
    "fill-mask": FillMaskBody,
    "generate": GenerateBody,
    "translate": TranslateBody,
    "answer": AnswerBody,
}


# ---- the app ------------------------------------------------------------------------------------------------------
def model_info(artifact: Artifact, model: Any, limits: Limits) -> dict[str, Any]:
    """What the page and clients need to know about the served model."""
    task = get_task(artifact.task)
    config = artifact.model_config
    if artifact.task == "seq2seq":
        config = config["encoder"]  # the source encoder's backbone config
    return {
        "task": artifact.task,
        "endpoint": f"/v1/{task.endpoint}",
        "source": str(artifact.source),
        "encoder": config["encoder"]["name"],
        "attention": config["attention"]["name"],
        "labels": artifact.label_names,
        "max_len": config["max_len"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "limits": limits.__dict__,
    }


def create_app(artifact: Artifact, model: Any = None, limits: Limits | None = None) -> FastAPI:
    """The FastAPI app serving ``artifact`` (its model built and put in eval mode unless given)."""
    limits = limits or Limits()
    task = get_task(artifact.task)
    if task.endpoint is None:
        raise AttnfitError(f"a {artifact.task} model has nothing to serve; serve a clm, mlm, classifier, seq2seq or qa")
    model = (model if model is not None else build_model(artifact)).eval()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnfit-model")  # the model's one thread
    batcher = MicroBatcher(
        lambda inputs, options, weights: task.infer(model, artifact, inputs, options, weights),
        executor,
        limits.max_batch,
        limits.max_wait_ms / 1000,
    )
    info = model_info(artifact, model, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="attnfit",
        summary=f"a {artifact.task} model ({info['encoder']} encoder, {info['attention']} attention)",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.info = batcher, info

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(AttnfitError)
    async def user_error(request: Request, error: AttnfitError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        where = [".".join(str(p) for p in e["loc"] if p != "body") or "body" for e in error.errors()]
        problems = [f"{w}: {e['msg']}" for w, e in zip(where, error.errors(), strict=True)]
        return JSONResponse({"error": "; ".join(problems)}, status_code=422)

    @app.get("/health", summary="liveness and the model served")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "task": info["task"], "endpoint": info["endpoint"]}

    @app.get("/v1/info", summary="the served model and this server's limits")
    async def model_summary() -> dict[str, Any]:
        return info

    def check(texts: list[str], body: BaseModel) -> None:
        if len(texts) > limits.max_inputs:
            raise ApiError(413, f"{len(texts)} inputs in one request; this server takes at most {limits.max_inputs}")
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                limit = limits.max_chars
                raise ApiError(413, f"input {i} has {len(text)} characters; this server takes at most {limit}")
            if not text.strip():
                raise ApiError(422, f"input {i} is empty")
        new = getattr(body, "max_new_tokens", None)
        if new is not None and new > limits.max_new_tokens:
            raise ApiError(400, f"max_new_tokens={new} exceeds this server's limit of {limits.max_new_tokens}")
        for key in ("beam_size", "nbest") if isinstance(body, TranslateBody) else ():  # qa's nbest: ≤ 20 answers
            value = getattr(body, key)
            if value is not None and value > limits.max_beam:
                raise ApiError(400, f"{key}={value} exceeds this server's limit of {limits.max_beam}")

    async def predict(body: Any) -> dict[str, Any]:
        texts = body.texts()
        check(texts, body)
        options = body.options()
        if task.name == "clm":
            from attnfit.tasks.language_modeling import sampling_from

            sampling_from(options)  # a bad combination is a 400 now, not an error inside the batch
        results = await batcher.submit(texts, options, bool(body.need_weights))
        return {"task": artifact.task, "results": results}

    endpoint = task.endpoint
    Body = BODIES[endpoint]

    if endpoint == "generate":

        @app.post("/v1/generate", summary="continue text (stream=true: server-sent events)")
        async def generate(body: GenerateBody) -> Any:
            if not body.stream:
                return await predict(body)
            texts = body.texts()
            check(texts, body)
            if len(texts) != 1 or body.need_weights:
                raise ApiError(422, "stream=true takes one text and no need_weights")
            return StreamingResponse(stream_events(texts[0], body.options()), media_type="text/event-stream")

        async def stream_events(prompt: str, options: dict[str, Any]):
            import torch

            from attnfit.tasks.language_modeling import sampling_from, stream_text

            sampling = sampling_from(options)
            loop, queue, gone = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
            tokenizer = artifact.record.tokenizers()[0]
            seed = options.get("seed")
            generator = None if seed is None else torch.Generator().manual_seed(int(seed))

            def produce() -> None:
                try:
                    pieces = stream_text(
                        model, tokenizer, [prompt], int(options["max_new_tokens"]), sampling,
                        tuple(options.get("stop", ())), generator, lambda: [0] if gone.is_set() else [],
                    )  # fmt: skip
                    for _, delta in pieces:
                        loop.call_soon_threadsafe(queue.put_nowait, ("token", delta))
                    loop.call_soon_threadsafe(queue.put_nowait, ("done", None))
                except Exception as error:  # reported as an event: the response has already begun
                    loop.call_soon_threadsafe(queue.put_nowait, ("error", str(error)))

            loop.run_in_executor(executor, produce)
            text = ""
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "token":
                        text += value
                        yield f"data: {json.dumps({'token': value}, ensure_ascii=False)}\n\n"
                    elif kind == "done":
                        done = {"prompt": prompt, "generated": text}
                        yield f"event: done\ndata: {json.dumps(done, ensure_ascii=False)}\n\n"
                        return
                    else:
                        yield f"event: error\ndata: {json.dumps({'error': value})}\n\n"
                        return
            finally:
                gone.set()  # a client that disconnects stops the generation at the next token

    else:

        async def run(body: Body) -> Any:  # type: ignore[valid-type]
            return await predict(body)

        run.__annotations__["body"] = Body  # FastAPI reads the body's schema from the annotation: this task's
        app.post(f"/v1/{endpoint}", summary=f"{endpoint} ({artifact.task} model)")(run)

    @app.api_route("/v1/{name}", methods=["GET", "POST"], include_in_schema=False)
    async def other(name: str) -> JSONResponse:
        if name in ("info", endpoint):
            return JSONResponse({"error": f"/v1/{name} takes {'GET' if name == 'info' else 'POST'}"}, status_code=405)
        return JSONResponse(
            {"error": f"/v1/{name} is not served: this is a {artifact.task} model; it answers POST /v1/{endpoint}"},
            status_code=404,
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
