"""The bad-input battery: every user error ends the run with exit status 2, ONE `error: ...` line naming the place,
and nothing written to output_dir."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from train_fixtures import joint_config, save_tiny_encoder, write_joint_data

from hf_mtl.train import cli_main


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("battery")
    return {
        "root": root,
        "encoder": save_tiny_encoder(root / "encoder", tokenizer),
        "distilbert": save_tiny_encoder(root / "distilbert", tokenizer, model_type="distilbert"),
        "data": write_joint_data(root / "data", sizes=(24, 8, 8)),
    }


def jsonl(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"path": str(folder), "format": "json", "data_files": {"train": "train.jsonl"}}


GOOD_ROW = {"tokens": ["anna", "visited", "paris"], "tags": ["B-PER", "O", "B-LOC"], "topic": "sports"}
OTHER_ROW = {"tokens": ["omar", "left", "acme"], "tags": ["B-PER", "O", "B-ORG"], "topic": "business"}


def jointbert(folder, seq_in, seq_out, labels):
    (folder / "train").mkdir(parents=True, exist_ok=True)
    for name, lines in (("seq.in", seq_in), ("seq.out", seq_out), ("label", labels)):
        (folder / "train" / name).write_text("".join(line + "\n" for line in lines))
    return {"path": str(folder), "format": "jointbert"}


def slot_tasks():
    return [{"name": "intent", "type": "sequence_classification", "dataset": "demo"},
            {"name": "slots", "type": "token_classification", "dataset": "demo"}]


# Each case: (id, function(base, tmp) -> (config dict or raw text, extra argv), substrings the message must hold)
def case_unknown_key(b, tmp):
    return dict(joint_config(b["encoder"], b["data"], tmp / "out"), freeze_everything=True), [], ["freeze_everything"]


def case_malformed_json(b, tmp):
    return '{\n  "model_name_or_path": "x",\n  "tasks": [,]\n}', [], ["config.json:3:"]


def case_missing_data_path(b, tmp):
    config = joint_config(b["encoder"], tmp / "nowhere", tmp / "out")
    return config, [], ["nowhere"]


def case_unknown_format(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["datasets"]["demo"]["format"] = "xml"
    return config, [], ["datasets.demo.format", "xml"]


def case_missing_column(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["tasks"][0]["label_column"] = "category"
    return config, [], ["category", "topic"]


def case_jsonl_length_mismatch(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["datasets"]["demo"] = jsonl(tmp / "d", [GOOD_ROW, OTHER_ROW, dict(GOOD_ROW, tags=["B-PER", "O"])])
    return config, [], ["train.jsonl:3", "3 words but 2 tags"]


def case_conll_missing_tag(b, tmp):
    (tmp / "c").mkdir()
    (tmp / "c" / "train.txt").write_text("Anna B-PER\nvisited O\n\nOmar B-PER\nleft\n")
    config = joint_config(b["encoder"], b["data"], tmp / "out", do_eval=False, do_predict=False)
    config["datasets"] = {"demo": {"path": str(tmp / "c" / "train.txt"), "format": "conll"}}
    config["tasks"] = [config["tasks"][1]]
    return config, [], ["train.txt:5"]


def case_jointbert_line_mismatch(b, tmp):
    spec = jointbert(tmp / "j", ["play some jazz", "book a table"], ["O O B-genre", "O O"], ["Play", "Book"])
    config = joint_config(b["encoder"], b["data"], tmp / "out", do_eval=False, do_predict=False)
    config["datasets"] = {"demo": spec}
    config["tasks"] = slot_tasks()
    return config, [], ["seq.out:2"]


def case_jointbert_line_counts(b, tmp):
    spec = jointbert(tmp / "j", ["play some jazz", "book a table"], ["O O B-genre"], ["Play", "Book"])
    config = joint_config(b["encoder"], b["data"], tmp / "out", do_eval=False, do_predict=False)
    config["datasets"] = {"demo": spec}
    config["tasks"] = slot_tasks()
    return config, [], ["seq.in", "seq.out", "line count"]


def case_tag_with_underscore(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["datasets"]["demo"] = jsonl(tmp / "d", [GOOD_ROW, dict(OTHER_ROW, tags=["B_PER", "O", "B-ORG"])])
    return config, [], ["train.jsonl:2", "B_PER"]


def case_tag_without_prefix(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["datasets"]["demo"] = jsonl(tmp / "d", [dict(GOOD_ROW, tags=["PER", "O", "B-LOC"]), OTHER_ROW])
    return config, [], ["train.jsonl:1", "PER"]


def case_empty_train_split(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["datasets"]["demo"] = jsonl(tmp / "d", [])
    return config, [], ["train"]


def case_not_utf8(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    spec = jsonl(tmp / "d", [GOOD_ROW, OTHER_ROW])
    (tmp / "d" / "train.jsonl").write_bytes(b'{"tokens": ["caf\xe9"], "tags": ["O"], "topic": "x"}\n')
    config["datasets"]["demo"] = spec
    return config, [], ["train.jsonl", "UTF-8"]


def case_duplicate_task_names(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["tasks"][1]["name"] = "topic"
    return config, [], ["tasks[1].name", "topic"]


def case_undeclared_dataset(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["tasks"][1]["dataset"] = "conll"
    return config, [], ["tasks[1].dataset", "conll"]


def case_labels_missing_a_train_label(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out")
    config["tasks"][0]["labels"] = ["business", "politics", "sports"]
    return config, [], ["topic", "technology", "labels"]


def case_freeze_unknown_head(b, tmp):
    return joint_config(b["encoder"], b["data"], tmp / "out", freeze_heads=["intent"]), [], ["freeze_heads", "intent"]


def case_everything_frozen(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out", freeze_encoder=True, freeze_heads=["topic", "ner"])
    return config, [], ["whole network is frozen"]


def case_pooler_without_pooler(b, tmp):
    return joint_config(b["distilbert"], b["data"], tmp / "out", pooling="pooler"), [], ["pooling", "distilbert"]


def case_max_seq_length_too_long(b, tmp):
    return joint_config(b["encoder"], b["data"], tmp / "out", max_seq_length=4096), [], ["max_seq_length", "128"]


def case_missing_model(b, tmp):
    return joint_config(tmp / "no_model", b["data"], tmp / "out"), [], ["model_name_or_path", "no_model"]


def case_unknown_packaged_model(b, tmp):
    config = joint_config(b["encoder"], b["data"], tmp / "out", model_name_or_path="package:bert-huge")
    return config, [], ["package:bert-huge"]


def case_bad_override(b, tmp):
    return joint_config(b["encoder"], b["data"], tmp / "out"), ["--num_train_epochs", "many"], ["num_train_epochs", "many"]


def case_unknown_override(b, tmp):
    return joint_config(b["encoder"], b["data"], tmp / "out"), ["--epochs", "3"], ["--epochs"]


def case_bad_sampling(b, tmp):
    return joint_config(b["encoder"], b["data"], tmp / "out", task_sampling="random"), [], ["task_sampling", "random"]


CASES = {name[len("case_"):]: function for name, function in globals().items() if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_error_is_one_line_exit_2_and_writes_nothing(name, base, tmp_path, capsys):
    config, extra, expected = CASES[name](base, tmp_path)
    path = tmp_path / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli_main([str(path), *extra])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    for fragment in expected:
        assert fragment in errors[0], (fragment, errors[0])
    assert not (tmp_path / "out").exists()


def test_the_battery_is_large_enough():
    assert len(CASES) >= 20


def test_run_mtl_script_prints_one_line_and_exits_2(base, tmp_path):
    """The real script in a subprocess: no traceback unless HF_MTL_DEBUG=1."""
    config, _, _ = case_duplicate_task_names(base, tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "run_mtl.py", str(path)], capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: tasks[1].name")
    debug = subprocess.run([sys.executable, "run_mtl.py", str(path)], capture_output=True, text=True, cwd=REPO_ROOT,
                           timeout=300, env=dict(os.environ, HF_MTL_DEBUG="1"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr
