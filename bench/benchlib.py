"""Shared by the bench/ scripts: what a result records about its machine, writing a marked section of BENCHMARKS.md,
and the SNIPS rows and labels the speed and CRF benchmarks read."""

import argparse
import datetime
import os
import platform
import re
import resource
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNIPS = ROOT.parent / "shared" / "data" / "snips"


def environment() -> dict:
    import torch
    import transformers

    from hf_mtl.precision import NATIVE_BF16_ENV, cpu_has_native_bf16

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


def bf16_tag(env: dict) -> str:
    """Whether an `environment()` record's CPU has native bf16, with the instructions where recorded."""
    if not env.get("native_bf16"):
        return f"no native bf16 ({env.get('cpu_capability', '?')})"
    flags = env.get("cpu_bf16_flags")
    return f"native bf16 ({', '.join(flags)})" if flags else "native bf16"


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


def peak_rss_mib() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def read_snips(split: str, limit=None) -> list:
    """Rows {words, tags, intent} of one SNIPS split (JointBERT layout: seq.in, seq.out, label)."""
    folder = SNIPS / split
    lines = {name: (folder / name).read_text(encoding="utf-8").splitlines() for name in ("seq.in", "seq.out", "label")}
    rows = [dict(words=words.split(), tags=tags.split(), intent=intent.strip())
            for words, tags, intent in zip(lines["seq.in"], lines["seq.out"], lines["label"])]
    return rows[:limit] if limit else rows


def snips_labels() -> tuple:
    """Intent and slot label lists as hf_mtl builds them from the train split (sorted; `O` first)."""
    from hf_mtl.tasks import SingleLabelClassificationTask, TokenClassificationTask

    train = read_snips("train")
    intent = SingleLabelClassificationTask(name="intent", type="sequence_classification")
    slots = TokenClassificationTask(name="slots", type="token_classification")
    return (list(intent.label_list_from([row["intent"] for row in train])),
            list(slots.label_list_from([row["tags"] for row in train])))


def snips_tasks(intents, tags) -> list:
    """The hf_mtl task list of SNIPS: intent (sequence classification) and slots (token classification)."""
    return [{"name": "intent", "type": "sequence_classification", "labels": intents},
            {"name": "slots", "type": "token_classification", "labels": tags}]


def repeated(rows: list, count: int) -> list:
    """`count` rows: the list repeated (SNIPS test has 700 sentences; the benchmark wants thousands)."""
    return [rows[index % len(rows)] for index in range(count)]


def module_help(doc: str, entry_point: str) -> None:
    """`--help` of a module that a benchmark script imports: its docstring, and the script that runs it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"This module has no command of its own: run `python {entry_point}`.")
    parser.parse_args()
    parser.error(f"nothing to run here: run `python {entry_point}` (--help for its options)")
