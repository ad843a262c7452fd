"""The README.md model card: Hub-readable YAML front matter whose model-index matches the metrics, and its body."""

import pytest
import yaml
from conftest import NER_LABELS, TOPIC_LABELS, TOPIC_NER_TASKS, tiny_encoder_config
from huggingface_hub import ModelCard

from hf_mtl import MultiTaskConfig
from hf_mtl.model_card import write_model_card

EVAL_METRICS = {
    "eval_loss": 0.71,
    "eval_ner_precision": 0.81,
    "eval_ner_recall": 0.79,
    "eval_ner_f1": 0.8,
    "eval_ner_accuracy": 0.95,
    "eval_topic_accuracy": 0.9,
    "eval_topic_macro_f1": 0.88,
    "eval_score": 0.85,
    "eval_runtime": 1.2,
    "epoch": 3.0,
}
TEST_METRICS = {key.replace("eval_", "test_"): value - 0.01 for key, value in EVAL_METRICS.items()}
DATASETS = {
    "conll": {"path": "lhoestq/conll2003"},
    "news": {"path": "fancyzhx/ag_news"},
    "mine": {"format": "json", "data_files": {"train": "train.jsonl"}},
}
TRAINING_SETTINGS = {
    "freeze_encoder": False,
    "freeze_layers": 2,
    "task_sampling": "temperature",
    "sampling_temperature": 2.0,
    "loss_weighting": "static",
    "num_train_epochs": 3,
    "learning_rate": 5e-5,
}


@pytest.fixture
def config():
    return MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=TOPIC_NER_TASKS, pooling="mean")


def front_matter(path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def write(tmp_path, config, **overrides):
    kwargs = dict(
        config=config,
        base_model="bert-base-uncased",
        datasets=DATASETS,
        training_settings=TRAINING_SETTINGS,
        eval_metrics=EVAL_METRICS,
        test_metrics=TEST_METRICS,
        hub_model_id="someone/mtl-ner-topic",
        task_datasets={"ner": "conll", "topic": "news"},
    )
    kwargs.update(overrides)
    return write_model_card(tmp_path, **kwargs)


def test_front_matter_metadata(tmp_path, config):
    metadata = front_matter(write(tmp_path, config))
    assert metadata["library_name"] == "transformers"
    assert {"hf_mtl", "multi-task", "token-classification", "text-classification"} <= set(metadata["tags"])
    assert metadata["base_model"] == "bert-base-uncased"
    assert metadata["datasets"] == ["fancyzhx/ag_news", "lhoestq/conll2003"]  # the local json set is left out


def test_model_index_matches_the_metrics(tmp_path, config):
    metadata = front_matter(write(tmp_path, config))
    (model_index,) = metadata["model-index"]
    assert model_index["name"] == "mtl-ner-topic"
    found = {}
    for result in model_index["results"]:
        split = {"validation": "eval", "test": "test"}[result["dataset"]["split"]]
        task = result["task"]["name"]
        assert result["task"]["type"] == {"ner": "token-classification", "topic": "text-classification"}[task]
        assert result["dataset"]["type"] == {"ner": "lhoestq/conll2003", "topic": "fancyzhx/ag_news"}[task]
        for metric in result["metrics"]:
            metric_key = "macro_f1" if metric.get("args") == {"average": "macro"} else metric["type"]
            found[f"{split}_{task}_{metric_key}"] = metric["value"]
    expected = {
        key: value
        for metrics in (EVAL_METRICS, TEST_METRICS)
        for key, value in metrics.items()
        if key.split("_", 1)[-1].startswith(("ner_", "topic_"))
    }
    assert found == pytest.approx(expected)
    # huggingface_hub reads the same results back.
    assert len(ModelCard.load(tmp_path / "README.md").data.eval_results) == len(expected)


def test_body_documents_tasks_settings_results_and_usage(tmp_path, config):
    body = write(tmp_path, config).read_text()
    for label in NER_LABELS + TOPIC_LABELS:
        assert f"`{label}`" in body
    for key in ("freeze_layers", "task_sampling", "loss_weighting", "num_train_epochs", "learning_rate"):
        assert f"| {key} |" in body
    assert "| Entity F1 (seqeval) (main) | 0.8000 | 0.7900 |" in body
    assert "| Macro F1 | 0.8800 | 0.8700 |" in body
    assert 'AutoModel.from_pretrained("someone/mtl-ner-topic")' in body
    assert 'AutoModel.from_pretrained("someone/mtl-ner-topic", trust_remote_code=True)' in body
    assert 'MultiTaskPipeline("someone/mtl-ner-topic")' in body
    assert "hf-mtl predict --model someone/mtl-ner-topic" in body


def test_links_reports_and_plots_present_in_the_folder(tmp_path, config):
    (tmp_path / "eval_report.md").write_text("# report\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "training_loss.png").write_bytes(b"png")
    body = write(tmp_path, config).read_text()
    assert "[eval_report.md](eval_report.md)" in body and "test_report.md" not in body
    assert "](plots/training_loss.png)" in body


def test_local_base_model_and_no_metrics(tmp_path, config):
    local_encoder = tmp_path / "encoder"
    local_encoder.mkdir()
    card_dir = tmp_path / "out"
    card_dir.mkdir()
    path = write(card_dir, config, base_model=str(local_encoder), eval_metrics=None, test_metrics=None, hub_model_id=None)
    metadata = front_matter(path)
    assert "base_model" not in metadata and "model-index" not in metadata
    body = path.read_text()
    assert str(local_encoder) in body and "## Results" not in body
    assert f'AutoModel.from_pretrained("{card_dir}", trust_remote_code=True)' in body
