"""`hf-mtl export-task` and `hf-mtl export-sentence-transformers`: stock folders that predict and embed as we do."""

import json

import numpy as np
import pytest
import torch
from conftest import save_tiny_encoder
from pipeline_helpers import SENTENCES, TASKS, raw_text
from transformers import AutoModel, AutoModelForTokenClassification, pipeline

from hf_mtl import MultiTaskModel, MultiTaskPipeline, cli
from hf_mtl.pipeline_mtl import split_words

TEXTS = [raw_text(words) for words, _, _ in SENTENCES]


def row_cosines(left, right):
    return (left * right).sum(axis=1) / np.linalg.norm(left, axis=1) / np.linalg.norm(right, axis=1)


def test_export_task_serves_the_same_predictions(capsys, model_dir, pipe, tmp_path):
    output = tmp_path / "ner"
    assert cli.main(["export-task", "--model", str(model_dir), "--task", "ner", "--output", str(output)]) == 0

    exported = AutoModelForTokenClassification.from_pretrained(output)
    assert exported.config.id2label == dict(enumerate(TASKS[1]["labels"]))
    ours = AutoModel.from_pretrained(model_dir)
    inputs = pipe.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(exported(**inputs).logits, ours(**inputs).logits["ner"], atol=1e-5, rtol=1e-5)

    # The stock pipeline tags tokens; at each word's first token its tag must be ours.
    stock = pipeline("token-classification", model=str(output), device="cpu")
    for text, result in zip(TEXTS, pipe(TEXTS, bf16=False, return_tags=True)):
        word_starts = {start for start, _ in split_words(text)}
        theirs = {token["start"]: token["entity"] for token in stock(text) if token["start"] in word_starts}
        mine = {start: tag for (start, _), tag in zip(split_words(text), result["tags"]["ner"]) if tag != "O"}
        assert theirs == mine


@pytest.mark.parametrize(
    "task, message",
    [("topic", "this model's sentence heads read 'mean' pooling"), ("nope", "'nope': not a task of")],
)
def test_export_task_refuses_what_a_stock_model_cannot_reproduce(capsys, model_dir, tmp_path, task, message):
    status = cli.main(["export-task", "--model", str(model_dir), "--task", task, "--output", str(tmp_path / "x")])
    assert status == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_export_sentence_transformers_matches_embed(capsys, model_dir, pipe, tmp_path):
    from sentence_transformers import SentenceTransformer

    output = tmp_path / "st"
    assert cli.main(["export-sentence-transformers", "--model", str(model_dir), "--output", str(output)]) == 0

    model = SentenceTransformer(str(output), device="cpu")
    texts = TEXTS + ["short", " ".join(TEXTS * 20)]  # the last one is truncated by both sides alike
    assert row_cosines(model.encode(texts), pipe.embed(texts)).min() >= 0.9999
    assert json.loads((output / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]


@pytest.mark.parametrize(
    "model_type, pooling, normalize",
    [("bert", "cls", True), ("bert", "max", False), ("bert", "pooler", True), ("distilbert", "mean", False)],
)
def test_export_sentence_transformers_pooling_modes(tokenizer, tmp_path, model_type, pooling, normalize):
    from sentence_transformers import SentenceTransformer

    save_tiny_encoder(tmp_path / "encoder", model_type=model_type)
    model = MultiTaskModel.from_encoder(
        str(tmp_path / "encoder"), tasks=TASKS, pooling=pooling, normalize_embeddings=normalize
    )
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    cli.main(["export-sentence-transformers", "--model", str(tmp_path / "model"), "--output", str(tmp_path / "st")])

    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    modules = [module["type"].rsplit(".", 1)[1] for module in modules]
    assert modules == ["Transformer", "Pooling"] + ["Dense"] * (pooling == "pooler") + ["Normalize"] * normalize
    ours = MultiTaskPipeline(str(tmp_path / "model"))
    theirs = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(TEXTS)
    embeddings = ours.embed(TEXTS, bf16=False)
    assert row_cosines(theirs, embeddings).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), np.linalg.norm(embeddings, axis=1), rtol=1e-4)
