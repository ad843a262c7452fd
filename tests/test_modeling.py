"""The multi-task model on tiny random encoders: shapes, the combined loss, gradients, config validation."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TOPIC_NER_TASKS as TASKS
from conftest import tiny_encoder_config, tiny_model

from hf_mtl import MultiTaskConfig
from hf_mtl.modeling_mtl import MultiTaskPooling


def build(model_type="bert", tasks=TASKS, **config_kwargs):
    return tiny_model(tasks, model_type, vocab_size=99, **config_kwargs)


def batch(batch_size=3, seq=6):
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 99, (batch_size, seq), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -2:] = 0
    topic = torch.tensor([0, 2, 1])[:batch_size]
    ner = torch.randint(0, 5, (batch_size, seq), generator=generator)
    ner[:, 0] = -100
    ner[0, -2:] = -100
    return input_ids, attention_mask, topic, ner


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "roberta"])
def test_shapes_and_weighted_loss(model_type):
    model = build(model_type, loss_weights={"topic": 0.5, "ner": 2.0})
    input_ids, attention_mask, topic, ner = batch()
    out = model(input_ids=input_ids, attention_mask=attention_mask, topic_labels=topic, ner_labels=ner)

    assert out.logits["topic"].shape == (3, 3)
    assert out.logits["ner"].shape == (3, 6, 5)
    expected_topic = F.cross_entropy(out.logits["topic"], topic)
    kept = ner != -100
    expected_ner = F.cross_entropy(out.logits["ner"][kept], ner[kept])
    torch.testing.assert_close(out.loss, 0.5 * expected_topic + 2.0 * expected_ner)
    torch.testing.assert_close(out.task_losses["ner"], expected_ner)


@pytest.mark.parametrize("absent", ["missing", "all_ignored"])
def test_task_without_labels_adds_exactly_zero_and_heads_get_gradients(absent):
    model = build().train()
    torch.manual_seed(3)
    input_ids, attention_mask, topic, ner = batch()
    labels = {"topic_labels": topic}
    if absent == "all_ignored":
        labels["ner_labels"] = torch.full_like(ner, -100)
    out = model(input_ids=input_ids, attention_mask=attention_mask, **labels)

    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits["topic"], topic), rtol=0, atol=0)
    out.loss.backward()
    for name, parameter in model.heads.named_parameters():
        assert parameter.grad is not None, name
    assert torch.count_nonzero(model.heads["ner"].classifier.weight.grad) == 0
    assert torch.count_nonzero(model.heads["topic"].classifier.weight.grad) > 0


def test_no_labels_gives_no_loss_and_unknown_label_keyword_is_a_type_error():
    model = build()
    input_ids, attention_mask, _, _ = batch()
    assert model(input_ids=input_ids, attention_mask=attention_mask).loss is None
    with pytest.raises(TypeError, match="intent_labels"):
        model(input_ids=input_ids, intent_labels=torch.tensor([0, 1, 0]))


def test_class_weights_and_uncertainty_weighting():
    tasks = [dict(TASKS[0], class_weights=[1.0, 2.0, 4.0]), TASKS[1]]
    model = build(tasks=tasks, loss_weighting="uncertainty")
    input_ids, attention_mask, topic, ner = batch()
    with torch.no_grad():
        model.task_log_variances.copy_(torch.tensor([0.5, -0.25]))
    out = model(input_ids=input_ids, attention_mask=attention_mask, topic_labels=topic, ner_labels=ner)

    weighted_topic = F.cross_entropy(out.logits["topic"], topic, weight=torch.tensor([1.0, 2.0, 4.0]))
    kept = ner != -100
    plain_ner = F.cross_entropy(out.logits["ner"][kept], ner[kept])
    expected = torch.exp(torch.tensor(-0.5)) * weighted_topic + 0.25 + torch.exp(torch.tensor(0.25)) * plain_ner - 0.125
    torch.testing.assert_close(out.loss, expected)
    assert "task_log_variances" in dict(model.named_parameters())


@pytest.mark.parametrize("weighting", ["static", "uncertainty"])
def test_per_row_reduction_scales_each_task_by_the_share_of_rows_it_labels(weighting):
    # Rows of two data sets in one batch: the topic labels row 2 only, NER rows 0-1 (row 2 all -100).
    input_ids, attention_mask, topic, ner = batch()
    topic = torch.tensor([-100, -100, 1])
    ner[2] = -100
    labels = dict(topic_labels=topic, ner_labels=ner)
    per_task = build(loss_weights={"topic": 0.5}, loss_weighting=weighting)
    per_row = build(loss_weights={"topic": 0.5}, loss_weighting=weighting, loss_reduction="per_row")
    if weighting == "uncertainty":
        for model in (per_task, per_row):
            with torch.no_grad():
                model.task_log_variances.copy_(torch.tensor([0.5, -0.25]))
    as_is = per_task(input_ids=input_ids, attention_mask=attention_mask, **labels)
    scaled = per_row(input_ids=input_ids, attention_mask=attention_mask, **labels)

    topic_loss = F.cross_entropy(as_is.logits["topic"][2:], topic[2:])
    kept = ner != -100
    ner_loss = F.cross_entropy(as_is.logits["ner"][kept], ner[kept])
    if weighting == "static":
        expected_as_is, expected_scaled = 0.5 * topic_loss + ner_loss, 0.5 * topic_loss / 3 + ner_loss * 2 / 3
    else:
        topic_factor, ner_factor = torch.exp(torch.tensor(-0.5)), torch.exp(torch.tensor(0.25))
        regulariser = 0.25 - 0.125
        expected_as_is = topic_factor * topic_loss + ner_factor * ner_loss + regulariser
        expected_scaled = topic_factor * topic_loss / 3 + ner_factor * ner_loss * 2 / 3 + regulariser
    torch.testing.assert_close(as_is.loss, expected_as_is)
    torch.testing.assert_close(scaled.loss, expected_scaled)
    # Logged task losses stay each task's own mean.
    torch.testing.assert_close(scaled.task_losses["topic"], topic_loss)
    torch.testing.assert_close(scaled.task_losses["ner"], ner_loss)

    # Every task labels every row: the reductions agree.
    _, _, full_topic, full_ner = batch()
    full = dict(topic_labels=full_topic, ner_labels=full_ner)
    torch.testing.assert_close(per_row(input_ids=input_ids, attention_mask=attention_mask, **full).loss,
                               per_task(input_ids=input_ids, attention_mask=attention_mask, **full).loss)


def smoothed_cross_entropy(logits, labels, epsilon):
    """By hand: (1 - e) * NLL of the gold class + e * the mean NLL over all classes."""
    log_probs = logits.float().log_softmax(-1)
    gold = -log_probs.gather(-1, labels[:, None]).squeeze(-1)
    return ((1 - epsilon) * gold + epsilon * -log_probs.mean(-1)).mean()


def test_label_smoothing_smooths_softmax_losses_and_not_the_crf(tmp_path):
    from transformers import TrainingArguments

    from hf_mtl.trainer import MultiTaskTrainer

    tasks = TASKS + [dict(TASKS[1], name="crf_ner", crf=True)]
    model = build(tasks=tasks)
    input_ids, attention_mask, topic, ner = batch()
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, topic_labels=topic, ner_labels=ner,
                  crf_ner_labels=ner)
    plain = model(**inputs)
    smoothed = model(**inputs, label_smoothing=0.2)

    kept = ner != -100
    torch.testing.assert_close(smoothed.task_losses["topic"], smoothed_cross_entropy(plain.logits["topic"], topic, 0.2))
    torch.testing.assert_close(smoothed.task_losses["ner"],
                               smoothed_cross_entropy(plain.logits["ner"][kept], ner[kept], 0.2))
    torch.testing.assert_close(smoothed.task_losses["crf_ner"], plain.task_losses["crf_ner"], rtol=0, atol=0)
    assert not torch.allclose(smoothed.task_losses["topic"], plain.task_losses["topic"])

    # Trainer's LabelSmoother needs a single `labels` tensor; MultiTaskTrainer hands the factor to the heads instead.
    args = TrainingArguments(output_dir=str(tmp_path), label_smoothing_factor=0.2, use_cpu=True, report_to="none")
    trainer = MultiTaskTrainer(model=model, args=args)
    torch.testing.assert_close(trainer.compute_loss(model, inputs), smoothed.loss)


@pytest.mark.parametrize("mode", ["cls", "mean", "max"])
def test_pooling_ignores_padding(mode):
    states = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    pooled = MultiTaskPooling(mode)(states, mask)
    expected = {"cls": [1.0, -2.0], "mean": [2.0, -3.0], "max": [3.0, -2.0]}[mode]
    torch.testing.assert_close(pooled, torch.tensor([expected]))


def test_pooler_mode_keeps_pooler_other_modes_drop_it():
    assert build(pooling="pooler").encoder.pooler is not None
    assert build(pooling="mean").encoder.pooler is None


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(tasks=[]), "tasks"),
        (dict(tasks=[TASKS[0], dict(TASKS[1], name="topic")]), "duplicate task name"),
        (dict(tasks=[dict(TASKS[0], type="regression")]), "tasks[0].type"),
        (dict(tasks=[dict(TASKS[0], labels=["only"])]), "tasks[0].labels"),
        (dict(tasks=[dict(TASKS[0], labels=["a", "b", "a"])]), "duplicate labels"),
        (dict(tasks=TASKS, pooling="sum"), "pooling"),
        (dict(tasks=TASKS, loss_weights={"intent": 2.0}), "loss_weights"),
        (dict(tasks=TASKS, loss_reduction="sum"), "MultiTaskConfig.loss_reduction: 'sum' is not one of"),
        (dict(tasks=TASKS, loss_weighting="learned"), "MultiTaskConfig.loss_weighting: 'learned' is not one of"),
        (dict(tasks=TASKS, pooling=None), "MultiTaskConfig.pooling: None is not one of cls, mean, max, pooler"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError) as error:
        MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), **kwargs)
    assert field in str(error.value)


def test_pooler_on_distilbert_raises():
    with pytest.raises(ValueError, match="pooling.*distilbert"):
        MultiTaskConfig(encoder=tiny_encoder_config("distilbert").to_dict(), tasks=TASKS, pooling="pooler")


def test_embed_normalisation_and_input_embeddings():
    model = build()
    input_ids, attention_mask, _, _ = batch()
    raw = model.embed(input_ids, attention_mask)
    unit = model.embed(input_ids, attention_mask, normalize=True)
    assert raw.shape == (3, 32)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3))
    assert model.get_input_embeddings() is model.encoder.embeddings.word_embeddings


def test_activation_checkpointing_reaches_the_encoder():
    model = build().train()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.encoder.encoder.layer)
    input_ids, attention_mask, topic, ner = batch()
    model(input_ids=input_ids, attention_mask=attention_mask, topic_labels=topic, ner_labels=ner).loss.backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None
