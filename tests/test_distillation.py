"""Knowledge distillation: each kind's loss against hand-computed values, the gold/teacher mix of `forward`, the
`distillation` settings and teachers' errors, stock teachers' label order, and a run trained through its teachers."""

import math

import pytest
import torch
from conftest import NER_LABELS, TOPIC_LABELS, TOPIC_NER_TASKS, save_tiny_encoder, tiny_encoder_config, tiny_model

from hf_mtl.distillation import DistillationSettings, check_teachers, load_teachers
from hf_mtl.errors import ConfigError
from hf_mtl.tasks import parse_task


def softmax(values, temperature=1.0):
    exps = [math.exp(value / temperature) for value in values]
    return [value / sum(exps) for value in exps]


def kl_times_t2(student, teacher, temperature):
    """KL(teacher || student) of the softened distributions, times T^2, by hand."""
    p_teacher, p_student = softmax(teacher, temperature), softmax(student, temperature)
    return sum(p * (math.log(p) - math.log(q)) for p, q in zip(p_teacher, p_student)) * temperature**2


def sigmoid(value):
    return 1 / (1 + math.exp(-value))


def teacher_term(head, student, teacher, temperature=2.0, word_start_mask=None):
    """A head's distillation loss on rows without gold labels: the teacher's term alone."""
    return head.distillation_loss(student, teacher, None, 0.0, 0.5, temperature, word_start_mask=word_start_mask)


def cross_entropy(logits, label):
    return -math.log(softmax(logits)[label])


STUDENT_ENCODER = tiny_encoder_config()  # the students' encoder in the teachers' checks
STUDENT_ROWS = [[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]]
TEACHER_ROWS = [[0.0, 1.0, 3.0], [2.0, 0.0, -1.0]]


