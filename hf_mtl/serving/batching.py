"""
Dynamic batching: concurrent requests wait in one queue; a worker takes as many as fit a token budget, runs them as
length-sorted batches in one thread (one encoder pass per batch serves every head), and hands each request its own
part. The pipeline's own preprocessing and postprocessing run on both sides, so a request's outputs are those of
`MultiTaskPipeline` on the same inputs, whatever else shared its batch.
"""

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Job:
    """What every queued request has: its tokens (the budget counts them), the future of its answer, its arrival."""

    tokens: int = field(init=False, default=0)
    future: asyncio.Future = field(init=False, default=None)
    queued_at: float = field(init=False, default_factory=time.perf_counter)


@dataclass
class PredictJob(Job):
    """The examples of one request (`pipe.preprocess`), predicted by every head, then `finish(examples)` in the
    worker thread (postprocessing can be long for a long text and must not hold the event loop)."""

    examples: list
    finish: callable

    def __post_init__(self):
        self.tokens = sum(len(chunk.features["input_ids"]) for example in self.examples for chunk in example.chunks)


@dataclass
class EmbedJob(Job):
    """Texts to embed (`lengths`: their tokens, as truncated), normalised or not."""

    texts: list
    normalize: bool
    lengths: list

    def __post_init__(self):
        self.tokens = sum(self.lengths)


class DynamicBatcher:
    """
    One worker over a queue of jobs. Each round takes the oldest job and the next ones while their tokens fit
    `max_batch_tokens` (a single larger job runs alone), then runs them in a thread of its own: the inputs sorted
    longest first, cut into forward batches of at most `max_batch_tokens` padded tokens and `max_batch_size` rows.
    Jobs wait only while a round runs, so a lone client is never held back to fill a batch.
    """

    def __init__(self, pipe, bf16: bool, max_batch_tokens: int, max_batch_size: int, metrics=None):
        self.pipe, self.bf16 = pipe, bf16
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.metrics = metrics
        self._pending = collections.deque()
        self._wakeup = asyncio.Event()
        # One thread: the backends already use every core for one batch; two batches at once would only compete.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-mtl-batch")
        self._worker = None

    def start(self):
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    @property
    def queue_size(self) -> int:
        return len(self._pending)

    async def submit(self, job):
        job.future = asyncio.get_running_loop().create_future()
        self._pending.append(job)
        self._wakeup.set()
        return await job.future

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            jobs, tokens = [self._pending.popleft()], 0
            tokens = jobs[0].tokens
            while self._pending and tokens + self._pending[0].tokens <= self.max_batch_tokens:
                tokens += self._pending[0].tokens
                jobs.append(self._pending.popleft())
            started = time.perf_counter()
            if self.metrics:
                for job in jobs:
                    self.metrics.queue_time.observe(started - job.queued_at)
            results = await loop.run_in_executor(self._executor, self._run_round, jobs)
            if self.metrics:
                self.metrics.inference_time.observe(time.perf_counter() - started)
            for job, (ok, value) in zip(jobs, results):
                if job.future.done():  # the client went away
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    def _run_round(self, jobs) -> list:
        """`(True, result)` or `(False, exception)` per job; a failing kind of job fails its own jobs only."""
        results = [None] * len(jobs)
        for kind, run in ((PredictJob, self._predict), (EmbedJob, self._embed)):
            indices = [index for index, job in enumerate(jobs) if isinstance(job, kind)]
            if not indices:
                continue
            try:
                outputs = run([jobs[index] for index in indices])
                for index, output in zip(indices, outputs):
                    results[index] = (True, output)
            except Exception as error:  # answered as a backend error (424) to these requests, the server lives on
                for index in indices:
                    results[index] = (False, error)
        return results

    def _forward_batches(self, lengths: list):
        """Index lists over inputs of `lengths`, longest first, each within the token budget and the row limit."""
        order = sorted(range(len(lengths)), key=lambda index: lengths[index], reverse=True)
        batch = []
        for index in order:
            # Sorted longest first: the batch pads to its first input's length.
            longest = lengths[batch[0]] if batch else lengths[index]
            if batch and (len(batch) >= self.max_batch_size or longest * (len(batch) + 1) > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def _predict(self, jobs) -> list:
        pipe = self.pipe
        chunks = [chunk for job in jobs for example in job.examples for chunk in example.chunks]
        lengths = [len(chunk.features["input_ids"]) for chunk in chunks]
        with torch.inference_mode():
            for indices in self._forward_batches(lengths):
                batch_chunks = [chunks[index] for index in indices]
                model_inputs = pipe.tokenizer.pad([chunk.features for chunk in batch_chunks], return_tensors="pt")
                self._observe_batch(len(indices), lengths[indices[0]] * len(indices))
                pipe._attach_predictions(batch_chunks, pipe.forward(model_inputs, bf16=self.bf16))
        return [job.finish(job.examples) for job in jobs]

    def _embed(self, jobs) -> list:
        texts = [text for job in jobs for text in job.texts]
        # `embed` cuts its longest-first order into equal row counts: as many rows as the longest text allows.
        longest = max(length for job in jobs for length in job.lengths)
        batch_size = max(1, min(self.max_batch_size, self.max_batch_tokens // max(longest, 1)))
        self._observe_batch(len(texts), sum(job.tokens for job in jobs))
        embeddings = self.pipe.embed(texts, normalize=False, batch_size=batch_size, bf16=self.bf16)
        outputs, start = [], 0
        for job in jobs:
            part = embeddings[start : start + len(job.texts)]
            start += len(job.texts)
            if job.normalize:
                part = part / np.maximum(np.linalg.norm(part, axis=-1, keepdims=True), 1e-12)
            outputs.append(part)
        return outputs

    def _observe_batch(self, rows: int, tokens: int):
        if self.metrics:
            self.metrics.batch_size.observe(rows)
            self.metrics.batch_tokens.observe(tokens)
