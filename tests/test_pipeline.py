"""MultiTaskPipeline: word splitting, entity spans, long inputs in windows, embeddings, transformers.pipeline parity."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import BF16_COSINE_TOLERANCE, requires_native_bf16, tiny_encoder_config
from pipeline_helpers import SENTENCES, TASKS, assert_same_predictions, raw_text
from transformers import AutoModel

from hf_mtl import MultiTaskModel, MultiTaskPipeline, cli
from hf_mtl.pipeline_mtl import entities_from_tags, split_words, word_windows

TEXTS = [raw_text(words) for words, _, _ in SENTENCES]


def gold_entities(words: str, tags: str):
    """(type, text) of the gold entities of a `SENTENCES` entry, read off its space-separated words."""
    entities = []
    for word, tag in zip(words.split(), tags.split()):
        if tag.startswith("B-"):
            entities.append([tag[2:], word])
        elif tag.startswith("I-"):
            entities[-1][1] += " " + word
    return [tuple(entity) for entity in entities]


def spans_of(result, task="ner"):
    return [(entity["entity"], entity["start"], entity["end"]) for entity in result[task]]


def test_split_words_peels_edge_punctuation_only():
    text = "(Apple's) U.S. e-mail,  café\u0301 \"quoted\"... 3%"
    words = [text[start:end] for start, end in split_words(text)]
    assert words[:8] == ["(", "Apple's", ")", "U.S", ".", "e-mail", ",", "café\u0301"]
    assert words[8:] == ['"', "quoted", '"', ".", ".", ".", "3", "%"]


def test_split_words_gives_each_cjk_ideograph_a_word():
    text = "张三在北京工作。 在Apple的store，(北京)! 私は東京に𠀀\u0301住んで"
    spans = split_words(text)
    words = [text[start:end] for start, end in spans]
    assert words[:8] == list("张三在北京工作。")
    assert words[8:18] == ["在", "Apple", "的", "store", "，", "(", "北", "京", ")", "!"]
    # kana runs stay whole (no rule splits them); an ideograph keeps the combining mark that follows it
    assert words[18:] == ["私", "は", "東", "京", "に", "𠀀\u0301", "住", "んで"]
    assert all(start < end for start, end in spans) and spans == sorted(spans)
    assert "".join(words) == "".join(text.split())  # every character but the spaces, in one word, in order


def test_entities_from_tags_on_chinese_characters():
    text = "张三在北京工作"
    spans = split_words(text)
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"]
    entities = entities_from_tags(text, spans, tags, [0.9] * len(spans))
    assert [(entity["entity"], entity["text"], entity["start"], entity["end"]) for entity in entities] == [
        ("PER", "张三", 0, 2), ("LOC", "北京", 3, 5),
    ]


def test_entities_from_tags_spans_are_exact_slices():
    text = "Schwarzenegger, Schwarzenegger and (Apple) met New  York's mayor in Paris!"
    spans = split_words(text)
    words = [text[start:end] for start, end in spans]
    tags = {
        "Schwarzenegger": "B-PER", "(": "O", "Apple": "B-ORG", ")": "O", "New": "B-LOC", "York's": "I-LOC",
        "Paris": "B-LOC", ",": "O", "!": "O",
    }
    entities = entities_from_tags(text, spans, [tags.get(word, "O") for word in words], [0.5] * len(words))

    assert [(entity["entity"], entity["text"]) for entity in entities] == [
        ("PER", "Schwarzenegger"),
        ("PER", "Schwarzenegger"),
        ("ORG", "Apple"),
        ("LOC", "New  York's"),
        ("LOC", "Paris"),
    ]
    assert all(text[entity["start"] : entity["end"]] == entity["text"] for entity in entities)
    assert entities[0]["start"] != entities[1]["start"]  # repeated words keep their own offsets


def test_entities_from_tags_bio_rules():
    text = "a b c d e f"
    spans = split_words(text)
    tags = ["I-PER", "I-PER", "B-PER", "I-ORG", "LOC", "LOC"]
    entities = entities_from_tags(text, spans, tags, [1.0, 0.5, 1.0, 1.0, 0.2, 0.4])
    assert [(entity["entity"], entity["text"]) for entity in entities] == [
        ("PER", "a b"), ("PER", "c"), ("ORG", "d"), ("LOC", "e f"),
    ]
    assert entities[0]["score"] == pytest.approx(0.75)


@pytest.mark.parametrize("budget", [3, 8, 50])
def test_word_windows_cover_every_word_once(budget):
    counts = [1, 2, 0, 12, 1, 3, 1, 1, 2, 4, 1, 1, 5, 1] * 5
    windows = word_windows(counts, budget)
    owned = [word for _, _, owned_start, owned_end in windows for word in range(owned_start, owned_end)]
    assert owned == list(range(len(counts)))
    for start, end, owned_start, owned_end in windows:
        assert start <= owned_start <= owned_end <= end
        assert sum(counts[start:end]) <= budget or end - start == 1
    assert all(following[0] > window[0] for window, following in zip(windows, windows[1:]))


def test_predicts_gold_entities_and_sentence_labels(pipe):
    results = pipe(TEXTS, return_tags=True)
    for text, result, (words, tags, topic) in zip(TEXTS, results, SENTENCES):
        assert result["text"] == text
        assert result["topic"]["label"] == topic
        assert [(entity["entity"], entity["text"]) for entity in result["ner"]] == gold_entities(words, tags)
        assert all(text[entity["start"] : entity["end"]] == entity["text"] for entity in result["ner"])
        assert result["words"] == words.split() and result["tags"]["ner"] == tags.split()
    assert results[0]["ner"][0] == {"entity": "ORG", "text": "Apple", "start": 0, "end": 5, "score": pytest.approx(1.0)}


def test_batched_sorted_inputs_keep_order_and_results(pipe):
    shuffled = TEXTS[::-1] + ["", "Apple"]
    batched = pipe(shuffled, batch_size=3)
    for text, result in zip(shuffled, batched):
        alone = pipe(text)
        assert result["text"] == text and result["topic"]["label"] == alone["topic"]["label"]
        assert spans_of(result) == spans_of(alone)
    assert pipe([]) == []


def test_pre_split_words(pipe):
    words, tags, _ = SENTENCES[2]
    result = pipe(words.split(), is_split_into_words=True, return_tags=True)
    assert result["text"] == words and result["words"] == words.split() and result["tags"]["ner"] == tags.split()
    assert len(pipe([words.split(), ["Apple"]], is_split_into_words=True)) == 2


@requires_native_bf16
def test_bf16_switch_keeps_predictions(pipe):
    fp32, bf16 = pipe(TEXTS, bf16=False), pipe(TEXTS, bf16=True)
    assert [spans_of(result) for result in fp32] == [spans_of(result) for result in bf16]
    assert [result["topic"]["label"] for result in fp32] == [result["topic"]["label"] for result in bf16]


def test_2000_word_input_gets_a_tag_for_every_word(pipe):
    text = " ".join(TEXTS * 40)
    assert len(split_words(text)) >= 2000
    result = pipe(text, return_tags=True)
    assert len(result["tags"]["ner"]) == len(result["words"]) == len(split_words(text))
    assert all(text[entity["start"] : entity["end"]] == entity["text"] for entity in result["ner"])
    gold = sum(len(gold_entities(words, tags)) for words, tags, _ in SENTENCES) * 40
    assert len(result["ner"]) >= 0.95 * gold  # windows lose little context


def token_only_pipeline(tokenizer, folder):
    """A pipeline whose token logits depend on the token alone: no attention layers, no position embeddings."""
    torch.manual_seed(0)
    encoder = AutoModel.from_config(tiny_encoder_config("bert", num_hidden_layers=0))
    with torch.no_grad():
        encoder.embeddings.position_embeddings.weight.zero_()
    encoder.save_pretrained(folder)
    model = MultiTaskModel.from_encoder(str(folder), tasks=TASKS).eval()
    return MultiTaskPipeline(model, tokenizer=tokenizer, bf16=False, return_tags=True)


def test_windows_give_every_word_its_own_prediction(tokenizer, tmp_path):
    # Windowed tags must equal the tags of each sentence read on its own: any dropped or shifted word shows.
    tiny = token_only_pipeline(tokenizer, tmp_path)
    pieces = TEXTS + ["Pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + "."]
    windowed = tiny(" ".join(pieces * 5), max_length=16)
    expected = [tag for piece in pieces * 5 for tag in tiny(piece)["tags"]["ner"]]
    assert windowed["tags"]["ner"] == expected
    assert len(set(expected)) > 2


def test_chinese_text_is_tagged_per_character_also_in_windows(tokenizer, tmp_path):
    tiny = token_only_pipeline(tokenizer, tmp_path)
    text = "张三在北京工作，李四去了上海。王五说：“我们明天见！”"
    result = tiny(text)
    assert result["words"] == list(text) and len(result["tags"]["ner"]) == len(text)
    # the entities are the tags' spans, on the right characters
    expected = entities_from_tags(text, split_words(text), result["tags"]["ner"], [0.0] * len(text))
    assert [(e["entity"], e["start"], e["end"], e["text"]) for e in result["ner"]] == [
        (e["entity"], e["start"], e["end"], text[e["start"] : e["end"]]) for e in expected
    ]
    # 20 times longer than a 16-token window: windows by characters, each character its own tag
    long_text = "".join([text, "在Apple的store"] * 20)
    windowed = tiny(long_text, max_length=16)
    expected_tags = [tag for piece in [text, "在Apple的store"] * 20 for tag in tiny(piece)["tags"]["ner"]]
    assert windowed["words"] == [word for piece in [text, "在Apple的store"] * 20 for word in tiny(piece)["words"]]
    assert windowed["tags"]["ner"] == expected_tags
    assert len(set(expected_tags)) > 2
    assert all(long_text[e["start"] : e["end"]] == e["text"] for e in windowed["ner"])


def test_cli_predict_splits_chinese_like_the_pipeline(pipe, model_dir, tmp_path):
    lines = ["张三在北京工作。", "Apple在Paris开了店"]
    source, output = tmp_path / "input.txt", tmp_path / "predictions.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["predict", "--model", model_dir, "--input", source, "--output", output, "--tags", "--no-bf16"]
    assert cli.main([str(arg) for arg in argv]) == 0
    results = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert results[0]["words"] == list(lines[0])
    assert results[1]["words"] == ["Apple", "在", "Paris", "开", "了", "店"]
    assert_same_predictions(results, pipe(lines, return_tags=True, bf16=False), score_tolerance=1e-5)


def test_long_pairs_warn_that_words_past_the_cut_get_no_tags(pipe, caplog):
    long_text = " ".join(TEXTS * 30)
    pairs = [{"text": long_text, "text_pair": TEXTS[0]}, {"text": TEXTS[1], "text_pair": TEXTS[2]}]
    with caplog.at_level(logging.WARNING):
        results = pipe(pairs, return_tags=True, bf16=False)
    assert "1 of 2 sentence pairs are longer than 512 tokens and were truncated" in caplog.text
    assert caplog.text.count("sentence pairs are longer") == 1  # once per call
    tags = results[0]["tags"]["ner"]
    assert len(tags) == len(split_words(long_text)) and set(tags[-100:]) == {"O"}  # past the cut
    assert set(tags[:50]) != {"O"}  # before the cut the words are tagged
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipe(pairs[1:], bf16=False)
    assert "sentence pairs" not in caplog.text


def test_embed_and_similarity_in_float32(pipe, caplog):
    embeddings = pipe.embed(TEXTS, normalize=True, bf16=False)
    assert embeddings.shape == (len(TEXTS), 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert pipe.embed(TEXTS[0], bf16=False).shape == (384,)
    assert pipe.similarity(TEXTS[0], TEXTS[0], bf16=False) == pytest.approx(1.0, abs=1e-5)
    matrix = pipe.similarity(TEXTS[:2], TEXTS, bf16=False)
    assert matrix.shape == (2, len(TEXTS))
    # In float32 an embedding does not depend on the batch it was computed in (TEXTS[:2] are embedded on their own).
    np.testing.assert_allclose(matrix, embeddings[:2] @ embeddings.T, atol=1e-5)
    one_by_one = np.stack([pipe.embed(text, normalize=True, bf16=False) for text in TEXTS])
    np.testing.assert_allclose(one_by_one, embeddings, atol=1e-5)

    with caplog.at_level(logging.WARNING):
        long = pipe.embed([" ".join(TEXTS * 30), "short", " ".join(TEXTS * 40)], bf16=False)
    assert long.shape == (3, 384)
    assert "2 of 3 texts are longer than 512 tokens" in caplog.text


@requires_native_bf16
def test_embed_and_similarity_in_bf16(pipe):
    embeddings = pipe.embed(TEXTS, normalize=True, bf16=True)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)  # normalised in float32
    # similarity is the dot products of the two calls' embeddings in the same precision, exactly
    left, right = pipe.embed(TEXTS[:2], normalize=True, bf16=True), embeddings
    np.testing.assert_array_equal(pipe.similarity(TEXTS[:2], TEXTS, bf16=True), left @ right.T)
    assert pipe.similarity(TEXTS[0], TEXTS[0], bf16=True) == pytest.approx(1.0, abs=1e-5)
    # across batches and against float32 the cosines move by bf16's rounding, no more
    np.testing.assert_allclose(left @ right.T, embeddings[:2] @ embeddings.T, atol=BF16_COSINE_TOLERANCE)
    fp32 = pipe.embed(TEXTS, normalize=True, bf16=False)
    np.testing.assert_allclose(embeddings @ embeddings.T, fp32 @ fp32.T, atol=BF16_COSINE_TOLERANCE)


def test_bf16_given_at_construction_holds_for_embeddings(model_dir, monkeypatch):
    monkeypatch.setenv("HF_MTL_NATIVE_BF16", "1")  # bf16 would be the default: the constructor's False must win
    constructed = MultiTaskPipeline(str(model_dir), bf16=False)
    np.testing.assert_array_equal(constructed.embed(TEXTS), constructed.embed(TEXTS, bf16=False))
    assert constructed._forward_params["bf16"] is False


def test_bf16_default_follows_the_cpu_check(pipe, monkeypatch):
    monkeypatch.setenv("HF_MTL_NATIVE_BF16", "0")
    assert pipe.backend.uses_bf16(None) is False and pipe.backend.uses_bf16(True) is True
    monkeypatch.setenv("HF_MTL_NATIVE_BF16", "1")
    assert pipe.backend.uses_bf16(None) is True and pipe.backend.uses_bf16(False) is False
    monkeypatch.setenv("HF_MTL_NATIVE_BF16", "yes")
    with pytest.raises(ValueError, match="HF_MTL_NATIVE_BF16"):
        pipe.backend.uses_bf16(None)


def test_rejects_a_model_without_tasks(tokenizer):
    encoder = AutoModel.from_config(tiny_encoder_config("bert"))
    with pytest.raises(ValueError, match="config.tasks"):
        MultiTaskPipeline(encoder, tokenizer=tokenizer)


def test_save_pretrained_declares_the_pipeline(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"]["multi-task"]["impl"] == "pipeline_mtl.MultiTaskPipeline"
    assert {"pipeline_mtl.py", "modeling_mtl.py", "configuration_mtl.py", "tokenizer.json"} <= set(os.listdir(tmp_path))


TRANSFORMERS_PIPELINE = """
import json, sys
sys.modules["hf_mtl"] = None  # hf_mtl is not installed as far as this process can tell
import transformers
pipe = transformers.pipeline(model=sys.argv[1], trust_remote_code=True)
assert type(pipe).__module__.startswith("transformers_modules."), type(pipe).__module__
print(json.dumps({"results": pipe(json.loads(sys.argv[2]), return_tags=True, bf16=False), "task": pipe.task}))
"""


@pytest.mark.subprocess
def test_transformers_pipeline_without_hf_mtl_gives_the_same_results(pipe, model_dir, tmp_path):
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", TRANSFORMERS_PIPELINE, str(model_dir), json.dumps(TEXTS)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    remote = json.loads(completed.stdout.splitlines()[-1])
    assert remote["task"] == "multi-task"
    assert_same_predictions(remote["results"], pipe(TEXTS, return_tags=True, bf16=False), score_tolerance=1e-5)
