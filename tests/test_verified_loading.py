"""Loading a model folder checks that it matches itself, for every consumer: `AutoModel` / `MultiTaskModel`
`from_pretrained` (remote code included), `MultiTaskPipeline`, and `hf_mtl.loading.load_model_folder` (CLI, exports,
continued training)."""

import json

import pytest
import torch
from conftest import tiny_encoder_config
from transformers import AutoModel

from hf_mtl import MultiTaskConfig, MultiTaskModel, MultiTaskPipeline
from hf_mtl.errors import ModelError
from hf_mtl.loading import load_model_folder

TASKS = [
    {"name": "topic", "type": "sequence_classification", "labels": ["a", "b", "c"]},
    {"name": "ner", "type": "token_classification", "labels": ["O", "B-PER", "I-PER"]},
]


@pytest.fixture
def folder(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=TASKS))
    model.save_pretrained(tmp_path / "model", max_shard_size="1MB")  # sharded: an index and several files
    tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def edit_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_a_matching_folder_loads_through_every_path(folder):
    model, tokenizer = load_model_folder(folder)
    assert model.config.task_names == ["topic", "ner"] and tokenizer.is_fast
    reference = AutoModel.from_pretrained(folder)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert MultiTaskPipeline(str(folder))("anna visited paris")["topic"]["label"] in ("a", "b", "c")


def test_config_that_no_longer_matches_the_weights_is_refused_everywhere(folder):
    edit_config(folder, lambda config: config["tasks"][0].update(name="subject"))
    with pytest.raises(ValueError, match=r"heads\.subject.*heads in the checkpoint that config.json does not declare"):
        AutoModel.from_pretrained(folder)
    with pytest.raises(ValueError, match="does not match the weights"):
        MultiTaskPipeline(str(folder))
    with pytest.raises(ModelError, match=rf"model {folder}: config.json \(tasks \['subject', 'ner'\]\)"):
        load_model_folder(folder)


def test_other_head_shapes_are_refused_unless_asked_for(folder):
    edit_config(folder, lambda config: config["tasks"][0]["labels"].append("d"))
    with pytest.raises(ValueError, match=r"heads\.topic\.classifier\.weight \[3, 32\] in the checkpoint, \[4, 32\]"):
        MultiTaskModel.from_pretrained(folder)
    model = MultiTaskModel.from_pretrained(folder, ignore_mismatched_sizes=True)  # transformers' own escape hatch
    assert model.heads["topic"].classifier.out_features == 4


def test_a_damaged_shard_is_named(folder):
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].write_bytes(shards[-1].read_bytes()[:-10])
    with pytest.raises(ModelError, match=rf"{shards[-1]}: the weights file is damaged"):
        load_model_folder(folder)
    with pytest.raises(OSError, match="a weights file is damaged"):
        MultiTaskPipeline(str(folder))


def test_a_folder_without_tokenizer_json_is_refused_not_read_as_unk(folder):
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=rf"{folder}: the tokenizer has 5 tokens but the encoder's embeddings"):
        MultiTaskPipeline(str(folder))
    with pytest.raises(ModelError, match="tokenizer.json is missing"):
        load_model_folder(folder)
