"""Safe loading: safetensors only, no pickle loads, and no code from a model folder runs when hf_mtl is installed."""

import re

from conftest import REPO_ROOT, tiny_model
from transformers import AutoModel

from hf_mtl import MultiTaskModel

TASKS = [{"name": "topic", "type": "sequence_classification", "labels": ["a", "b"]}]


def test_package_never_unpickles_or_evaluates():
    for path in (REPO_ROOT / "hf_mtl").rglob("*.py"):
        source = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", source):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"(?<![\w.])(eval|exec)\(", source), path
        assert not re.search(r"^\s*(import|from) (pickle|dill|cloudpickle)\b", source, re.MULTILINE), path


def test_folder_code_does_not_run_when_hf_mtl_is_installed(tmp_path):
    tiny_model(TASKS).save_pretrained(tmp_path)
    marker = tmp_path / "code_ran"
    # A tampered copy of the model code in the folder: it must not be imported without trust_remote_code.
    for name in ("modeling_mtl.py", "configuration_mtl.py"):
        path = tmp_path / name
        path.write_text(f"open({str(marker)!r}, 'w').write('x')\n" + path.read_text())

    model = AutoModel.from_pretrained(tmp_path)
    assert type(model) is MultiTaskModel
    assert not marker.exists()
    assert {path.suffix for path in tmp_path.iterdir() if path.is_file()} == {".json", ".py", ".safetensors"}
