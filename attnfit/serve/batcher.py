"""An asyncio micro-batcher: requests that arrive within a few milliseconds share one forward pass.

Requests are grouped by their options (inputs with different decoding settings cannot share a batch) and run on
one worker thread, so the model is never used by two threads at once and the event loop stays free to accept
connections. If a combined batch fails (one request's input is bad), each request of it is retried alone, so only
the bad one gets the error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Job:
    inputs: list[str]
    options: dict[str, Any]
    need_weights: bool
    future: asyncio.Future = field(repr=False)

    @property
    def key(self) -> str:
        return json.dumps([self.options, self.need_weights], sort_keys=True)


class MicroBatcher:
    """``await submit(inputs, options, need_weights)`` → one result per input, from ``run(inputs, options,
    need_weights)`` called on at most ``max_batch`` inputs (a single larger request runs alone)."""

    def __init__(
        self,
        run: Callable[[list[str], dict, bool], list],
        executor: ThreadPoolExecutor,
        max_batch: int,
        max_wait_s: float,
    ) -> None:
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0  # forward passes so far (the tests read how well requests were batched)
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def submit(self, inputs: list[str], options: dict[str, Any], need_weights: bool) -> list:
        job = _Job(inputs, options, need_weights, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _collect(self, first: _Job) -> list[_Job]:
        """``first`` and whatever arrives within ``max_wait_s`` with the same options, up to ``max_batch``
        inputs; jobs with other options wait in the queue for the next round."""
        loop = asyncio.get_running_loop()
        jobs, others, size = [first], [], len(first.inputs)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                break
            if job.key == first.key and size + len(job.inputs) <= self.max_batch:
                jobs.append(job)
                size += len(job.inputs)
            else:
                others.append(job)
        for job in others:  # back in the queue, in arrival order
            self.queue.put_nowait(job)
        return jobs

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect(await self.queue.get())
            jobs = [job for job in jobs if not job.future.cancelled()]  # the client went away
            if not jobs:
                continue
            first = jobs[0]
            inputs = [text for job in jobs for text in job.inputs]
            try:
                self.batches += 1
                results = await loop.run_in_executor(self.executor, self.run, inputs, first.options, first.need_weights)
            except Exception as error:
                if len(jobs) == 1:
                    _settle(first, error=error)
                    continue
                for job in jobs:  # find the request that broke the batch: each alone
                    try:
                        self.batches += 1
                        _settle(job, await loop.run_in_executor(self.executor, self.run, job.inputs, job.options,
                                                                job.need_weights))  # fmt: skip
                    except Exception as single_error:
                        _settle(job, error=single_error)
                continue
            start = 0
            for job in jobs:
                _settle(job, results[start : start + len(job.inputs)])
                start += len(job.inputs)


def _settle(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)
