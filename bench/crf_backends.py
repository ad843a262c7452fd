"""A CRF model on every backend: a trained SNIPS recipe model (CRF slots) exported by `hf-mtl export-onnx --quantize
int8` and served by ONNX Runtime and OpenVINO, against torch.

    python run_mtl.py bench/configs/snips_minilm.json            # the recipe model, into bench/runs/snips_minilm
    python bench/crf_backends.py --crf-model bench/runs/snips_minilm --threads 2
    python bench/crf_backends.py --smoke --crf-model DIR --out tmp/crf.json --markdown tmp/BENCHMARKS.md   # CI

Run from the repository root, alone on the machine. Writes `--out` (default bench/results/crf_backends.json) and the
section between `<!-- crf-backends:begin -->` and `<!-- crf-backends:end -->` of `--markdown` (default BENCHMARKS.md).

What is measured:
1. agreement: ONNX Runtime fp32 and OpenVINO fp32 against torch fp32 on every SNIPS test sentence (intent and every
   slot tag; target: identical);
2. int8 (`model_int8.onnx`) and OpenVINO bf16 against torch fp32 on dev: intent accuracy and slot F1 (target: at most
   0.3 slot-F1 points lost by int8);
3. throughput of the CRF decoding: per backend, the exported CRF model against the same graph decoded by a softmax
   argmax (the export folder again with `crf` off in its config.json: the same encoder and emission head, so the
   ratio is the cost of Viterbi alone; target >= 0.85). The methods take turns every 1,000 sentences of the SNIPS
   test set repeated to `--sentences`, in one process, median of `--repeats`.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchlib import SNIPS, cpu_name, environment, read_snips, replace_section  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MARK_BEGIN, MARK_END = "<!-- crf-backends:begin -->", "<!-- crf-backends:end -->"
EXPORT_DIR = ROOT / "bench" / "runs" / "crf_export"
BATCH = 64
BLOCK_SENTENCES = 1000
TARGETS = {"identical": 0, "int8_slot_f1_points": 0.3, "crf_vs_softmax": 0.85}
# (method, backend, graph file, bf16, decoded with the CRF)
METHODS = {
    "torch_fp32": ("torch", None, False, True),
    "onnx_fp32": ("onnx", "model.onnx", False, True),
    "onnx_int8": ("onnx", "model_int8.onnx", False, True),
    "openvino_fp32": ("openvino", "model.onnx", False, True),
    "openvino_bf16": ("openvino", "model.onnx", True, True),
    "onnx_fp32_softmax": ("onnx", "model.onnx", False, False),
    "openvino_fp32_softmax": ("openvino", "model.onnx", False, False),
}
AGREEMENT = [("onnx_fp32", "test"), ("openvino_fp32", "test"), ("onnx_int8", "dev"), ("openvino_bf16", "dev")]
THROUGHPUT = [("onnx_fp32", "onnx_fp32_softmax"), ("openvino_fp32", "openvino_fp32_softmax")]


def export(crf_model: Path, export_dir: Path) -> dict:
    """The CRF model exported with int8, and a softmax twin of the export (config.json with `crf` off)."""
    from hf_mtl.onnx import export_onnx

    started = time.perf_counter()
    export_onnx(str(crf_model), str(export_dir / "crf"), quantize="int8")
    seconds = time.perf_counter() - started
    softmax = export_dir / "softmax"
    softmax.mkdir(parents=True, exist_ok=True)
    for path in (export_dir / "crf").iterdir():
        if path.name == "config.json":
            config = json.loads(path.read_text(encoding="utf-8"))
            config["tasks"] = [{key: value for key, value in task.items() if key not in ("crf", "bio_constraints")}
                               for task in config["tasks"]]
            (softmax / path.name).write_text(json.dumps(config, indent=2), encoding="utf-8")
        elif path.name != "crf.safetensors" and not (softmax / path.name).exists():
            (softmax / path.name).symlink_to(path.resolve())
    crf_tasks = [task["name"] for task in json.loads((export_dir / "crf" / "config.json").read_text())["tasks"]
                 if task.get("crf")]
    return dict(seconds=seconds, crf_tasks=crf_tasks,
                file_mib={path.name: path.stat().st_size / 2**20 for path in (export_dir / "crf").glob("*.onnx")})


def pipeline(method: str, crf_model: Path, export_dir: Path):
    from hf_mtl import MultiTaskPipeline

    backend, file_name, bf16, crf = METHODS[method]
    if backend == "torch":
        return MultiTaskPipeline(str(crf_model), bf16=bf16, batch_size=BATCH)
    folder = export_dir / ("crf" if crf else "softmax")
    return MultiTaskPipeline(str(folder), backend=backend, file_name=file_name, bf16=bf16, batch_size=BATCH)


def predictions(pipe, rows: list) -> list:
    outputs = pipe([row["words"] for row in rows], is_split_into_words=True, return_tags=True)
    return [dict(intent=out["intent"]["label"], slots=out["tags"]["slots"]) for out in outputs]


def scores(rows: list, predicted: list) -> dict:
    from seqeval.metrics import f1_score

    correct = sum(row["intent"] == guess["intent"] for row, guess in zip(rows, predicted))
    return dict(intent_accuracy=100 * correct / len(rows),
                slot_f1=100 * float(f1_score([row["tags"] for row in rows], [guess["slots"] for guess in predicted])))


def agreement(args) -> list:
    """Each AGREEMENT method against torch fp32 on its split: sentences predicted differently, score changes."""
    splits = {split: read_snips(split, 64 if args.smoke else None) for split in ("test", "dev")}
    reference = {split: predictions(pipeline("torch_fp32", args.crf_model, args.export_dir), rows)
                 for split, rows in splits.items()}
    rows = []
    for method, split in AGREEMENT:
        try:
            predicted = predictions(pipeline(method, args.crf_model, args.export_dir), splits[split])
        except Exception as error:  # noqa: BLE001  (kept in the report: e.g. the openvino extra missing)
            rows.append(dict(method=method, split=split, error=f"{type(error).__name__}: {error}"))
            continue
        ours, theirs = scores(splits[split], predicted), scores(splits[split], reference[split])
        differing = sum(a != b for a, b in zip(predicted, reference[split]))
        row = dict(method=method, split=split, sentences=len(predicted), sentences_predicted_differently=differing,
                   intent_accuracy=ours["intent_accuracy"], slot_f1=ours["slot_f1"],
                   torch_fp32_intent_accuracy=theirs["intent_accuracy"], torch_fp32_slot_f1=theirs["slot_f1"],
                   slot_f1_difference=ours["slot_f1"] - theirs["slot_f1"],
                   intent_difference=ours["intent_accuracy"] - theirs["intent_accuracy"])
        if split == "test":
            row["target"], row["reached"] = "identical", differing == 0
        elif method == "onnx_int8":
            row["target"] = f"≥ -{TARGETS['int8_slot_f1_points']} slot-F1 points"
            row["reached"] = row["slot_f1_difference"] >= -TARGETS["int8_slot_f1_points"]
        rows.append(row)
    return rows


def throughput(args) -> dict:
    """Sentences/s per method of THROUGHPUT, taking turns every BLOCK_SENTENCES (order rotating), median of repeats."""
    test = read_snips("test")
    texts = [" ".join(test[index % len(test)]["words"]) for index in range(args.sentences)]
    blocks = [texts[start:start + BLOCK_SENTENCES] for start in range(0, len(texts), BLOCK_SENTENCES)]
    methods = sorted({method for pair in THROUGHPUT for method in pair})
    pipes, errors = {}, {}
    for method in methods:
        try:
            pipes[method] = pipeline(method, args.crf_model, args.export_dir)
            pipes[method](texts[:3 * BATCH])  # warm-up: one-off costs (OpenVINO compiles on the first call)
        except Exception as error:  # noqa: BLE001
            errors[method] = f"{type(error).__name__}: {error}"
            pipes.pop(method, None)
    seconds = {method: [] for method in pipes}
    for repeat in range(args.repeats):
        for method in pipes:
            seconds[method].append(0.0)
        for number, block in enumerate(blocks):
            order = list(pipes)
            shift = (number + repeat) % len(order) if order else 0
            for method in order[shift:] + order[:shift]:
                started = time.perf_counter()
                pipes[method](block)
                seconds[method][-1] += time.perf_counter() - started
    rates = {method: dict(sentences=len(texts), seconds_all=times, sentences_per_second=len(texts) / statistics.median(times))
             for method, times in seconds.items()}
    rates.update({method: dict(error=error) for method, error in errors.items()})
    ratios = []
    for crf, softmax in THROUGHPUT:
        if "sentences_per_second" not in rates.get(crf, {}) or "sentences_per_second" not in rates.get(softmax, {}):
            ratios.append(dict(crf=crf, softmax=softmax, ratio=None, note="not measured"))
            continue
        value = rates[crf]["sentences_per_second"] / rates[softmax]["sentences_per_second"]
        per_repeat = [b / a for a, b in zip(rates[crf]["seconds_all"], rates[softmax]["seconds_all"])]
        ratios.append(dict(crf=crf, softmax=softmax, ratio=value, per_repeat=per_repeat,
                           target=TARGETS["crf_vs_softmax"], reached=value >= TARGETS["crf_vs_softmax"]))
    return dict(methods=rates, ratios=ratios)


def num(value, digits=2):
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(summary: dict) -> str:
    env = summary["environment"]
    lines = [f"Machine: {cpu_name(env)}, {env['cpu_count']} CPU cores, torch threads {env['torch_threads']}, "
             f"{'native' if env['native_bf16'] else 'no native (emulated)'} bf16; torch {env['torch']}, "
             f"transformers {env['transformers']}. Run {env['date']} by `{summary['command']}`"
             + (" (smoke: not a measurement)." if summary["smoke"] else "."),
             "", f"Model: `{summary['crf_model']}` (CRF tasks {summary['export']['crf_tasks']}), exported with int8 in "
             f"{num(summary['export']['seconds'], 1)} s.", "",
             "| backend | split | sentences | sentences differing from torch fp32 | intent acc. | slot F1 | Δ slot F1 "
             "| target | |", "|---|---|---|---|---|---|---|---|---|"]
    for row in summary["agreement"]:
        if "error" in row:
            lines.append(f"| {row['method']} | {row['split']} | not measured: {row['error'][:100]} | | | | | | |")
            continue
        state = "" if "reached" not in row else ("reached" if row["reached"] else "not reached")
        lines.append(f"| {row['method']} | {row['split']} | {row['sentences']} | {row['sentences_predicted_differently']} "
                     f"| {num(row['intent_accuracy'])} | {num(row['slot_f1'])} | {row['slot_f1_difference']:+.2f} | "
                     f"{row.get('target', '')} | {state} |")
    lines += ["", f"Throughput on {summary['settings']['sentences']:,} SNIPS test sentences (repeated), batches of "
              f"{BATCH}, methods taking turns every {BLOCK_SENTENCES}, median of {summary['settings']['repeats']}; the "
              "softmax row is the same graph decoded by argmax.", "",
              "| CRF | sentences/s | softmax | sentences/s | ratio | per repeat | target | |",
              "|---|---|---|---|---|---|---|---|"]
    methods = summary["throughput"]["methods"]
    for row in summary["throughput"]["ratios"]:
        if row["ratio"] is None:
            error = methods.get(row["crf"], {}).get("error") or methods.get(row["softmax"], {}).get("error") or ""
            lines.append(f"| {row['crf']} | not measured: {error[:100]} | {row['softmax']} | | | | | |")
            continue
        lines.append(f"| {row['crf']} | {num(methods[row['crf']]['sentences_per_second'], 1)} | {row['softmax']} | "
                     f"{num(methods[row['softmax']]['sentences_per_second'], 1)} | {num(row['ratio'])} | "
                     f"{', '.join(num(value) for value in row['per_repeat'])} | ≥ {row['target']} | "
                     f"{'reached' if row['reached'] else 'not reached'} |")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crf-model", type=Path, required=True, help="a trained hf_mtl SNIPS folder with CRF slots")
    parser.add_argument("--sentences", type=int, default=5000, help="throughput sentences (SNIPS test, repeated)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: torch's)")
    parser.add_argument("--smoke", action="store_true", help="CI: 64 sentences per split, one repeat")
    parser.add_argument("--export-dir", type=Path, default=EXPORT_DIR, help="where the exports go")
    parser.add_argument("--out", type=Path, default=RESULTS / "crf_backends.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sentences, args.repeats = min(args.sentences, 2 * BATCH), 1
    args.crf_model, args.export_dir = args.crf_model.resolve(), args.export_dir.resolve()
    args.out, args.markdown = args.out.resolve(), args.markdown.resolve()
    return args


def command_line(args) -> str:
    model = args.crf_model.relative_to(ROOT) if args.crf_model.is_relative_to(ROOT) else args.crf_model
    parts = ["python bench/crf_backends.py", f"--crf-model {model}"]
    parts += [f"--threads {args.threads}"] * (args.threads is not None) + ["--smoke"] * args.smoke
    parts += [f"--sentences {args.sentences}"] * (not args.smoke and args.sentences != 5000)
    return " ".join(parts)


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:  # before torch is imported
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not SNIPS.is_dir():
        raise SystemExit(f"no SNIPS data at {SNIPS}: the benchmark needs ../shared/data/snips")
    env = environment()
    print(f"crf_backends: {cpu_name(env)}, torch threads {env['torch_threads']}", flush=True)
    model = args.crf_model.relative_to(ROOT) if args.crf_model.is_relative_to(ROOT) else args.crf_model
    summary = dict(command=command_line(args), smoke=args.smoke, environment=env, crf_model=str(model),
                   settings=dict(sentences=args.sentences, repeats=args.repeats, batch=BATCH), targets=TARGETS)
    summary["export"] = export(args.crf_model, args.export_dir)
    summary["agreement"] = agreement(args)
    summary["throughput"] = throughput(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    replace_section(args.markdown, MARK_BEGIN, MARK_END, markdown(summary), heading="## A CRF model on every backend")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
