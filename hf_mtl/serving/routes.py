"""The routes of `hf-mtl serve`: TEI's where it has the concept, and one per head, plus every head at once."""

import contextlib
from pathlib import Path

import numpy as np
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from .batching import EmbedJob, PredictJob
from .errors import BACKEND, OVERLOADED, TOKENIZER, VALIDATION, ServeError
from .schemas import (EmbedRequest, ErrorBody, PredictAllRequest, PredictRequest, SimilarityRequest, TagRequest,
                      check_texts, pipeline_inputs, sequences)

PAGE = Path(__file__).parent / "page"
ERRORS = {status: {"model": ErrorBody} for status in (400, 413, 422, 424, 429, 503)}


def add_routes(app, state):
    inference = Inference(state)
    add_status_routes(app, state)
    add_embedding_routes(app, inference)
    add_head_routes(app, state, inference)


class Inference:
    """The path of every inference request: a place among the concurrent ones, TEI's checks, then the batcher."""

    def __init__(self, state):
        self.state, self.settings, self.metrics = state, state.settings, state.metrics

    @contextlib.asynccontextmanager
    async def slot(self, route: str):
        """One of `--max-concurrent-requests` places for the time of a request (429 when none is free)."""
        state, metrics = self.state, self.metrics
        metrics.requests.labels(route=route).inc()
        state.check_ready()
        if state.in_flight >= self.settings.max_concurrent_requests:
            raise ServeError(429, OVERLOADED, "Model is overloaded")
        state.in_flight += 1
        metrics.in_flight.inc()
        try:
            yield
        finally:
            state.in_flight -= 1
            metrics.in_flight.dec()

    async def run(self, job):
        batcher = self.state.batcher
        self.metrics.queue_size.set(batcher.queue_size + 1)
        try:
            return await batcher.submit(job)
        except ServeError:
            raise
        except Exception as error:
            raise ServeError(424, BACKEND, f"inference failed: {type(error).__name__}: {error}") from error
        finally:
            self.metrics.queue_size.set(batcher.queue_size)

    async def predict(self, items, finish):
        """Every head on `items` (pipeline inputs); `finish(examples)` makes the answer in the batch thread."""
        check_texts(items, self.settings.max_client_batch_size)
        try:
            examples = await run_in_threadpool(self.state.pipe.preprocess, items)
        except ValueError as error:
            raise ServeError(422, TOKENIZER, f"Tokenization error: {error}") from error
        return await self.run(PredictJob(examples, finish))

    async def embed(self, texts, normalize, truncate):
        check_texts(texts, self.settings.max_client_batch_size)
        pipe = self.state.pipe
        lengths = await run_in_threadpool(token_lengths, pipe, texts)
        if truncate is False and max(lengths) > pipe.max_length:
            raise ServeError(413, VALIDATION, f"Input validation error: `inputs` must have less than "
                                              f"{pipe.max_length} tokens. Given: {max(lengths)}")
        return await self.run(EmbedJob(texts, normalize, [min(length, pipe.max_length) for length in lengths]))


def add_status_routes(app, state):
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE / "index.html")

    @app.get("/health", responses={503: {"model": ErrorBody}})
    async def health():
        """200 once the model is loaded and warmed, 503 before."""
        state.check_ready()
        return Response(status_code=200)

    @app.get("/info")
    async def info():
        """The model, its tasks (kinds, labels), backend, precision and the server's limits."""
        state.check_ready()
        return state.info

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


def add_embedding_routes(app, inference):
    @app.post("/embed", responses=ERRORS)
    async def embed(body: EmbedRequest) -> list[list[float]]:
        """Sentence embeddings (the model's pooling), always a 2-D list; L2-normalised unless `normalize` is false."""
        async with inference.slot("/embed"):
            texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
            return (await inference.embed(texts, body.normalize, body.truncate)).tolist()

    @app.post("/similarity", responses=ERRORS)
    async def similarity(body: SimilarityRequest) -> list[float]:
        """Cosine similarity of `source_sentence` with each of `sentences`."""
        async with inference.slot("/similarity"):
            if not body.inputs.sentences:
                check_texts([], 1)
            embeddings = await inference.embed([body.inputs.source_sentence, *body.inputs.sentences], True, None)
            return (embeddings[1:] @ embeddings[0]).tolist()


