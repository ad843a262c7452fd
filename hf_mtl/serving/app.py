"""
The FastAPI app of `hf-mtl serve`. Routes follow Text Embeddings Inference where it has the concept (`/embed`,
`/predict`, `/similarity`, `/info`, `/health`, `/metrics`, its error JSON and statuses), so its clients work
unchanged; `/heads/{task}/predict`, `/heads/{task}/tag` and `/predict_all` serve every head of the model.
"""

import asyncio
import dataclasses
import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import ConfigError
from ..pipeline_mtl import DEFAULT_BATCH_SIZE
from .batching import DynamicBatcher
from .errors import UNHEALTHY, VALIDATION, ServeError, error_response, install_error_handlers
from .metrics import ServeMetrics
from .precision import choose_bf16
from ..task_kinds import kind_of
from .routes import PAGE, add_routes

logger = logging.getLogger("hf_mtl.serve")
SETTINGS_ENV = "HF_MTL_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker process


@dataclass
class ServeSettings:
    """What `hf-mtl serve` was asked for; TEI's defaults for the limits."""

    model: str
    backend: str | None = None  # None: onnx for a folder of `hf-mtl export-onnx`, else torch
    onnx_file: str | None = None
    bf16: bool | None = None  # None: see precision.choose_bf16
    compile: bool = False
    max_batch_size: int = DEFAULT_BATCH_SIZE  # rows per forward batch
    max_batch_tokens: int = 16384
    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    payload_limit: int = 2_000_000  # bytes of a request body
    default_head: str | None = None

    def resolved_backend(self) -> str:
        if self.backend:
            return self.backend
        exported = (Path(self.model) / "model.onnx").is_file() and not (Path(self.model) / "model.safetensors").exists()
        return "onnx" if exported else "torch"


class ServerState:
    """The pipeline once loaded (in a thread, so `/health` answers 503 meanwhile), its batcher and the limits."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics):
        self.settings, self.metrics = settings, metrics
        self.pipe = self.batcher = self.info = None
        self.load_error = None
        self.in_flight = 0

    def load(self):
        from ..loading import load_model_folder
        from ..pipeline_mtl import MultiTaskPipeline

        settings = self.settings
        backend = settings.resolved_backend()
        model, tokenizer = load_model_folder(settings.model) if backend == "torch" else (settings.model, None)
        pipe = MultiTaskPipeline(model, tokenizer=tokenizer, batch_size=settings.max_batch_size, backend=backend,
                                 file_name=settings.onnx_file, compile=settings.compile)
        bf16, why = choose_bf16(pipe, backend, settings.bf16)
        logger.info(f"serving {settings.model} with the {backend} backend, {why}")
        pipe(["warm up the model", {"text": "a pair", "text_pair": "of texts"}], bf16=bf16)
        pipe.embed(["warm up the model"], bf16=bf16)
        self.default_head = default_head(settings.default_head, pipe.tasks)
        self.info = build_info(settings, pipe, backend, bf16, why, self.default_head)
        self.pipe, self.bf16 = pipe, bf16

    def ready(self) -> bool:
        return self.batcher is not None

    def check_ready(self):
        if not self.ready():
            raise ServeError(503, UNHEALTHY, "the model is still loading" if self.load_error is None
                             else f"the model failed to load: {self.load_error}")

    def task(self, name: str, token: bool) -> dict:
        """The token task (`token`) or sentence task `name`, else a 422 listing the model's tasks of that kind."""
        tasks = [task for task in self.pipe.tasks if (kind_of(task).reads_tokens if token else is_label_head(task))]
        for task in tasks:
            if task["name"] == name:
                return task
        what = "token" if token else "sentence"
        raise ServeError(422, VALIDATION, f"no {what} task {name!r}; the model's {what} tasks: "
                                          f"{[task['name'] for task in tasks]}")


def is_label_head(task: dict) -> bool:
    """A sentence head `/predict` answers from one text's logits (a bi-encoder's score needs a pair: `/similarity`)."""
    kind = kind_of(task)
    return not kind.reads_tokens and not kind.encodes_pair_separately