def test_single_label_term_is_the_softened_kl_times_t_squared_averaged_over_rows():
    head = tiny_model().heads["topic"]
    loss = teacher_term(head, torch.tensor(STUDENT_ROWS), torch.tensor(TEACHER_ROWS), temperature=2.0)
    expected = sum(kl_times_t2(s, t, 2.0) for s, t in zip(STUDENT_ROWS, TEACHER_ROWS)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    same = teacher_term(head, torch.tensor(TEACHER_ROWS), torch.tensor(TEACHER_ROWS), temperature=2.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_mixes_gold_and_teacher_per_row():
    """Row 0 has a gold label: (1 - alpha) * its cross-entropy + alpha * its KL; row 1 has none: its KL alone; the
    task's loss is their mean."""
    head = tiny_model().heads["topic"]
    student, labels = torch.tensor(STUDENT_ROWS), torch.tensor([2, -100])
    gold_loss = head.loss(student, labels)  # the mean over the gold rows: row 0's cross-entropy
    assert gold_loss.item() == pytest.approx(cross_entropy(STUDENT_ROWS[0], 2), rel=1e-6)
    loss = head.distillation_loss(student, torch.tensor(TEACHER_ROWS), labels, gold_loss, 0.25, 1.0)
    terms = [kl_times_t2(s, t, 1.0) for s, t in zip(STUDENT_ROWS, TEACHER_ROWS)]
    expected = ((0.75 * cross_entropy(STUDENT_ROWS[0], 2) + 0.25 * terms[0]) + terms[1]) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("crf", [False, True])
def test_token_term_is_per_word_at_first_subtokens(crf):
    """Words start at positions 0 and 2 (position 1 is a word's second sub-token): the KL of those two positions;
    for a CRF head, of its emission scores (its logits)."""
    tasks = [TOPIC_NER_TASKS[0], {**TOPIC_NER_TASKS[1], "crf": crf}]
    head = tiny_model(tasks).heads["ner"]
    student = torch.tensor([[[1.0, 0.0, 0.0, 2.0, 0.0], [5.0, 1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 0.0, 3.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 1.0, 0.0]]])
    starts = torch.tensor([[1, 0, 1]])
    loss = teacher_term(head, student, teacher, temperature=3.0, word_start_mask=starts)
    expected = (kl_times_t2(student[0, 0].tolist(), teacher[0, 0].tolist(), 3.0)
                + kl_times_t2(student[0, 2].tolist(), teacher[0, 2].tolist(), 3.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_multi_label_term_is_bce_against_the_teachers_sigmoids():
    task = {"name": "labels_set", "type": "sequence_classification", "problem_type": "multi_label_classification",
            "labels": ["a", "b", "c"]}
    head = tiny_model([task]).heads["labels_set"]
    loss = teacher_term(head, torch.tensor(STUDENT_ROWS), torch.tensor(TEACHER_ROWS), temperature=5.0)
    def bce(s, t):
        return -(sigmoid(t) * math.log(sigmoid(s)) + (1 - sigmoid(t)) * math.log(1 - sigmoid(s)))

    per_row = [sum(bce(s, t) for s, t in zip(srow, trow)) / 3 for srow, trow in zip(STUDENT_ROWS, TEACHER_ROWS)]
    assert loss.item() == pytest.approx(sum(per_row) / 2, rel=1e-5)


def test_regression_term_is_the_squared_difference_on_the_standardised_scale():
    head = tiny_model([{"name": "score", "type": "sequence_classification", "problem_type": "regression",
                        "target_mean": 3.0, "target_std": 2.0}]).heads["score"]
    loss = teacher_term(head, torch.tensor([[1.0], [4.0]]), torch.tensor([[2.0], [1.0]]))
    assert loss.item() == pytest.approx((((1 - 2) / 2) ** 2 + ((4 - 1) / 2) ** 2) / 2, rel=1e-6)


def test_similarity_term_is_the_mse_of_the_texts_embeddings():
    head = tiny_model([{"name": "sim", "type": "sentence_similarity"}]).heads["sim"]
    student = torch.tensor([[[1.0, 2.0], [9.0, 9.0]], [[0.0, 0.0], [9.0, 9.0]]])  # [rows, towers, hidden]
    teacher = torch.tensor([[[0.0, 2.0], [0.0, 0.0]], [[1.0, -1.0], [0.0, 0.0]]])
    loss = teacher_term(head, student, teacher)
    # Only the row's own text (tower 0): row 0 (1 + 0) / 2, row 1 (1 + 1) / 2.
    assert loss.item() == pytest.approx((0.5 + 1.0) / 2, rel=1e-6)


def batch_of(model, rows=4, length=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 2000, (rows, length), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "word_start_mask": torch.ones_like(input_ids)}


@pytest.mark.parametrize("loss_reduction", ["per_task", "per_row"])
def test_forward_mixes_gold_and_teacher_per_row(loss_reduction):
    """Rows 0 and 2 have a topic label, rows 1 and 3 none: the topic loss is the mean over the 4 rows of
    (1 - alpha) * cross-entropy + alpha * KL on labelled rows and KL alone on the others, under either reduction;
    the NER task, without a teacher, keeps its gold loss."""
    model = tiny_model(loss_reduction=loss_reduction)
    batch = batch_of(model)
    labels = {"topic_labels": torch.tensor([0, -100, 2, -100]), "ner_labels": torch.full((4, 6), -100)}
    labels["ner_labels"][:2] = torch.tensor([0, 1, 2, 0, 3, 4])
    plain = model(**batch, **labels)
    teacher = {"topic": torch.randn(4, 3, generator=torch.Generator().manual_seed(1))}
    distilled = model(**batch, **labels, teacher_logits=teacher, distillation_alpha=0.4, distillation_temperature=2.0)
    student, teacher_rows = plain.logits["topic"].tolist(), teacher["topic"].tolist()
    per_row = [kl_times_t2(s, t, 2.0) for s, t in zip(student, teacher_rows)]
    per_row[0] = 0.6 * cross_entropy(student[0], 0) + 0.4 * per_row[0]
    per_row[2] = 0.6 * cross_entropy(student[2], 2) + 0.4 * per_row[2]
    assert distilled.task_losses["topic"].item() == pytest.approx(sum(per_row) / 4, rel=1e-5)
    assert distilled.task_losses["ner"].item() == pytest.approx(plain.task_losses["ner"].item(), rel=1e-6)
    with pytest.raises(TypeError, match="teacher_logits\\['intent'\\]"):
        model(**batch, **labels, teacher_logits={"intent": teacher["topic"]}, distillation_alpha=0.4,
              distillation_temperature=2.0)
    with pytest.raises(TypeError, match="teacher_logits needs distillation_alpha and distillation_temperature"):
        model(**batch, **labels, teacher_logits=teacher)


def test_a_task_without_gold_rows_is_trained_by_its_teacher_alone():
    """No row has a topic label: without a teacher the topic head gets a zero gradient, with one it learns."""
    model = tiny_model().train()
    batch = batch_of(model)
    labels = {"topic_labels": torch.full((4,), -100), "ner_labels": torch.zeros(4, 6, dtype=torch.long)}
    torch.manual_seed(0)
    model(**batch, **labels).loss.backward()
    assert model.heads["topic"].classifier.weight.grad.abs().max() == 0
    model.zero_grad()
    teacher = {"topic": torch.tensor([[4.0, 0.0, 0.0]] * 4)}
    torch.manual_seed(0)
    outputs = model(**batch, **labels, teacher_logits=teacher, distillation_alpha=0.5, distillation_temperature=1.0)
    term = teacher_term(model.heads["topic"], outputs.logits["topic"], teacher["topic"], temperature=1.0)
    assert outputs.task_losses["topic"].item() == pytest.approx(term.item(), rel=1e-6)  # the teacher's term alone
    outputs.loss.backward()
    assert model.heads["topic"].classifier.weight.grad.abs().max() > 0


@pytest.mark.parametrize("value, message", [
    ({"teachers": {"ner": "self"}, "alpha": 1.5}, r"distillation\.alpha: .*\[0, 1\]"),
    ({"teachers": {"ner": "self"}, "alpha": -0.1}, r"distillation\.alpha"),
    ({"teachers": {"ner": "self"}, "temperature": 0}, r"distillation\.temperature: a positive number"),
    ({"teachers": {"ner": "self"}, "temperature": -2.0}, r"distillation\.temperature"),
    ({"teachers": {}}, r"distillation\.teachers: expected"),
    ({"teachers": {"ner": ""}}, r"distillation\.teachers\.ner"),
    ({"teachers": {"ner": "self"}, "beta": 1}, r"distillation: unknown keys \['beta'\]"),
    ("self", r"distillation: expected an object"),
])
def test_settings_errors_name_the_field(value, message):
    with pytest.raises(ConfigError, match=message):
        DistillationSettings.from_config(value)


def test_settings_accept_the_edges():
    settings = DistillationSettings.from_config({"teachers": {"ner": "self"}, "alpha": 1, "temperature": 0.5})
    assert (settings.alpha, settings.temperature) == (1.0, 0.5)
    assert DistillationSettings.from_config({"teachers": {"ner": "self"}, "alpha": 0}).alpha == 0.0


def run_tasks(*names):
    tasks = [dict(task, dataset="demo") for task in TOPIC_NER_TASKS]
    return [parse_task(task, f"tasks[{index}]") for index, task in enumerate(tasks) if task["name"] in names]


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """An hf_mtl folder with the topic and NER heads (random weights: what matters is what it is)."""
    folder = tmp_path_factory.mktemp("teacher") / "multitask"
    tiny_model().save_pretrained(folder)
    return folder


def test_teacher_errors_before_loading(tmp_path, trained_folder):
    from hf_mtl.configuration_mtl import MultiTaskConfig

    tasks = run_tasks("topic", "ner")
    starting = MultiTaskConfig.from_pretrained(trained_folder)

    def check(teachers, starting_config=starting):
        check_teachers(DistillationSettings(teachers=teachers), tasks, str(trained_folder), starting_config)

    with pytest.raises(ConfigError, match=r"teachers\.intent: the run has no task 'intent' \(its tasks: topic, ner\)"):
        check({"intent": "self"})
    with pytest.raises(ConfigError, match=r"teachers\.ner: the teacher folder '.*missing' does not exist"):
        check({"ner": str(tmp_path / "missing")})
    (tmp_path / "notes").mkdir()
    with pytest.raises(ConfigError, match=r"teachers\.ner: .*notes is not a model folder \(it has no config.json\)"):
        check({"ner": str(tmp_path / "notes")})
    with pytest.raises(ConfigError, match=r'teachers\.ner: "self" is the model the run starts from, .* plain encoder'):
        check({"ner": "self"}, starting_config=None)
    topic_only = MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=[TOPIC_NER_TASKS[0]])
    with pytest.raises(ConfigError, match=r"teachers\.ner: \"self\" .* has no 'ner' head \(its tasks: topic\)"):
        check({"ner": "self"}, starting_config=topic_only)
    check({"ner": "self", "topic": str(trained_folder)})  # both fine


def test_teacher_with_other_labels_names_both_lists(tmp_path, tokenizer):
    from transformers import AutoModelForTokenClassification

    labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    config = tiny_encoder_config(num_labels=len(labels), id2label=dict(enumerate(labels)),
                                 label2id={label: index for index, label in enumerate(labels)})
    config.architectures = ["BertForTokenClassification"]
    AutoModelForTokenClassification.from_config(config).save_pretrained(tmp_path / "stock")
    tokenizer.save_pretrained(tmp_path / "stock")
    settings = DistillationSettings(teachers={"ner": str(tmp_path / "stock")})
    with pytest.raises(ConfigError, match=r"other labels than the task 'ner': teacher \['O', 'B-PER', 'I-PER', 'B-ORG', "
                                          r"'I-ORG'\], task \['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC'\]"):
        load_teachers(settings, run_tasks("ner"), "unused", tokenizer, STUDENT_ENCODER)


def test_stock_teacher_logits_come_in_the_students_label_order(tmp_path, tokenizer):
    """A stock sequence classifier whose id2label lists the topics in another order: its logits are reordered."""
    from transformers import AutoModelForSequenceClassification

    order = [TOPIC_LABELS[2], TOPIC_LABELS[0], TOPIC_LABELS[1]]
    config = tiny_encoder_config(num_labels=3, id2label=dict(enumerate(order)),
                                 label2id={label: index for index, label in enumerate(order)})
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(0)
    stock = AutoModelForSequenceClassification.from_config(config).eval()
    stock.save_pretrained(tmp_path / "stock")
    tokenizer.save_pretrained(tmp_path / "stock")
    teachers = load_teachers(DistillationSettings(teachers={"topic": str(tmp_path / "stock")}), run_tasks("topic"),
                             "unused", tokenizer, STUDENT_ENCODER)
    batch = batch_of(None)
    logits = teachers(batch)["topic"]
    with torch.no_grad():
        raw = stock(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for student_index, label in enumerate(TOPIC_LABELS):
        assert torch.allclose(logits[:, student_index], raw[:, order.index(label)], atol=1e-6)
    assert not any(parameter.requires_grad for parameter in teachers.teachers[0].model.parameters())


def test_stock_teacher_of_another_kind_is_refused(tmp_path, tokenizer):
    from transformers import AutoModelForSequenceClassification

    config = tiny_encoder_config(num_labels=5, id2label=dict(enumerate(NER_LABELS)),
                                 label2id={label: index for index, label in enumerate(NER_LABELS)})
    config.architectures = ["BertForSequenceClassification"]
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "stock")
    with pytest.raises(ConfigError,
                       match=r"predicts a single_label_classification task, and 'ner' is token_classification"):
        load_teachers(DistillationSettings(teachers={"ner": str(tmp_path / "stock")}), run_tasks("ner"), "unused",
                      tokenizer, STUDENT_ENCODER)


def test_self_teacher_is_the_starting_weights_in_evaluation_mode(trained_folder, tokenizer):
    from hf_mtl import MultiTaskModel

    tokenizer.save_pretrained(trained_folder)
    teachers = load_teachers(DistillationSettings(teachers={"topic": "self", "ner": "self"}),
                             run_tasks("topic", "ner"), str(trained_folder), tokenizer, STUDENT_ENCODER)
    assert len(teachers.teachers) == 1  # one folder, loaded once for both tasks
    batch = batch_of(None)
    starting = MultiTaskModel.from_pretrained(trained_folder).eval()
    with torch.no_grad():
        expected = starting(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    got = teachers(batch)
    assert set(got) == {"topic", "ner"}
    for task in got:
        assert torch.equal(got[task], expected[task])
    assert not teachers.teachers[0].model.training


def test_a_teacher_with_another_vocabulary_is_refused(tmp_path, tokenizer, trained_folder):
    small = save_tiny_encoder(tmp_path / "small", vocab_size=100)
    from hf_mtl import MultiTaskConfig, MultiTaskModel

    config = MultiTaskConfig(encoder=tiny_encoder_config(vocab_size=100).to_dict(), tasks=[TOPIC_NER_TASKS[0]])
    MultiTaskModel(config).save_pretrained(small / "multitask")
    with pytest.raises(ConfigError, match=r"vocabulary \(100 tokens\) is not the student's"):
        load_teachers(DistillationSettings(teachers={"topic": str(small / "multitask")}), run_tasks("topic"), "unused",
                      tokenizer, STUDENT_ENCODER)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_precomputed_logits_are_each_rows_teacher_logits(trained_folder, tokenizer, padding_side):
    """`Teachers.with_logits` runs the rows in padded batches and keeps each row's own logits (a token task's
    without the padding); the collator batches them back, padded with 0 on the tokenizer's side. (With left padding
    BERT's absolute positions shift with the padding, so only right padding gives a row the logits it has alone.)"""
    import copy

    import datasets

    from hf_mtl.data import MultiTaskCollator

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(trained_folder)
    tasks = run_tasks("topic", "ner")
    teachers = load_teachers(DistillationSettings(teachers={"topic": "self", "ner": "self"}), tasks,
                             str(trained_folder), tokenizer, STUDENT_ENCODER)
    texts = ("anna visited paris", "omar", "the acme corp board met in new york on monday")
    rows = [dict(tokenizer(text)) for text in texts]
    data = datasets.Dataset.from_list(
        [{**row, "topic_labels": -100, "ner_labels": [-100] * len(row["input_ids"])} for row in rows])
    collator = MultiTaskCollator(tokenizer, tasks)
    with_logits = teachers.with_logits(data, collator, batch_size=2, device="cpu", progress=False)
    for index, row in enumerate(rows):
        alone = teachers({key: torch.tensor([value]) for key, value in row.items()})
        for task in ("topic", "ner"):
            stored = torch.tensor(with_logits[index][f"{task}_teacher_logits"])
            assert stored.shape == alone[task][0].shape
            assert padding_side == "left" or torch.allclose(stored, alone[task][0], atol=1e-5), task
    batch = collator([with_logits[0], with_logits[1]])
    short, long = len(rows[1]["input_ids"]), len(rows[0]["input_ids"])
    assert batch["ner_teacher_logits"].shape == (2, long, len(NER_LABELS))
    padding = batch["ner_teacher_logits"][1, short:] if padding_side == "right" else batch["ner_teacher_logits"][1, :-short]
    assert torch.equal(padding, torch.zeros(long - short, len(NER_LABELS)))
    assert batch["topic_teacher_logits"].shape == (2, len(TOPIC_LABELS))
