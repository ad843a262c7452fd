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

    cpu, flags, cpuid = platform.processor() or "", set(), {}
    try:  # the first processor's entry; "AMD EPYC" alone names several generations, its family and model do not
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                cpu = value
            elif key in ("cpu family", "model"):
                cpuid[key] = value
            elif key == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return dict(
        cpu=cpu, cpu_family_model=" ".join(f"{key} {value}" for key, value in cpuid.items()) or None,
        cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(), native_bf16=cpu_has_native_bf16(),
        cpu_bf16_flags=sorted(flags & {"amx_bf16", "avx512_bf16"}), native_bf16_override=os.environ.get(NATIVE_BF16_ENV),
        python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
        platform=platform.platform(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def cpu_name(env: dict) -> str:
    """The CPU of an `environment()` record, with its family and model where recorded (older results lack them)."""
    return f"{env['cpu']} ({env['cpu_family_model']})" if env.get("cpu_family_model") else env["cpu"]


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
