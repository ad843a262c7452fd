"""Token tasks whose tags are not IOB2: `"tag_format": "BIOES"` (B-, I-, E-, S-, O; seqeval strict IOBES) and
`"tag_format": "plain"` (POS tags without prefixes; tag accuracy and macro F1): tag checks with the format that fits,
metrics against hand-computed values, the CRF's BIOES constraints, pipeline spans, and a joint training run."""

import json
import random

import pytest
import torch
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.scheme import IOBES
from train_fixtures import joint_example, run_config, save_tiny_encoder

from hf_mtl import MultiTaskModel, MultiTaskPipeline
from hf_mtl.errors import ConfigError, DataError
from hf_mtl.evaluation import compute_metrics_from_decoded, compute_task_results
from hf_mtl.crf import bio_constraints, bioes_constraints, crf_for_task
from hf_mtl.pipeline_mtl import entities_from_tags
from hf_mtl.data.tags import tag_problem
from hf_mtl.tasks import parse_task

POS = {"said": "VERB", "the": "DET", "of": "ADP", "in": "ADP"}  # every other word of the joint data is a NOUN or PROPN
PROPER = {"anna", "berg", "omar", "lena", "kovacs", "acme", "corp", "northwind", "paris", "new", "york", "lagos"}


def token_task(**keys):
    return parse_task({"name": "tagger", "type": "token_classification", "dataset": "d", **keys}, "tasks[0]")


def to_bioes(tags: list) -> list:
    """IOB2 -> BIOES: a one-word entity is S-X, the last word of a longer one E-X."""
    converted = []
    for index, tag in enumerate(tags):
        following = tags[index + 1] if index + 1 < len(tags) else "O"
        ends = following != "I-" + tag[2:]
        if tag.startswith("B-"):
            tag = ("S-" if ends else "B-") + tag[2:]
        elif tag.startswith("I-"):
            tag = ("E-" if ends else "I-") + tag[2:]
        converted.append(tag)
    return converted


def tagged_example(rng) -> dict:
    example = joint_example(rng)
    pos = [POS.get(word, "PROPN" if word in PROPER else "NOUN") for word in example["tokens"]]
    return {"tokens": example["tokens"], "pos": pos, "ner": to_bioes(example["tags"])}


