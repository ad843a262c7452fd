"""push_folder_to_hub up to the network: the exact files that would be uploaded (create_repo/upload_folder faked)."""

import pytest
from huggingface_hub import RepoUrl
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

import hf_mtl.hub
from hf_mtl.hub import files_to_upload, push_folder_to_hub

UPLOADED = [
    "README.md",
    "all_results.json",
    "config.json",
    "configuration_mtl.py",
    "eval_report.md",
    "eval_results.json",
    "model.safetensors",
    "modeling_mtl.py",
    "plots/confusion_matrix_topic.png",
    "plots/training_loss.png",
    "special_tokens_map.json",
    "test_report.md",
    "test_results.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "train_results.json",
    "trainer_state.json",
    "training_args.bin",
    "vocab.txt",
]
LEFT_OUT = [
    "checkpoint-10/config.json",
    "checkpoint-10/model.safetensors",
    "checkpoint-10/optimizer.pt",
    "checkpoint-20/trainer_state.json",
    "runs/Jan01_00-00-00/events.out.tfevents.1.host",
    "test_predictions.jsonl",
    ".git/HEAD",
]


@pytest.fixture
def output_dir(tmp_path):
    folder = tmp_path / "run"
    for name in UPLOADED + LEFT_OUT:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return folder


def test_files_to_upload(output_dir):
    assert files_to_upload(output_dir) == UPLOADED


def test_push_creates_repo_and_uploads_that_set(output_dir, monkeypatch):
    calls = {}

    def fake_create_repo(repo_id, **kwargs):
        calls["create_repo"] = dict(kwargs, repo_id=repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def fake_upload_folder(**kwargs):
        calls.setdefault("upload_folder", []).append(kwargs)
        return "commit-info"

    monkeypatch.setattr(hf_mtl.hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(hf_mtl.hub, "upload_folder", fake_upload_folder)
    for _ in range(2):  # twice: upload_folder extends the ignore list it is given, ours must not grow
        assert push_folder_to_hub(output_dir, "user/mtl", private=True, token="hf_x", commit_message="first") == "commit-info"

    assert calls["create_repo"] == {"repo_id": "user/mtl", "private": True, "token": "hf_x", "exist_ok": True}
    first, second = calls["upload_folder"]
    assert first == second
    assert first["repo_id"] == "user/mtl" and first["folder_path"] == output_dir
    assert first["token"] == "hf_x" and first["commit_message"] == "first"
    assert "allow_patterns" not in first
    # The filtering upload_folder applies to the folder's files (huggingface_hub's own function and defaults).
    all_files = sorted(path.relative_to(output_dir).as_posix() for path in output_dir.rglob("*") if path.is_file())
    uploaded = list(filter_repo_objects(all_files, ignore_patterns=first["ignore_patterns"] + DEFAULT_IGNORE_PATTERNS))
    assert uploaded == UPLOADED


def test_push_missing_folder_fails_before_any_call(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_mtl.hub, "create_repo", lambda *args, **kwargs: pytest.fail("create_repo called"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        push_folder_to_hub(tmp_path / "missing", "user/mtl")
