"""Inference timing of the speed benchmark: hf_mtl's MultiTaskPipeline on every backend (torch eager and
torch.compile, ONNX Runtime and OpenVINO on the `hf-mtl export-onnx` graph) against two stock single-task models and
two stock `transformers.pipeline`s, the methods taking turns block by block in one process; per method also its peak
RSS, load time and first call in a process of its own, and the export itself. Imported by bench/speed.py."""

import statistics
import time
from pathlib import Path

from benchlib import module_help, peak_rss_mib, read_snips, repeated  # bench/ is on sys.path when a script of it runs
from speed_models import PassRecorder, key_of, model_shape, mtl_model, stock_models, use_inductor_cache

BATCH_INFER = 64
# Methods take turns every this many sentences (the order rotating), so that a shared machine's changing speed falls
# on all of them alike instead of on whichever ran during a slow minute.
BLOCK_SENTENCES = 1000
WARMUP_SENTENCES = 3 * BATCH_INFER
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



def backend_of(key: tuple) -> str:
    """The `--backends` name of a pipeline method: torch, compiled, onnx or openvino."""
    setting = PIPELINE_SETTINGS.get(key, {"backend": "torch"})
    return "compiled" if setting.get("compile") else setting["backend"]


def installed_backends() -> list:
    """torch and compiled always; onnx and openvino where their packages are installed."""
    import importlib.util

    return ["torch", "compiled"] + [name for name, module in (("onnx", "onnxruntime"), ("openvino", "openvino"))
                                    if importlib.util.find_spec(module) is not None]



if __name__ == "__main__":
    module_help(__doc__, "bench/speed.py")