def write_rows(folder, sizes=(48, 12, 12), seed=0, rows_of=tagged_example):
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "validation", "test"), sizes):
        lines = [json.dumps(rows_of(rng)) for _ in range(size)]
        (folder / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def tagging_config(encoder, data, output, pos=None, ner=None, **overrides) -> dict:
    config = {
        "model_name_or_path": str(encoder),
        "datasets": {"tagged": {"path": str(data), "format": "json", "data_files": {
            "train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}}},
        "tasks": [
            {"name": "pos", "type": "token_classification", "dataset": "tagged", "tags_column": "pos",
             "tag_format": "plain", **(pos or {})},
            {"name": "ner", "type": "token_classification", "dataset": "tagged", "tags_column": "ner",
             "tag_format": "BIOES", "crf": True, **(ner or {})},
        ],
        "max_seq_length": 32, "output_dir": str(output), "do_train": True, "do_eval": True, "do_predict": True,
        "max_steps": 4, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "learning_rate": 1e-3,
        "logging_steps": 1, "save_strategy": "no", "eval_strategy": "no", "use_cpu": True, "report_to": "none",
        "seed": 7, "disable_tqdm": True,
    }
    config.update(overrides)
    return config


# ---- tag checks ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag, tag_format, fragments",
    [
        ("NOUN", "BIO", ["tag 'NOUN' is not O, B-<type> or I-<type>", "(tag_format 'BIO')", '"tag_format": "plain"']),
        ("S-PER", "BIO", ["tag 'S-PER' is not O, B-<type> or I-<type>", '"tag_format": "BIOES"']),
        ("E-LOC", "BIO", ['"tag_format": "BIOES"']),
        ("NOUN", "BIOES", ["tag 'NOUN' is not O, B-<type>, I-<type>, E-<type> or S-<type>", '"tag_format": "plain"']),
        ("B_PER", "BIOES", ["tag 'B_PER' is not O, B-<type>, I-<type>, E-<type> or S-<type>"]),
        ("", "plain", ["'' is not a tag"]),
        ("two words", "plain", ["'two words' is not a tag"]),
    ],
)
def test_a_tag_outside_its_format_names_the_format_that_fits(tag, tag_format, fragments):
    problem = tag_problem(tag, tag_format)
    for fragment in fragments:
        assert fragment in problem, (fragment, problem)


@pytest.mark.parametrize("tag, tag_format", [("O", "BIO"), ("I-PER", "BIO"), ("S-PER", "BIOES"), ("E-LOC", "BIOES"),
                                             ("O", "BIOES"), ("NOUN", "plain"), ("B-PER", "plain"), (".", "plain")])
def test_tags_of_their_format_pass(tag, tag_format):
    assert tag_problem(tag, tag_format) is None


def test_unknown_tag_format_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.tag_format: 'bioes' is not one of 'BIO', 'BIOES', 'plain'$"):
        token_task(tag_format="bioes")


def test_a_sentence_task_takes_no_tag_format():
    with pytest.raises(ConfigError, match=r"tasks\[0\]\.tag_format: unknown key for a single_label_classification"):
        parse_task({"name": "t", "type": "sequence_classification", "dataset": "d", "tag_format": "plain"}, "tasks[0]")


def test_gold_is_checked_against_the_tasks_format():
    place = lambda: "train.jsonl:3"  # noqa: E731
    assert token_task(tag_format="plain").normalize_gold(["DET", "NOUN"], None, place) == ["DET", "NOUN"]
    assert token_task(tag_format="BIOES").normalize_gold(["S-PER", "O"], None, place) == ["S-PER", "O"]
    with pytest.raises(DataError, match=r"^train\.jsonl:3: tag 'DET' is not O, B-<type> or I-<type>.*\"plain\""):
        token_task().normalize_gold(["DET", "NOUN"], None, place)
    # IOB1 conversion only applies to BIO tags: plain tags starting with I- stay as they are
    assert token_task(tag_format="plain").normalize_gold(["I-x"], None, place, tag_scheme="iob1") == ["I-x"]


def test_plain_labels_have_no_outside_tag_and_the_saved_head_carries_the_format():
    plain = token_task(tag_format="plain").resolve([["NOUN", "DET"], ["VERB"]])
    assert plain.labels == ("DET", "NOUN", "VERB")
    assert plain.metric_names == ("accuracy", "macro_f1") and plain.main_metric == "accuracy"
    assert token_task(tag_format="plain", crf=True, labels=["A", "B"]).head_config() == {
        "name": "tagger", "type": "token_classification", "labels": ["A", "B"], "tag_format": "plain", "crf": True,
        "bio_constraints": False,
    }
    bioes = token_task(tag_format="BIOES").resolve([["S-PER", "O", "B-LOC", "E-LOC"]])
    assert bioes.labels == ("O", "B-LOC", "E-LOC", "S-PER") and bioes.head_config()["tag_format"] == "BIOES"
    assert bioes.metric_names == ("f1", "precision", "recall", "accuracy")
    assert "tag_format" not in token_task(labels=["O", "B-X"]).head_config()  # BIO heads are saved as before


def test_label_all_tokens_keeps_a_plain_tag_on_every_sub_token():
    plain = token_task(tag_format="plain", labels=["B-tag", "I-tag"])
    assert plain.encode_labels(["B-tag"], [None, 0, 0, None], label_all_tokens=True) == [-100, 0, 0, -100]
    bio = token_task(labels=["O", "B-X", "I-X"])
    assert bio.encode_labels(["B-X"], [None, 0, 0, None], label_all_tokens=True) == [-100, 1, 2, -100]


# ---- metrics against hand-computed values ------------------------------------------------------------------------


def decoded(task, pairs):
    return [{"words": ["w"] * len(gold), task.name: {"gold": gold, "pred": pred}} for gold, pred in pairs]


def test_plain_tags_are_scored_by_tag_accuracy_and_macro_f1():
    task = token_task(tag_format="plain", labels=["DET", "NOUN", "VERB"])
    # words: DET/DET ok, NOUN/NOUN ok, NOUN->VERB wrong, NOUN/NOUN ok, VERB->"" (no prediction) wrong
    examples = decoded(task, [(["DET", "NOUN", "NOUN"], ["DET", "NOUN", "VERB"]), (["NOUN", "VERB"], ["NOUN", ""])])
    # DET p1 r1 f1; NOUN p 2/2 r 2/3 f 0.8; VERB p 0/1 r 0/1 f 0 -> macro F1 (1 + 0.8 + 0) / 3
    metrics = compute_metrics_from_decoded([task], examples)
    assert metrics == pytest.approx({"tagger_accuracy": 3 / 5, "tagger_macro_f1": 1.8 / 3, "score": 3 / 5})
    per_class = compute_task_results([task], examples)["tagger"]["per_class"]
    assert set(per_class) == {"DET", "NOUN", "VERB"} and per_class["NOUN"]["number"] == 3


def test_bioes_tags_are_scored_by_seqeval_strict_iobes():
    task = token_task(tag_format="BIOES", labels=["O", "B-A", "I-A", "E-A", "S-A", "S-B"])
    examples = decoded(task, [
        (["B-A", "E-A", "S-B", "O"], ["B-A", "E-A", "S-B", "O"]),  # 2 entities, both found
        (["B-A", "I-A", "E-A"], ["B-A", "I-A", "I-A"]),  # unfinished entity: no entity in strict mode
        (["O", "S-A"], ["S-A", "S-A"]),  # one found, one false
    ])
    # gold entities 4, predicted 4, correct 3 -> P = R = F1 = 3/4; tags 7 of 9 right
    metrics = compute_metrics_from_decoded([task], examples)
    assert metrics == pytest.approx({"tagger_f1": 0.75, "tagger_precision": 0.75, "tagger_recall": 0.75,
                                     "tagger_accuracy": 7 / 9, "score": 0.75})
    result = compute_task_results([task], examples)["tagger"]
    assert result["A"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "number": 3})
    # the default (conlleval) mode would count the unfinished B-A I-A I-A as a found entity
    bio_task = token_task(labels=["O", "B-A", "I-A"])
    lenient = compute_metrics_from_decoded([bio_task], decoded(bio_task, [(["B-A", "I-A", "I-A"], ["B-A", "I-A", "I-A"])]))
    assert lenient["tagger_f1"] == 1.0


# ---- CRF constraints and pipeline spans ------------------------------------------------------------------------------


def test_bioes_constraints_by_hand():
    labels = ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "E-B"]
    transitions, starts = bioes_constraints(labels)
    assert starts.tolist() == [True, True, False, False, True, True, False]
    allowed = {(labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels)) if transitions[i, j]}
    outside = {"O", "B-A", "S-A", "B-B"}  # what may follow O, E-X and S-X
    expected = {("B-A", "I-A"), ("B-A", "E-A"), ("I-A", "I-A"), ("I-A", "E-A"), ("B-B", "E-B")}
    expected |= {(before, after) for before in ("O", "E-A", "S-A", "E-B") for after in outside}
    assert allowed == expected


