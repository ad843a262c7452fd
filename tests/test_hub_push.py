"""push_folder_to_hub up to the network: the exact files that would be uploaded (create_repo/upload_folder faked)."""

import pytest
from huggingface_hub import RepoUrl
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

import hf_mtl.hub
from hf_mtl.errors import ConfigError
from hf_mtl.hub import check_hub_access, files_to_upload, push_folder_to_hub

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


# ---- the run's preflight of a push: offline mode, a token, a reachable Hub (all faked: tests stay offline) ----------
@pytest.fixture
def online(monkeypatch):
    """As if HF_HUB_OFFLINE were unset (conftest sets it) and no token were saved; whoami must not be reached."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_mtl.hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_mtl.hub, "get_token", lambda: None)
    monkeypatch.setattr(hf_mtl.hub, "whoami", lambda **kwargs: pytest.fail("whoami called"))


def test_hub_preflight_refuses_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="push_to_hub: HF_HUB_OFFLINE is set"):
        check_hub_access("hf_x")


def test_hub_preflight_needs_a_token(online):
    with pytest.raises(ConfigError, match="push_to_hub: no Hugging Face token"):
        check_hub_access(None)


def test_hub_preflight_names_an_unreachable_hub_and_a_rejected_token(online, monkeypatch):
    def unreachable(**kwargs):
        raise ConnectionError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(hf_mtl.hub, "whoami", unreachable)
    with pytest.raises(ConfigError, match=r"cannot reach the Hugging Face Hub .*ConnectionError: \[Errno -3\]"):
        check_hub_access("hf_x")

    class Rejected(Exception):
        response = type("Response", (), {"status_code": 401})()

    def rejected(**kwargs):
        raise Rejected("Invalid user token.")

    monkeypatch.setattr(hf_mtl.hub, "whoami", rejected)
    with pytest.raises(ConfigError, match="the Hugging Face token is not valid"):
        check_hub_access("hf_x")


def test_hub_preflight_passes_with_a_token_and_a_reachable_hub(online, monkeypatch):
    asked = []
    monkeypatch.setattr(hf_mtl.hub, "get_token", lambda: "hf_saved")
    monkeypatch.setattr(hf_mtl.hub, "whoami", lambda token: asked.append(token) or {"name": "anna"})
    assert check_hub_access(None) == "anna"
    assert check_hub_access("hf_given") == "anna"
    assert asked == ["hf_saved", "hf_given"]


def test_a_run_with_push_to_hub_and_no_token_fails_in_the_preflight(online, monkeypatch, tmp_path, tokenizer):
    from train_fixtures import joint_config, run_config, save_tiny_encoder, write_joint_data

    from hf_mtl.train import parse_arguments, preflight

    config = joint_config(save_tiny_encoder(tmp_path / "encoder", tokenizer), write_joint_data(tmp_path / "data"),
                          tmp_path / "run", push_to_hub=True, hub_model_id="anna/mtl")
    loaded = []
    monkeypatch.setattr("hf_mtl.train.load_encoder_and_tokenizer", lambda *args: loaded.append(args))
    with pytest.raises(ConfigError, match="push_to_hub: no Hugging Face token"):
        run_config(config, tmp_path)
    assert loaded == [] and not (tmp_path / "run").exists()  # nothing read, nothing written

    monkeypatch.setattr(hf_mtl.hub, "get_token", lambda: "hf_saved")
    monkeypatch.setattr(hf_mtl.hub, "whoami", lambda token: {"name": "anna"})
    path = tmp_path / "run_config.json"
    assert preflight(str(path), *parse_arguments([str(path)])).target == (tmp_path / "run").resolve()
