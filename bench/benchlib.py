"""Shared by bench/quality.py and bench/speed.py: what a result records about its machine, and writing a marked
section of BENCHMARKS.md."""

import datetime
import os
import platform
import re
from pathlib import Path


def environment() -> dict:
    import torch
    import transformers

    from hf_mtl.pipeline_mtl import NATIVE_BF16_ENV, cpu_has_native_bf16

    cpu, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return dict(
        cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(), native_bf16=cpu_has_native_bf16(),
        cpu_bf16_flags=sorted(flags & {"amx_bf16", "avx512_bf16"}), native_bf16_override=os.environ.get(NATIVE_BF16_ENV),
        python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
        platform=platform.platform(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def replace_section(path: Path, begin: str, end: str, body: str, heading: str = "") -> None:
    """Put `body` between the `begin` / `end` markers of `path`, or append it (under `heading`) when they are missing."""
    block = f"{begin}\n{body}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + (f"{heading}\n\n" if heading else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