def test_crf_constraints_follow_the_tag_format():
    labels = ["O", "B-A", "I-A", "E-A", "S-A"]
    bioes = crf_for_task({"labels": labels, "crf": True, "tag_format": "BIOES"})
    assert torch.equal(bioes.allowed_transitions, bioes_constraints(labels)[0])
    bio = crf_for_task({"labels": labels[:3], "crf": True})
    assert torch.equal(bio.allowed_transitions, bio_constraints(labels[:3])[0])
    plain = crf_for_task({"labels": ["I-x", "NOUN"], "crf": True, "tag_format": "plain"})
    assert bool(plain.allowed_transitions.all()) and bool(plain.allowed_starts.all())


def test_entities_from_bioes_and_plain_tags():
    text = "Anna Berg met Omar in New York"
    words = text.split()
    spans, start = [], 0
    for word in words:
        start = text.index(word, start)
        spans.append((start, start + len(word)))
        start += len(word)
    scores = [0.5, 1.0, 1.0, 0.8, 1.0, 0.6, 0.4]
    bioes = entities_from_tags(text, spans, ["B-PER", "E-PER", "O", "S-PER", "O", "S-LOC", "S-LOC"], scores, "BIOES")
    assert [(entity["entity"], entity["text"]) for entity in bioes] == [
        ("PER", "Anna Berg"), ("PER", "Omar"), ("LOC", "New"), ("LOC", "York")]
    assert bioes[0]["score"] == pytest.approx(0.75)
    pos = ["PROPN", "PROPN", "VERB", "PROPN", "ADP", "PROPN", None]  # the last word got no prediction
    plain = entities_from_tags(text, spans, pos, scores, "plain")
    assert [(entity["entity"], entity["text"], entity["start"], entity["score"]) for entity in plain] == [
        (tag, word, span[0], score) for tag, word, span, score in zip(pos[:-1], words, spans, scores)]


