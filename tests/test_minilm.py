"""Real pretrained weights (all-MiniLM-L6-v2, offline): from_encoder keeps them, embeddings behave."""

import pytest
import torch
from conftest import TOPIC_NER_TASKS
from transformers import AutoModel, AutoTokenizer

from hf_mtl import MultiTaskModel

pytestmark = pytest.mark.minilm


@pytest.fixture(scope="module")
def minilm_model(minilm_path):
    return MultiTaskModel.from_encoder(minilm_path, tasks=TOPIC_NER_TASKS, pooling="mean").eval()


def test_from_encoder_loads_the_pretrained_weights_unchanged(minilm_model, minilm_path):
    reference = AutoModel.from_pretrained(minilm_path)
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert torch.equal(minilm_model.encoder.state_dict()[name], reference.state_dict()[name]), name
    assert minilm_model.encoder.pooler is None
    assert minilm_model.config.encoder.hidden_size == 384


def test_mean_pooled_normalised_embeddings(minilm_model, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    sentences = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The stock market fell sharply on Tuesday.",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        embeddings = minilm_model.embed(batch["input_ids"], batch["attention_mask"], normalize=True)
    assert embeddings.shape == (3, 384)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    paraphrase, unrelated = embeddings[0] @ embeddings[1], embeddings[0] @ embeddings[2]
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)