def default_head(asked: str | None, tasks: list) -> str | None:
    """The sentence task of `/predict`: `--default-head`, else the model's first (None: the model has none)."""
    sentence_tasks = [task["name"] for task in tasks if is_label_head(task)]
    if asked is not None and asked not in sentence_tasks:
        raise ConfigError(f"--default-head {asked}: not a sentence task of the model "
                          f"({', '.join(sentence_tasks) or 'it has none'})")
    return asked or (sentence_tasks[0] if sentence_tasks else None)


def build_info(settings, pipe, backend, bf16, why, default_head) -> dict:
    model = pipe.model
    dtype = "int8" if backend == "onnx" and (settings.onnx_file or "").endswith("int8.onnx") else (
        "bfloat16" if bf16 else "float32")
    return {
        "model_id": str(settings.model), "model_sha": None, "model_dtype": dtype, "model_type": {"multi_task": {}},
        "backend": backend, "precision": why, "pooling": getattr(model.config, "pooling", None),
        "embedding_dim": model.config.encoder.hidden_size,
        "tasks": [{"name": task["name"], "kind": task["kind"], "labels": task.get("labels"),
                   **({"tag_format": task.get("tag_format", "BIO")} if task["kind"] == "token_classification" else {})}
                  for task in pipe.tasks],
        "default_head": default_head, "max_input_length": pipe.max_length, "auto_truncate": True,
        "max_concurrent_requests": settings.max_concurrent_requests, "max_batch_tokens": settings.max_batch_tokens,
        "max_batch_requests": settings.max_batch_size, "max_client_batch_size": settings.max_client_batch_size,
        "payload_limit": settings.payload_limit, "version": __version__,
    }


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before the app parses it."""

    def __init__(self, app, limit: int, on_error):
        self.app, self.limit, self.on_error = app, limit, on_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._refuse(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        self.on_error(scope.get("path", ""), 413, VALIDATION)
        response = error_response(413, VALIDATION, f"the request body is larger than {self.limit:,} bytes")
        await response(scope, receive, send)


def create_app(settings: ServeSettings) -> FastAPI:
    metrics = ServeMetrics()
    state = ServerState(settings, metrics)

    @asynccontextmanager
    async def lifespan(app):
        loader = asyncio.create_task(_load(state))
        yield
        loader.cancel()
        if state.batcher is not None:
            await state.batcher.stop()

    app = FastAPI(title="hf_mtl", version=__version__, lifespan=lifespan,
                  description="Every head of a multi-task model; routes shaped as Text Embeddings Inference's.")
    app.state.serve = state

    def count_error(request_or_path, status, error_type):
        path = request_or_path if isinstance(request_or_path, str) else request_or_path.url.path
        metrics.errors.labels(route=route_label(path), error_type=error_type).inc()

    install_error_handlers(app, count_error)
    app.add_middleware(BodyLimit, limit=settings.payload_limit, on_error=count_error)
    add_routes(app, state)
    app.mount("/page", StaticFiles(directory=PAGE), name="page")
    return app


async def _load(state: ServerState):
    try:
        await asyncio.to_thread(state.load)
    except Exception as error:  # /health says 503 with the reason; the log has the traceback
        logger.exception("the model failed to load")
        state.load_error = f"{type(error).__name__}: {error}"
        return
    batcher = DynamicBatcher(state.pipe, state.bf16, state.settings.max_batch_tokens, state.settings.max_batch_size,
                             state.metrics)
    batcher.start()
    state.batcher = batcher
    logger.info("ready")


def route_label(path: str) -> str:
    """`/heads/<task>/tag` -> `/heads/{task}/tag`: one label per route, however many task names clients try."""
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "heads":
        parts[2] = "{task}"
    return "/".join(parts)


def create_app_from_env() -> FastAPI:
    """The app factory of `hf-mtl serve`: each worker process reads the settings from the environment."""
    configure_logging()
    return create_app(ServeSettings(**json.loads(os.environ[SETTINGS_ENV])))


def settings_to_env(settings: ServeSettings) -> str:
    return json.dumps(dataclasses.asdict(settings))


def configure_logging():
    """The server's own log lines (the chosen precision, readiness) beside uvicorn's, in every worker process."""
    logger = logging.getLogger("hf_mtl.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