# ---- the data path and a training run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagging(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("tag_formats")
    return root, save_tiny_encoder(root / "encoder", tokenizer), write_rows(root / "data")


@pytest.fixture(scope="module")
def trained(tagging):
    root, encoder, data = tagging
    output = root / "run"
    return output, run_config(tagging_config(encoder, data, output), root)


@pytest.mark.training
def test_run_scores_plain_and_bioes_tasks_with_their_metrics(trained):
    output, results = trained
    for split in ("eval", "test"):
        for key in ("pos_accuracy", "pos_macro_f1", "ner_f1", "ner_precision", "ner_recall", "ner_accuracy", "score"):
            assert f"{split}_{key}" in results, f"{split}_{key}"
        assert f"{split}_pos_f1" not in results
    assert results["test_score"] == pytest.approx((results["test_pos_accuracy"] + results["test_ner_f1"]) / 2)

    # the reported numbers are those of the written predictions
    rows = [json.loads(line) for line in (output / "test_predictions.jsonl").read_text().splitlines()]
    pairs = [(gold, pred) for row in rows for gold, pred in zip(row["pos"]["gold"], row["pos"]["pred"])]
    assert results["test_pos_accuracy"] == pytest.approx(sum(gold == pred for gold, pred in pairs) / len(pairs))
    strict = seqeval_f1([row["ner"]["gold"] for row in rows], [row["ner"]["pred"] for row in rows], mode="strict",
                        scheme=IOBES, zero_division=0)
    assert results["test_ner_f1"] == pytest.approx(strict)

    saved = {task["name"]: task for task in json.loads((output / "config.json").read_text())["tasks"]}
    assert saved["pos"]["tag_format"] == "plain" and "O" not in saved["pos"]["labels"]
    assert saved["pos"]["labels"] == ["ADP", "DET", "NOUN", "PROPN", "VERB"]
    assert saved["ner"]["tag_format"] == "BIOES" and saved["ner"]["crf"] is True
    report = (output / "test_report.md").read_text()
    assert "seqeval entity-level scores, strict mode, IOBES scheme" in report
    assert "each word's tag scored as a class" in report and "Confusion matrix" in report
    assert (output / "plots" / "confusion_matrix_pos.png").is_file()
    card = (output / "README.md").read_text()
    assert "Macro F1 over tags" in card and "Entity F1 (seqeval strict IOBES)" in card


