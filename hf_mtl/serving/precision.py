"""
The default precision of a served model. bf16 is emulated (many times slower) on CPUs without native bf16, so those
run float32 without asking. Where the CPU has it, whether bf16 pays off depends on the CPU (BENCHMARKS.md), so the
server measures both on its own model once and remembers the answer per CPU, software and model shape in
`~/.cache/hf_mtl/serve_precision.json`.
"""

import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from ..precision import cpu_has_native_bf16

logger = logging.getLogger("hf_mtl.serve")
# Short utterances as served traffic mostly is; 32 of them make one batch, timed as the best of a few runs.
PROBE_TEXT = "book a table for two at a quiet italian restaurant in the city centre tonight at eight"
PROBE_ROWS, PROBE_RUNS = 32, 3
# bf16 must win clearly: its outputs move by ~1e-3 against float32, which is only worth a real speed-up.
BF16_MIN_SPEEDUP = 1.1


def cache_file() -> Path:
    root = os.environ.get("HF_MTL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hf_mtl"
    )
    return Path(root) / "serve_precision.json"


def machine_key(pipe, backend: str) -> str:
    """What the measurement depends on: the CPU, the thread count, the software and the model's shape."""
    encoder = pipe.model.config.encoder
    shape = [getattr(encoder, "model_type", "?"), getattr(encoder, "hidden_size", "?"),
             getattr(encoder, "num_hidden_layers", "?"), len(pipe.tasks)]
    return "|".join(map(str, [_cpu_name(), torch.get_num_threads(), torch.__version__, backend, *shape]))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose_bf16(pipe, backend: str, requested) -> tuple:
    """`(bf16, why)`: the asked precision, else float32 where bf16 is not native or not offered, else the faster of
    the two on this machine (measured once, then read from the cache)."""
    if requested is not None:
        return requested, "as asked (--bf16 / --no-bf16)"
    if backend == "onnx":
        return False, "the onnx backend runs the graph's own precision"
    if not cpu_has_native_bf16():
        return False, "float32: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 is only emulated"
    key, path = machine_key(pipe, backend), cache_file()
    cache = _read_cache(path)
    if key not in cache:
        cache[key] = measure(pipe)
        _write_cache(path, cache)
    seconds = cache[key]
    bf16 = seconds["bf16"] * BF16_MIN_SPEEDUP < seconds["float32"]
    speedup = seconds["float32"] / seconds["bf16"]
    return bf16, f"{'bf16' if bf16 else 'float32'}: bf16 measured {speedup:.2f}x float32 on this machine ({path})"


def measure(pipe) -> dict:
    """Seconds of one batch of `PROBE_ROWS` short texts in float32 and in bf16, the best of `PROBE_RUNS` each."""
    texts = [PROBE_TEXT] * PROBE_ROWS
    seconds = {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        pipe(texts[:2], bf16=bf16)  # the first call of a precision pays one-time costs
        runs = []
        for _ in range(PROBE_RUNS):
            start = time.perf_counter()
            pipe(texts, bf16=bf16)
            runs.append(time.perf_counter() - start)
        seconds[name] = min(runs)
    return seconds


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, cache: dict) -> None:
    try:  # a read-only home only costs the measurement at every start
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        os.replace(staging, path)
    except OSError as error:
        logger.warning(f"could not cache the precision measurement in {path}: {error}")
