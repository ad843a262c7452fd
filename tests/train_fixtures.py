"""Offline building blocks for training tests: a tiny random encoder folder, tiny joint data, a config runner, and
the real entry point in subprocesses (killed runs, launchers)."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, save_tiny_encoder

TOPICS = ["business", "politics", "sports", "technology"]
NER_LABELS = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]
TOPIC_WORDS = {
    "business": ["shares", "profit", "market", "bank"],
    "politics": ["election", "minister", "vote", "parliament"],
    "sports": ["match", "goal", "coach", "season"],
    "technology": ["software", "chip", "app", "robot"],
}
PEOPLE = [["anna", "berg"], ["omar"], ["lena", "kovacs"]]
ORGS = [["acme", "corp"], ["northwind"]]
PLACES = [["paris"], ["new", "york"], ["lagos"]]


def joint_example(rng: random.Random) -> dict:
    topic = rng.choice(TOPICS)
    tokens, tags = [], []

    def add(words, kind=None):
        for index, word in enumerate(words):
            tokens.append(word)
            tags.append("O" if kind is None else ("B-" if index == 0 else "I-") + kind)

    add(rng.choice(PEOPLE), "PER")
    add(["said", "the"])
    add(rng.sample(TOPIC_WORDS[topic], 2))  # two topic words: enough signal for a tiny random encoder to learn
    add(["of"])
    add(rng.choice(ORGS), "ORG")
    add(["in"])
    add(rng.choice(PLACES), "LOC")
    return {"tokens": tokens, "tags": tags, "topic": topic}


def write_joint_data(folder: Path, sizes=(48, 16, 16), seed=0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "validation", "test"), sizes):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for _ in range(size):
                handle.write(json.dumps(joint_example(rng)) + "\n")
    return folder


def training_root(tmp_path_factory, tokenizer, name: str):
    """A fresh folder with a tiny encoder and tiny joint data: (folder, encoder folder, data folder)."""
    root = tmp_path_factory.mktemp(name)
    return root, save_tiny_encoder(root / "encoder", tokenizer), write_joint_data(root / "data")


def joint_config(encoder_dir, data_dir, output_dir, **overrides) -> dict:
    config = {
        "model_name_or_path": str(encoder_dir),
        "datasets": {"demo": {"path": str(data_dir), "format": "json",
                              "data_files": {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}}},
        "tasks": [
            {"name": "topic", "type": "sequence_classification", "dataset": "demo", "label_column": "topic"},
            {"name": "ner", "type": "token_classification", "dataset": "demo"},
        ],
        "max_seq_length": 32,
        "output_dir": str(output_dir),
        "do_train": True, "do_eval": True, "do_predict": True,
        "max_steps": 4, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
        "learning_rate": 1e-3, "logging_steps": 1, "save_strategy": "no", "eval_strategy": "no",
        "use_cpu": True, "report_to": "none", "seed": 7, "disable_tqdm": True,
    }
    config.update(overrides)
    return config


def run_config(config: dict, folder: Path, *overrides: str) -> dict:
    from hf_mtl.train import main

    path = folder / "run_config.json"
    path.write_text(json.dumps(config))
    return main([str(path), *overrides])


def weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


# Runs the real entry point; with KILL_AT_STEP it SIGKILLs the process (every rank of a distributed run, once all of
# them have written their part) right after it has written the checkpoint of that step; with RECORD_ROWS every process
# appends the row indices it fetches from a data set, one batch a line, to RECORD_ROWS.<rank>.
KILLED_RUN = """
import os, signal, sys
import datasets
import torch.distributed as dist
from transformers import Trainer
original_save = Trainer._save_checkpoint
def save_then_die(self, *args, **kwargs):
    original_save(self, *args, **kwargs)
    if "KILL_AT_STEP" in os.environ and self.state.global_step >= int(os.environ["KILL_AT_STEP"]):
        if dist.is_initialized():
            dist.barrier()
        os.kill(os.getpid(), signal.SIGKILL)
Trainer._save_checkpoint = save_then_die
original_getitems = datasets.Dataset.__getitems__
def recorded_getitems(self, keys):
    if "RECORD_ROWS" in os.environ:
        with open(os.environ["RECORD_ROWS"] + "." + os.environ.get("RANK", "0"), "a") as handle:
            handle.write(" ".join(map(str, keys)) + "\\n")
    return original_getitems(self, keys)
datasets.Dataset.__getitems__ = recorded_getitems
from hf_mtl.train import cli_main
cli_main(sys.argv[1:])
"""


def run_process(args, env_extra=None, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=timeout)


def write_config(root, name, config):
    path = Path(root) / f"{name}.json"
    path.write_text(json.dumps(config))
    return str(path)


def accelerate_launch(processes=1, config_file=None) -> list:
    """`accelerate launch` with every choice explicit (no user config file is read); `--multi_gpu` is how several
    CPU processes start (`--cpu` would start one)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        return launcher + ["--config_file", str(config_file)]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                 "--num_processes", str(processes)]
    return launcher + (["--multi_gpu"] if processes > 1 else [])
