"""Training timing of the speed benchmark: optimizer steps (forward, backward, AdamW) of hf_mtl's joint model in
its variants against the two stock single-task models trained one after the other on the same length-grouped
batches, and the padding of these batchings. A plain torch loop, not Trainer: only the step is timed. Imported by
bench/speed.py."""

import statistics
import time

from benchlib import SNIPS, module_help, peak_rss_mib, snips_labels, snips_tasks  # bench/ is on sys.path
from speed_models import attention_flops, model_shape, mtl_model, stock_models, use_inductor_cache

BATCH_TRAIN = 32
MEGABATCH_MULT = 50  # transformers' LengthGroupedSampler: sort by length within 50 batches
PAD_TO = 128  # the SNIPS recipe's max_seq_length


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


# The joint model's training variants: eager with torch's default AdamW (a for-loop over the parameters on the CPU),
# compiled forward + backward, and the multi-tensor (foreach) and fused AdamW kernels.
TRAIN_VARIANTS = {
    "hf_mtl_joint": {},
    "hf_mtl_joint_compiled": {"compile": True},
    "hf_mtl_joint_foreach_adamw": {"adamw": {"foreach": True}},
    "hf_mtl_joint_fused_adamw": {"adamw": {"fused": True}},
}


def run_training(job: dict) -> dict:
    """Time optimizer steps (forward, backward, AdamW) of the joint model, or of both stock models on each batch."""
    import torch

    torch.manual_seed(0)
    variant = TRAIN_VARIANTS.get(job["method"], {})
    models, tokenizer = training_models(job)
    rows = train_rows(job, tokenizer)
    lengths = [len(row["input_ids"]) for row in rows]
    batches = spread_batches(rows, lengths, tokenizer, job["warmup"] + job["steps"])
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5, **variant.get("adamw", {}))
                  for name, m in models.items()}
    shapes = {name: model_shape(m) for name, m in models.items()}
    if variant.get("compile"):
        use_inductor_cache(job)
        models = {name: torch.compile(m, **(job.get("compile_options") or {})) for name, m in models.items()}
    step = training_step(models, optimizers, bf16=job["precision"] == "bf16")
    for model in models.values():
        model.train()
    started = time.perf_counter()
    for number, batch in enumerate(batches[:job["warmup"]]):
        for name in models:
            step(name, batch)
        if number == 0:
            first_step = time.perf_counter() - started  # torch.compile compiles here
    seconds = []
    for _ in range(job["repeats"]):
        started = time.perf_counter()
        for batch in batches[job["warmup"]:]:
            for name in models:  # the stock models one after the other: their times add up
                step(name, batch)
        seconds.append(time.perf_counter() - started)
    return dict(training_result(job, batches[job["warmup"]:], shapes, seconds), first_step_seconds=first_step,
                padding=training_padding(lengths), peak_rss_mib=peak_rss_mib())


def training_models(job: dict) -> tuple:
    """({name: model}, tokenizer): the joint model of a `TRAIN_VARIANTS` method, or the two stock models."""
    if job["method"] in TRAIN_VARIANTS:
        model, tokenizer = mtl_model(job)
        return {"joint": model}, tokenizer
    seq_model, tok_model, tokenizer = stock_models(job)
    return {"intent": seq_model, "slots": tok_model}, tokenizer


def spread_batches(rows: list, lengths: list, tokenizer, count: int) -> list:
    """`count` collated batches of one length-grouped epoch, spread evenly over it (a mega-batch starts with its
    longest batches, so the first `count` would be the epoch's longest)."""
    from hf_mtl.data.collator import MultiTaskCollator
    from hf_mtl.tasks import tasks_of_config

    epoch = length_grouped_batches(lengths, BATCH_TRAIN)
    stride = max(len(epoch) // count, 1)
    chosen = [epoch[(i * stride) % len(epoch)] for i in range(count)]
    collate = MultiTaskCollator(tokenizer, tasks_of_config(snips_tasks(*snips_labels())))
    return [collate([rows[i] for i in batch]) for batch in chosen]


def training_step(models: dict, optimizers: dict, bf16: bool):
    """step(name, batch): one forward, backward and AdamW step of one model; the stock models read their own labels."""
    import torch

    autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=bf16)

    def step(name, batch):
        inputs = {key: value for key, value in batch.items() if not key.endswith("_labels")}
        if name == "joint":
            labels = {key: value for key, value in batch.items() if key.endswith("_labels")}
        else:
            labels = {"labels": batch[f"{name}_labels"]}
        with torch.autocast(**autocast):
            loss = models[name](**inputs, **labels).loss
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    return step


def training_result(job: dict, timed: list, shapes: dict, seconds: list) -> dict:
    """Throughput, tokens and model FLOPs (6 N per token, forward and backward) of the timed steps."""
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
        precision=job["precision"], steps=job["steps"], warmup_steps=job["warmup"], batch_size=BATCH_TRAIN,
        seconds=median, seconds_all=seconds, sentences_per_second=job["steps"] * BATCH_TRAIN / median,
        tokens_per_second=computed / median, real_tokens_per_second=real / median, computed_tokens=computed,
        real_tokens=real, padding_ratio=computed / real, model_gflop=flops / 1e9, model_gflops=flops / 1e9 / median,
        non_embedding_params=[shape["non_embedding_params"] for shape in shapes.values()],
    )


if __name__ == "__main__":
    module_help(__doc__, "bench/speed.py")