@pytest.mark.training
def test_reloaded_model_keeps_bioes_constraints_and_the_pipeline_tags_every_word(trained):
    output, _ = trained
    model = MultiTaskModel.from_pretrained(output)
    crf = model.heads["ner"].crf
    assert torch.equal(crf.allowed_transitions, bioes_constraints(model.config.tasks[1]["labels"])[0])
    pipe = MultiTaskPipeline(str(output), bf16=False)
    text = "anna berg said the market of acme corp in paris"
    result = pipe(text, return_tags=True)
    labels = set(model.config.tasks[0]["labels"])
    assert [entry["text"] for entry in result["pos"]] == text.split() == result["words"]
    assert all(entry["entity"] in labels for entry in result["pos"])
    assert [entry["entity"] for entry in result["pos"]] == result["tags"]["pos"]
    for entity in result["ner"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]


@pytest.mark.training
def test_pos_data_without_tag_format_names_the_line_and_the_key(tagging, tmp_path):
    _, encoder, data = tagging
    config = tagging_config(encoder, data, tmp_path / "out", pos={"tag_format": "BIO"})
    with pytest.raises(DataError, match=r"train\.jsonl:1 .*tasks\[0\]\.tags_column 'pos'.*tag '\w+' is not O, "
                                        r"B-<type> or I-<type> \(tag_format 'BIO'\).*\"tag_format\": \"plain\""):
        run_config(config, tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.training
def test_iob1_data_cannot_feed_a_bioes_task(tagging, tmp_path):
    _, encoder, data = tagging
    config = tagging_config(encoder, data, tmp_path / "out")
    config["datasets"]["tagged"]["tag_scheme"] = "iob1"
    with pytest.raises(ConfigError, match=r"^datasets\.tagged\.tag_scheme: \"iob1\" converts IOB1 tags to BIO, but "
                                          r"tasks\[0\] \('pos'\) has tag_format 'plain'"):
        run_config(config, tmp_path)


def test_conll_pos_file_reads_with_plain_tags_and_names_the_line_otherwise(tmp_path, tokenizer):
    encoder = save_tiny_encoder(tmp_path / "encoder", tokenizer)
    data = tmp_path / "conll"
    data.mkdir()
    sentence = "the DET\ncat NOUN\nsleeps VERB\n\nanna PROPN\nsleeps VERB\n\n"
    for split in ("train", "dev", "test"):
        (data / f"{split}.txt").write_text(sentence * 3)
    config = tagging_config(encoder, data, tmp_path / "run", max_steps=1)
    config["datasets"]["tagged"] = {"path": str(data), "format": "conll"}
    config["tasks"] = [{"name": "pos", "type": "token_classification", "dataset": "tagged", "tag_format": "plain"}]
    results = run_config(config, tmp_path)
    assert 0.0 <= results["test_pos_accuracy"] <= 1.0 and "test_pos_macro_f1" in results
    config["tasks"][0]["tag_format"] = "BIO"
    config["output_dir"] = str(tmp_path / "again")
    with pytest.raises(DataError, match=r"conll/\w+\.txt:1: tag 'DET' is not O, B-<type> or I-<type>.*\"plain\""):
        run_config(config, tmp_path)


@pytest.mark.training
def test_continuing_a_trained_head_with_another_tag_format_is_refused(trained, tmp_path, tagging):
    output, _ = trained
    _, _, data = tagging
    config = tagging_config(output, data, tmp_path / "more", pos={"tag_format": "BIO"}, max_steps=1)
    config["datasets"]["tagged"]["data_files"] = {"train": "train.jsonl"}
    with pytest.raises(ConfigError, match=r"tasks\[0\]\.tag_format: 'BIO', but the trained head 'pos' predicts "
                                          r"'plain' tags; set \"reinit_head\": true"):
        run_config(config, tmp_path)
