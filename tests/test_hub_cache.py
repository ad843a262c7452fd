"""Load a saved folder the way a Hub user does, by repo id, from an offline Hugging Face cache, without hf_mtl."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from pipeline_helpers import SENTENCES, assert_same_predictions, raw_text

pytestmark = pytest.mark.subprocess

REPO_ID = "user/name"
REVISION = "0123456789abcdef0123456789abcdef01234567"
TEXTS = [raw_text(words) for words, _, _ in SENTENCES[:4]]

BY_REPO_ID = """
import json, sys
if sys.argv[2] == "without-hf_mtl":
    sys.modules["hf_mtl"] = None  # hf_mtl is not installed as far as this process can tell
    import transformers
    model = transformers.AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert model.__module__.startswith("transformers_modules."), model.__module__
    pipe = transformers.pipeline(model=sys.argv[1], trust_remote_code=True)
else:
    from hf_mtl import MultiTaskPipeline
    pipe = MultiTaskPipeline(sys.argv[1])
print(json.dumps(pipe(json.loads(sys.argv[3]), return_tags=True, bf16=False)))
"""


def offline_hub_cache(model_dir, root):
    """`root/hub` laid out as huggingface_hub caches `REPO_ID` at `REVISION`, with `refs/main` pointing there."""
    repo = root / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(root / "home"),
        HF_HUB_CACHE=str(root / "hub"),
        HF_MODULES_CACHE=str(root / "modules"),
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def predict_by_repo_id(env, mode):
    """The subprocess's predictions, in float32 (both sides state it: the parity must not hang on the CPU kind)."""
    completed = subprocess.run(
        [sys.executable, "-c", BY_REPO_ID, REPO_ID, mode, json.dumps(TEXTS)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.splitlines()[-1])


def test_repo_id_loads_offline_without_hf_mtl(model_dir, pipe, tmp_path):
    env = offline_hub_cache(model_dir, tmp_path)
    assert_same_predictions(predict_by_repo_id(env, "without-hf_mtl"), pipe(TEXTS, return_tags=True, bf16=False), score_tolerance=1e-5)


def test_multitask_pipeline_takes_a_repo_id(model_dir, pipe, tmp_path):
    env = offline_hub_cache(model_dir, tmp_path)
    assert_same_predictions(predict_by_repo_id(env, "with-hf_mtl"), pipe(TEXTS, return_tags=True, bf16=False), score_tolerance=1e-5)