def add_head_routes(app, state, inference):
    async def head_predict(body: PredictRequest, name, route: str):
        async with inference.slot(route):
            if name is None:
                raise ServeError(424, BACKEND, "the model has no sentence task to answer /predict")
            task = state.task(name, token=False)
            items, single = sequences(body.inputs)
            parameters = body.parameters or {}
            raw = body.raw_scores or parameters.get("function_to_apply") == "none"
            top_k = parameters.get("top_k") if isinstance(parameters.get("top_k"), int) else None
            outputs = await inference.predict(
                items, lambda examples: [head_scores(task, example, raw)[:top_k] for example in examples])
            return outputs[0] if single else outputs

    @app.post("/predict", responses=ERRORS)
    async def predict(body: PredictRequest):
        """TEI's /predict on the default sentence head: `[{"label", "score"}]` best first (a batch: a list of those);
        multi-label heads give each label's sigmoid, a regression `[{"score"}]`."""
        return await head_predict(body, state.default_head if state.ready() else None, "/predict")

    @app.post("/heads/{task}/predict", responses=ERRORS)
    async def predict_head(task: str, body: PredictRequest):
        """/predict on the sentence task `task`."""
        return await head_predict(body, task, "/heads/{task}/predict")

    @app.post("/heads/{task}/tag", responses=ERRORS)
    async def tag_head(task: str, body: TagRequest):
        """The entities of token task `task` as transformers' token-classification pipeline gives them
        (`aggregation_strategy="simple"`): `entity_group`, `score`, `word`, `start`, `end`."""
        async with inference.slot("/heads/{task}/tag"):
            name = state.task(task, token=True)["name"]
            single = isinstance(body.inputs, str)
            outputs = await inference.predict([body.inputs] if single else body.inputs, lambda examples: [
                [{"entity_group": entity["entity"], "score": entity["score"], "word": entity["text"],
                  "start": entity["start"], "end": entity["end"]} for entity in state.pipe.postprocess(example)[name]]
                for example in examples])
            return outputs[0] if single else outputs

    @app.post("/predict_all", responses=ERRORS)
    async def predict_all(body: PredictAllRequest):
        """Every head's output for each input (what `hf-mtl predict` writes), from one encoder pass per batch."""
        async with inference.slot("/predict_all"):
            items, single = pipeline_inputs(body.inputs)
            outputs = await inference.predict(items, lambda examples: [
                state.pipe.postprocess(example, return_tags=body.return_tags) for example in examples])
            # A bi-encoder head scores each pair from the two texts' own embeddings, as the pipeline does.
            await run_in_threadpool(state.pipe.score_pairs, outputs, None, state.bf16)
            return outputs[0] if single else outputs


def token_lengths(pipe, texts) -> list:
    """Tokens of each text (special tokens included), untruncated."""
    return [len(feature["input_ids"]) for feature in pipe._tokenize(texts)]


def head_scores(task: dict, example, raw: bool) -> list:
    """TEI's predictions of one sentence head for one example, best first; the logits are averaged over windows as
    the pipeline does."""
    logits = np.mean([chunk.logits[task["name"]] for chunk in example.chunks], axis=0)
    if task["kind"] == "regression":
        return [{"score": float(logits[0])}]
    if raw:
        scores = logits
    elif task["kind"] == "multi_label_classification":
        scores = 1.0 / (1.0 + np.exp(-logits))
    else:
        shifted = np.exp(logits - logits.max())
        scores = shifted / shifted.sum()
    order = np.argsort(-scores, kind="stable")
    return [{"label": task["labels"][index], "score": float(scores[index])} for index in order]
