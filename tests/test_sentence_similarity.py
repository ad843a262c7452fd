"""The `sentence_similarity` kind: a bi-encoder head whose loss trains the shared embedding itself."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TOPIC_LABELS, tiny_model

from hf_mtl import MultiTaskConfig, MultiTaskPipeline
from hf_mtl.task_kinds import SentenceSimilarityHead
from hf_mtl.tasks import parse_task

STS = {"name": "sts", "type": "sentence_similarity"}
TOPIC = {"name": "topic", "type": "sequence_classification", "labels": TOPIC_LABELS}


def head(**task):
    return SentenceSimilarityHead({**STS, **task}, hidden_size=8, dropout=0.1)


def towers(rows=4, hidden=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, hidden, generator=generator, requires_grad=True) for _ in range(3)]


def test_cosent_is_the_rank_loss_over_pairs_of_rows():
    first, second, _ = towers()
    scores = torch.tensor([0.0, 5.0, 2.5, 1.0])
    cosines = F.cosine_similarity(first, second, dim=-1)
    terms = [20 * (cosines[i] - cosines[j]) for i in range(4) for j in range(4) if scores[i] < scores[j]]
    expected = torch.log(1 + torch.exp(torch.stack(terms)).sum())
    similarity = head()
    assert torch.allclose(similarity.loss(similarity(None, first, {"pair": second}), scores), expected, atol=1e-5)


def test_cosine_mse_maps_the_scores_onto_cosines():
    first, second, _ = towers()
    scores = torch.tensor([0.0, 5.0, 2.5, 1.0])
    similarity = head(loss="cosine_mse", target_min=0.0, target_max=5.0)
    expected = F.mse_loss(F.cosine_similarity(first, second, dim=-1), scores / 5)
    assert torch.allclose(similarity.loss(similarity(None, first, {"pair": second}), scores), expected, atol=1e-6)


def test_multiple_negatives_ranking_uses_in_batch_and_hard_negatives():
    first, second, negative = towers()
    similarity = head(loss="multiple_negatives_ranking", hard_negatives=True)
    candidates = F.normalize(torch.cat([second, negative]), dim=-1)
    expected = F.cross_entropy(F.normalize(first, dim=-1) @ candidates.T * 20, torch.arange(4))
    logits = similarity(None, first, {"pair": second, "negative": negative})
    assert logits.shape == (4, 3, 8)
    assert torch.allclose(similarity.loss(logits, torch.ones(4)), expected, atol=1e-5)
    # A task without hard negatives leaves the batch's negative tower (another task's) out of its candidates.
    assert head(loss="multiple_negatives_ranking")(None, first, {"pair": second, "negative": negative}).shape == (4, 2, 8)


def test_matryoshka_dims_must_be_below_the_embedding_size():
    with pytest.raises(ValueError, match=r"matryoshka_dims \[8\] are not below the embedding size 8"):
        head(matryoshka_dims=[4, 8])


def test_matryoshka_averages_the_loss_of_each_truncated_embedding():
    first, second, _ = towers()
    scores = torch.tensor([0.0, 5.0, 2.5, 1.0])
    logits = head()(None, first, {"pair": second})
    full, truncated = head().loss(logits, scores), head().loss(logits[..., :4], scores)
    assert torch.allclose(head(matryoshka_dims=[4]).loss(logits, scores), (full + truncated) / 2, atol=1e-6)


def test_rows_without_a_pair_add_exactly_zero_and_keep_the_graph():
    first, second, _ = towers()
    similarity = head()
    loss = similarity.loss(similarity(None, first, {"pair": second}), torch.full((4,), math.nan))
    assert loss.item() == 0.0
    loss.backward()
    assert first.grad is not None and torch.count_nonzero(first.grad) == 0


def test_the_model_trains_the_encoder_through_both_towers():
    model = tiny_model(tasks=[STS, TOPIC]).train()
    ids = torch.randint(1000, 2000, (4, 6))
    output = model(input_ids=ids, attention_mask=torch.ones_like(ids), pair_input_ids=ids.flip(0),
                   pair_attention_mask=torch.ones_like(ids), sts_labels=torch.tensor([0.0, 5.0, 2.5, math.nan]))
    assert output.logits["sts"].shape == (4, 2, 32)
    assert torch.allclose(output.logits["sts"][:, 1], model.embed(ids.flip(0), torch.ones_like(ids), normalize=False),
                          atol=1e-4) or model.training  # dropout in training; checked in eval below
    output.loss.backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pair_input_ids=ids.flip(0),
                       pair_attention_mask=torch.ones_like(ids)).logits["sts"]
        embedded = model.embed(ids.flip(0), torch.ones_like(ids), normalize=False)
    assert torch.allclose(logits[:, 1], embedded, atol=1e-5)  # pooled exactly as embed() pools


def test_the_pipeline_scores_a_pair_by_the_cosine_of_its_embeddings(tmp_path, tokenizer):
    model = tiny_model(tasks=[STS, TOPIC], vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    pipe = MultiTaskPipeline(str(tmp_path))
    output = pipe({"text": "a man plays a guitar", "text_pair": "someone makes music"})
    expected = pipe.similarity("a man plays a guitar", "someone makes music")
    assert output["sts"]["score"] == pytest.approx(expected, abs=1e-5)
    assert "topic" in output and "sts" not in pipe("a single text")


@pytest.mark.parametrize("task, message", [
    ({"loss": "triplet"}, r"tasks\[0\].loss: 'triplet' is not one of cosent, cosine_mse, multiple_negatives_ranking"),
    ({"matryoshka_dims": [0, 4]}, r"tasks\[0\].matryoshka_dims: a list of positive integers"),
    ({"scale": -1}, r"tasks\[0\].scale: a positive number"),
    ({"labels": ["a", "b"]}, r"tasks\[0\].labels: a sentence_similarity task predicts one number and takes no labels"),
])
def test_a_bad_saved_task_is_one_error(task, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskConfig(tasks=[{**STS, **task}])


@pytest.mark.parametrize("block, message", [
    ({"text_column": "a"}, "sts.text_pair_column: a sentence_similarity task needs the second text"),
    ({"text_column": "a", "text_pair_column": "b", "loss": "cosent"}, "sts.loss: 'cosent' trains on scores"),
    ({"text_column": "a", "text_pair_column": "b", "label_column": "score", "loss": "multiple_negatives_ranking"},
     "sts.loss: multiple_negatives_ranking trains on positive pairs"),
    ({"text_column": "a", "text_pair_column": "b", "label_column": "score", "text_negative_column": "c"},
     "sts.text_negative_column: hard negatives train with loss multiple_negatives_ranking"),
])
def test_a_bad_run_task_block_is_one_error(block, message):
    with pytest.raises(Exception, match=message):
        parse_task({**STS, "dataset": "d", **block}, "sts")


def test_the_loss_follows_the_data_unless_chosen():
    scored = parse_task({**STS, "dataset": "d", "text_column": "a", "text_pair_column": "b", "label_column": "s"}, "t")
    pairs = parse_task({**STS, "dataset": "d", "text_column": "a", "text_pair_column": "b"}, "t")
    assert (scored.loss_name, scored.metric_names) == ("cosent", ("spearman", "pearson"))
    assert (pairs.loss_name, pairs.metric_names) == ("multiple_negatives_ranking", ("mrr_at_10", "recall_at_1"))


def test_unscored_pairs_are_scored_by_retrieval_over_the_split():
    pairs = parse_task({**STS, "dataset": "d", "text_column": "a", "text_pair_column": "b"}, "t")
    texts = np.eye(4)
    seconds = np.stack([texts[0], texts[2], texts[1], texts[3] + texts[0]])  # rows 1 and 2 swapped, row 3 ties row 0
    ranks = pairs.split_predictions(np.stack([texts, seconds], axis=1), [1.0, 1.0, 1.0, math.nan])
    assert ranks.tolist() == [1, 2, 2, 0]
    result = pairs.compute([{"gold": 1.0, "pred": int(rank)} for rank in ranks[:3]])
    assert result["recall_at_1"] == pytest.approx(1 / 3) and result["mrr_at_10"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_scored_pairs_are_scored_like_scipy():
    from scipy import stats

    scored = parse_task({**STS, "dataset": "d", "text_column": "a", "text_pair_column": "b", "label_column": "s"}, "t")
    generator = np.random.default_rng(1)
    gold, cosines = generator.uniform(0, 5, 40), generator.uniform(-1, 1, 40)
    result = scored.compute([{"gold": float(g), "pred": float(c)} for g, c in zip(gold, cosines)])
    assert result["spearman"] == pytest.approx(stats.spearmanr(cosines, gold)[0], abs=1e-9)
    assert result["pearson"] == pytest.approx(stats.pearsonr(cosines, gold)[0], abs=1e-9)
    assert scored.flatten(result) == {"spearman": result["spearman"], "pearson": result["pearson"]}
