"""`hf-mtl serve`: check the options and the model folder, then run the app under uvicorn (one model per worker)."""

import os
import signal
import sys

from ..errors import ConfigError, ModelError
from ..pipeline_mtl import import_backend

WORKER_STARTUP_SECONDS = 120
LIMITS = ("max_batch_size", "max_batch_tokens", "max_client_batch_size", "max_concurrent_requests", "payload_limit")


def settings_from_args(args):
    from .app import ServeSettings

    settings = ServeSettings(
        model=args.model, backend=args.backend, onnx_file=args.onnx_file, bf16=args.bf16, compile=args.compile,
        max_batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
        max_client_batch_size=args.max_client_batch_size, max_concurrent_requests=args.max_concurrent_requests,
        payload_limit=args.payload_limit, default_head=args.default_head,
    )
    for name in LIMITS:
        if getattr(settings, name) < 1:
            option = "--batch-size" if name == "max_batch_size" else "--" + name.replace("_", "-")
            raise ConfigError(f"{option} must be at least 1, got {getattr(settings, name)}")
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    return settings


def check_model(settings) -> None:
    """Refuse a missing or damaged model, or a `--default-head` it lacks, at once: a server would only answer 503."""
    from ..configuration_mtl import MultiTaskConfig
    from ..loading import verify_model_folder
    from .app import default_head

    if settings.resolved_backend() == "torch":
        config = verify_model_folder(settings.model)
    elif not os.path.isdir(settings.model):
        raise ModelError(f"--model {settings.model}: no such folder (the onnx and openvino backends read exported "
                         "folders)")
    else:
        config = MultiTaskConfig.from_pretrained(settings.model)
    default_head(settings.default_head, config.tasks)


def run_serve(args) -> int:
    import_backend("fastapi", "serve")
    uvicorn = import_backend("uvicorn", "serve")
    from .app import SETTINGS_ENV, settings_to_env

    settings = settings_from_args(args)
    check_model(settings)
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    print(f"serving {settings.model} on http://{args.host}:{args.port} (page at /, API at /docs); "
          "/health answers 200 once the model is loaded", file=sys.stderr)
    # uvicorn stops on SIGTERM / Ctrl-C once the requests in flight are answered, then raises the signal again
    # under the handler it found: SIGTERM (an orchestrator stopping the server) ends here, with exit status 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run("hf_mtl.serving.app:create_app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, timeout_graceful_shutdown=args.graceful_timeout,
                    # A worker imports torch and the app before it answers the supervisor: seconds on a busy machine.
                    timeout_worker_healthcheck=WORKER_STARTUP_SECONDS)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
