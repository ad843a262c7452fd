"""Speed benchmark of hf_mtl: inference and training throughput against stock transformers, side by side in one run.

    python bench/speed.py                               # the full benchmark (a quiet machine; roughly 40+ min on 2 cores)
    python bench/speed.py --threads 1                   # the same on one torch/OpenMP thread
    python bench/speed.py --trained-model bench/runs/snips_mtl_seed2   # + accuracy per backend and precision
    python bench/speed.py --profile                     # + bench/results/speed_profile.txt (torch.profiler, cProfile)
    python bench/speed.py --smoke --model DIR --out tmp/speed.json --markdown tmp/BENCHMARKS.md   # CI, seconds
    python bench/speed.py --backends torch,onnx         # only these pipeline backends (default: every installed one)

Run from the repository root. Writes `--out` (default bench/results/speed.json) and the section between
`<!-- speed:begin -->` and `<!-- speed:end -->` of `--markdown` (default BENCHMARKS.md). SNIPS is read from
../shared/data/snips (never copied into the repository).

What is measured, in this order:
1. peak `torch.matmul` GFLOP/s in float32 and bfloat16 (the yardstick for "% of peak" / MFU of that precision);
2. inference over the SNIPS test sentences repeated to `--sentences`: hf_mtl's MultiTaskPipeline (its defaults, then
   batch 64 on every backend: torch eager fp32 / bf16, torch.compile fp32 / bf16, ONNX Runtime fp32 / int8 and
   OpenVINO fp32 / bf16 on the `hf-mtl export-onnx` folder) against two stock single-task models run one after the
   other (the same tokenization shared by both, length-sorted batches of 64) and against two stock
   `transformers.pipeline`s; per method also its load time and first-call latency (torch.compile: with an empty and
   with a warm inductor cache, each in a fresh process);
3. training throughput of the joint hf_mtl model (eager, torch.compile, fused AdamW) against the two stock models
   trained one after the other on the same length-grouped batches (a plain torch loop with AdamW, not Trainer: only
   the step is timed);
4. padding overhead (computed / real tokens) of these batchings against padding every row to 128;
5. with `--trained-model`, dev intent accuracy and slot F1 per backend and precision against torch fp32, and whether
   the fp32 exports predict exactly what torch fp32 predicts on the SNIPS test set;
6. with `--profile`, per backend: torch.profiler ops (by self CPU time, and grouped by input shape for the matrix
   sizes), ONNX Runtime's per-operator profile, and cProfile of the whole call (tokenizer, postprocessing).

Jobs run in subprocesses (`--worker`); medians over `--repeats`. The inference methods are timed in one process, taking
turns every 1,000 sentences, so that the machine's changing speed (2x swings within seconds on a shared 2-vCPU VM)
falls on all of them alike; each method's peak RSS comes from a process of its own. On a CPU
without native bfloat16 (no AVX512-BF16 / AMX) bf16 is emulated and slower than fp32 (a MiniLM forward
~7x, a bare matmul up to ~60x): the bf16 columns are then measured on a small subset only, and the JSON says so.

This file plans the run and starts the worker processes; what each measures lives beside it: speed_inference.py
(inference, load time, first call, export), speed_training.py (training steps, padding), speed_backends.py (accuracy
and profile per backend), speed_models.py (models, FLOP counting, matmul peak), speed_report.py (summary, ratios,
the BENCHMARKS.md section).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchlib import ROOT, SNIPS, environment  # bench/ is on sys.path when a script of it runs
from speed_backends import run_accuracy, run_profile
from speed_inference import PIPELINE_SETTINGS, backend_of, installed_backends, run_export, run_inference, run_memory
from speed_models import DEFAULT_ENCODER, EMULATED_BF16_SENTENCES, EMULATED_BF16_STEPS, key_of, matmul_peak
from speed_report import inference_results, markdown, num, summarize, write_markdown
from speed_training import run_training

RESULTS = ROOT / "bench" / "results"
EXPORT_DIR = ROOT / "bench" / "runs" / "speed_export"  # the exported model and the inductor cache of one run
PYTHON = sys.executable
WORKERS = {"infer": run_inference, "memory": run_memory, "train": run_training, "accuracy": run_accuracy,
           "profile": run_profile, "export": run_export}


def worker(jobs: list) -> None:
    """Run jobs in this process and print one JSON line; a failure is recorded, not raised (e.g. bf16 pipelines)."""
    results = []
    for job in jobs:
        try:
            results.append(dict(job=job, **WORKERS[job["kind"]](job)))
        except Exception as error:  # noqa: BLE001  (kept in the report: why a column is missing)
            results.append(dict(job=job, error=f"{type(error).__name__}: {error}"))
    print(json.dumps({"results": results}))


def in_subprocess(jobs: list, threads) -> list:
    command = [PYTHON, str(Path(__file__).resolve()), "--worker", json.dumps(jobs)]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"results"')]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"worker {jobs} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])["results"]


def plan(args, native: bool) -> list:
    """The jobs of this run; on emulated bf16 the bf16 jobs get a small subset so the run stays within minutes."""
    base = dict(model=args.model, trained=str(args.trained_model) if args.trained_model else None, repeats=args.repeats,
                crf_trained=str(args.crf_model) if args.crf_model else None,
                export_dir=str(args.export_dir), inductor_cache=str(args.export_dir / "inductor_cache"),
                # --smoke: dynamo's tracing without inductor's code generation (minutes on 2 cores)
                compile_options={"backend": "eager"} if args.smoke else None)
    jobs = [dict(base, kind="export", precision="fp32")] if {"onnx", "openvino"} & set(args.backends) else []
    jobs += inference_jobs(base, args, native) + training_jobs(base, args, native)
    if args.trained_model:
        jobs += accuracy_jobs(base, args)
    if args.profile:
        jobs.append(profile_job(base, args, native))
    return jobs


def inference_jobs(base: dict, args, native: bool) -> list:
    """One timing job per sentence count (the methods in it take turns), one memory job per method."""
    bf16_sentences = args.sentences if native else min(args.sentences, EMULATED_BF16_SENTENCES)
    pipelines = [key for key, setting in PIPELINE_SETTINGS.items()
                 if backend_of(key) in args.backends and (args.crf_model or not setting.get("crf"))]
    infer = [("hf_mtl_pipeline_default", "default"), *pipelines,
             ("hf_two_models", "fp32"), ("hf_two_models", "bf16"), ("hf_pipelines", "fp32"), ("hf_pipelines", "bf16")]
    groups, memory = {}, []
    for method, precision in infer:
        count = bf16_sentences if precision == "bf16" else args.sentences
        groups.setdefault(count, []).append(dict(method=method, precision=precision))
        memory.append(dict(base, kind="memory", method=method, precision=precision, sentences=count))
        if method == "hf_mtl_compiled":  # an emptied inductor cache, then a second fresh process on the one it left
            memory[-1]["cache"] = "cold"
            memory.append(dict(memory[-1], cache="warm"))
    return [dict(base, kind="infer", precision="mixed", methods=methods, sentences=count)
            for count, methods in groups.items()] + memory


def training_jobs(base: dict, args, native: bool) -> list:
    """Every training method in fp32 and bf16; fewer steps in bf16 where it is only emulated."""
    warmup = 1 if args.smoke else 3
    methods = ["hf_mtl_joint", "hf_mtl_joint_foreach_adamw", "hf_mtl_joint_fused_adamw"]
    methods += ["hf_mtl_joint_compiled"] * ("compiled" in args.backends) + ["hf_two_models"]
    jobs = []
    for method in methods:
        for precision in ("fp32", "bf16"):
            emulated = precision == "bf16" and not native
            jobs.append(dict(base, kind="train", method=method, precision=precision,
                             steps=min(args.train_steps, EMULATED_BF16_STEPS) if emulated else args.train_steps,
                             warmup=1 if emulated else warmup, train_rows=2000 if args.smoke else None))
    return jobs


def accuracy_jobs(base: dict, args) -> list:
    """
    Whole splits (700 sentences) even where bf16 is emulated: about 20 s at ~40 sentences/s. The fp32 exports must
    predict the test set exactly as torch fp32 does; the other precisions are scored on dev against it.
    """
    limit = EMULATED_BF16_SENTENCES if args.smoke else None
    checks = [("hf_mtl_pipeline", "fp32", "dev"), ("hf_mtl_pipeline", "bf16", "dev"),
              ("hf_mtl_pipeline", "fp32", "test"), ("hf_mtl_compiled", "bf16", "dev"),
              ("hf_mtl_onnx", "fp32", "test"), ("hf_mtl_onnx", "int8", "dev"),
              ("hf_mtl_openvino", "fp32", "test"), ("hf_mtl_openvino", "bf16", "dev")]
    return [dict(base, kind="accuracy", method=method, precision=precision, split=split, limit=limit)
            for method, precision, split in checks if backend_of((method, precision)) in args.backends]


def profile_job(base: dict, args, native: bool) -> dict:
    """The defaults and every backend in the precision it would run in, profiled into speed_profile.txt."""
    best = "bf16" if native else "fp32"
    profiled = [("hf_mtl_pipeline_default", "default"), ("hf_mtl_pipeline", best)]
    profiled += [key for key in (("hf_mtl_compiled", best), ("hf_mtl_onnx", "fp32"), ("hf_mtl_onnx", "int8"),
                                 ("hf_mtl_openvino", best)) if backend_of(key) in args.backends]
    return dict(base, kind="profile", precision="default", sentences=32 if args.smoke else 512,
                methods=[dict(method=method, precision=precision) for method, precision in profiled],
                path=str((args.out.parent / "speed_profile.txt").resolve()),
                model_label=str(args.trained_model or args.model))


def run_jobs(jobs: list, args) -> list:
    """One subprocess per job (peak RSS per method); --smoke runs them all in one (peak RSS shared), for speed."""
    if args.smoke:
        return in_subprocess(jobs, args.threads)
    results = []
    for job in jobs:
        name = ", ".join(f"{m['method']} {m['precision']}" for m in job["methods"]) if "methods" in job else \
            f"{job.get('method', '')} {job['precision']} {job.get('split') or job.get('cache') or ''}"
        print(f"  {job['kind']} {name} ...", flush=True)
        results.extend(in_subprocess([job], args.threads))
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_ENCODER, help="encoder folder or package: name (default MiniLM)")
    parser.add_argument("--trained-model", type=Path, default=None, help="a trained hf_mtl SNIPS folder")
    parser.add_argument("--crf-model", type=Path, default=None,
                        help="a trained hf_mtl SNIPS folder whose slots head is a CRF: its pipeline against the softmax one")
    parser.add_argument("--sentences", type=int, default=5000, help="inference sentences (SNIPS test, repeated)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--train-steps", type=int, default=30, help="timed training steps (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also write speed_profile.txt next to --out")
    parser.add_argument("--smoke", action="store_true", help="CI: tiny inputs (use with --model DIR), seconds")
    parser.add_argument("--backends", default=None,
                        help="comma-separated pipeline backends of torch,compiled,onnx,openvino (default: the installed)")
    parser.add_argument("--export-dir", type=Path, default=EXPORT_DIR,
                        help="where the ONNX export and torch.compile's cache go (default bench/runs/speed_export)")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sentences, args.repeats, args.train_steps = min(args.sentences, 32), 1, min(args.train_steps, 2)
    # Paths as the caller meant them: main() and the workers run from the repository root.
    args.out, args.markdown, args.export_dir = args.out.resolve(), args.markdown.resolve(), args.export_dir.resolve()
    available = installed_backends()
    args.backends = available if args.backends is None else [name.strip() for name in args.backends.split(",")]
    unknown = [name for name in args.backends if name not in available]
    if unknown:
        parser.error(f"--backends: {unknown} not among the installed backends {available}")
    if args.trained_model is not None:
        args.trained_model = args.trained_model.resolve()
    if Path(args.model).exists():
        args.model = str(Path(args.model).resolve())
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:  # before torch is imported, and inherited by the workers
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        worker(json.loads(args.worker))
        return 0
    os.chdir(ROOT)
    if not SNIPS.is_dir():
        raise SystemExit(f"no SNIPS data at {SNIPS}: the benchmark needs ../shared/data/snips")
    env = environment()
    native = env["native_bf16"]
    print(f"speed: {env['cpu']}, torch threads {env['torch_threads']}, native bf16 {native}", flush=True)
    size = 256 if args.smoke else 2048
    # An emulated bf16 2048^3 product takes ~20 s; 512 measures the same rate in a fraction of a second.
    peaks = [matmul_peak("fp32", size), matmul_peak("bf16", size if native else min(size, 512))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = run_jobs(plan(args, native), args)
    inference = inference_results(results)
    training = {key_of(r): r for r in results if r["job"]["kind"] == "train"}
    accuracy = {f"{key_of(r)}_{r['job']['split']}": r for r in results if r["job"]["kind"] == "accuracy"}
    summary = summarize(args, env, peaks, inference, training, accuracy)
    summary["profile"] = next((r for r in results if r["job"]["kind"] == "profile"), None)
    summary["export"] = next((r for r in results if r["job"]["kind"] == "export"), None)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_markdown(args.markdown, markdown(summary))
    print(f"speed: wrote {args.out} and the speed section of {args.markdown}")
    for name, r in summary["ratios"].items():
        print(f"  {name}: {num(r['ratio'], 2)} (target {r['target']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
