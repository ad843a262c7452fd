"""Quality benchmark of hf_mtl: one command per row, results kept as JSON, a table for BENCHMARKS.md.

    python bench/quality.py --list                      # the rows, and which have results
    python bench/quality.py --threads 2 --row snips_recipe_seed1   # run one row (skipped when its result exists;
                                                # --force reruns); the command each row ran is in the table
    python bench/quality.py --table                     # rewrite the results table in BENCHMARKS.md
    python bench/quality.py --smoke [--results-dir D]   # CI: a few dozen steps of a row on a tiny subset

Run from the repository root. Data are read from ../shared/data (never copied into the repository); the AG News
split (6,000 / 800 / 800 of its 7,600-row test file, seeded permutation) and the SNIPS rehearsal share (10 % of SNIPS
train, seeded, with dev and test copied) are written to bench/runs/data/, which is git-ignored like every model folder
under bench/runs/.

The continual and distillation rows start from, or learn from, models other rows trained (`bench/runs/<folder>`);
a row whose folder is missing stops before it runs and prints the command that makes it.

hf_mtl rows run `python run_mtl.py <config>` in a subprocess (the config is written next to the run); the stock
baselines train `AutoModelForSequenceClassification` / `AutoModelForTokenClassification` with a plain
`transformers.Trainer`, on the rows hf_mtl's data layer encodes (first-subtoken labels, as run_ner.py), and are
scored by hf_mtl's word-level evaluation, so every number in the table is computed the same way.
"""

import argparse
import copy
import csv
import datetime
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_name, environment, replace_section  # bench/benchlib.py: a script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CONFIGS = BENCH / "configs"
RESULTS = BENCH / "results"
RUNS = BENCH / "runs"
SHARED = ROOT.parent / "shared" / "data"
PYTHON = sys.executable
MARK_BEGIN = "<!-- quality-table:begin -->"
MARK_END = "<!-- quality-table:end -->"

AG_SPLIT = {"train": 6000, "validation": 800, "test": 800}
AG_SEED = 0
SNIPS_REHEARSAL_SHARE = 0.10  # of SNIPS train, a seeded sample: the old data the rehearsal row mixes back in
SNIPS_REHEARSAL_SEED = 0

# ---------------------------------------------------------------------------------------------------------------------
# rows


def recipe(name: str) -> dict:
    """A recipe config of bench/configs. `pairs_minilm`: MRPC (paraphrase label) + STS 2015 (similarity score),
    fixed epochs and no dev selection (STS has no test split, so its validation Pearson is what is reported)."""
    with open(CONFIGS / f"{name}.json", encoding="utf-8") as handle:
        return json.load(handle)


def snips_recipe() -> dict:
    """The SNIPS recipe the dev search chose: recipe v1 with 12 epochs and CRF slots."""
    return recipe("snips_minilm")


def snips_recipe_v1() -> dict:
    """The first SNIPS recipe (6 epochs, softmax slots): what every SNIPS row before the dev search ran, and the
    starting point of the search."""
    return recipe("snips_minilm_v1")


def conll_ag_recipe() -> dict:
    return recipe("conll_agnews_minilm")


def pairs_recipe() -> dict:
    return recipe("pairs_minilm")


def mixsnips_recipe() -> dict:
    return recipe("mixsnips_minilm")


def pairs_with_snips() -> dict:
    """The pair tasks and SNIPS intent + slots in one model, temperature-sampled (T=2), the pair recipe otherwise."""
    config, snips = pairs_recipe(), snips_recipe_v1()
    config["datasets"] = {**config["datasets"], **snips["datasets"]}
    config["tasks"] = config["tasks"] + snips["tasks"]
    config.update(task_sampling="temperature", sampling_temperature=2.0)
    return config


def sts_biencoder_recipe() -> dict:
    """STS 2015 as a `sentence_similarity` task (a bi-encoder, CoSENT): the embedding itself trains."""
    return recipe("sts_biencoder_minilm")


def snips_with_sts_biencoder() -> dict:
    """The SNIPS recipe with the STS bi-encoder task mixed in (temperature T=2): what heads cost the embedding."""
    config, sts = snips_recipe(), sts_biencoder_recipe()
    config["datasets"] = {**config["datasets"], **sts["datasets"]}
    config["tasks"] = config["tasks"] + sts["tasks"]
    config.update(task_sampling="temperature", sampling_temperature=2.0)
    return config


def only_tasks(config: dict, names, keep_crf=True) -> dict:
    config = copy.deepcopy(config)
    config["tasks"] = [task for task in config["tasks"] if task["name"] in names]
    if not keep_crf:  # a stock model's softmax head: its config should not claim a CRF
        for task in config["tasks"]:
            task.pop("crf", None)
            task.pop("bio_constraints", None)
    used = {task["dataset"] for task in config["tasks"]}
    config["datasets"] = {name: spec for name, spec in config["datasets"].items() if name in used}
    return config


def with_task(config: dict, name: str, **keys) -> dict:
    """`config` with keys set in the task block `name`."""
    config = copy.deepcopy(config)
    config["tasks"] = [dict(task, **keys) if task["name"] == name else task for task in config["tasks"]]
    return config


def with_keys(config: dict, **keys) -> dict:
    config = copy.deepcopy(config)
    config.update(keys)
    return config


def run_folder(name: str) -> str:
    """The model folder another row (or run) trained, as a config names it: relative to the repository root."""
    return f"bench/runs/{name}"


# The folders the continual and distillation rows start from or learn from, and the command that makes each (a
# separate results folder, so the existing result files of those rows stay as they are).
CONTINUAL_START = "snips_recipe_crf"
TRAINED_FOLDERS = {
    CONTINUAL_START: "python run_mtl.py bench/configs/snips_minilm.json --output_dir bench/runs/snips_recipe_crf",
    **{name: f"python bench/quality.py --results-dir /tmp/teachers --row {name}"
       for name in ("conll_ner_only", "ag_topic_only", "snips_recipe_intent_only_seed1",
                    "snips_recipe_slots_only_seed1")},
}


def needs(*names) -> dict:
    """A row's `needs`: model folder -> the command that trains it."""
    return {run_folder(name): TRAINED_FOLDERS[name] for name in names}


def continual_recipe(snips_train=False) -> dict:
    """
    The trained SNIPS recipe model (intent + CRF slots, seed 1) given CoNLL-2003 NER with the CoNLL part of the
    CoNLL + AG News recipe (2 epochs, encoder lr 1e-4, head lr 1e-3, batch 32, bf16, dev per epoch, best checkpoint).
    SNIPS is an eval-only data set (its dev and test, no train split): its tasks are scored, start and end, and not
    trained on gold. `snips_train`: 10 % of SNIPS train as its train split instead (rehearsal), mixed proportionally.
    The SNIPS task blocks are the recipe's own, so both heads of the starting model are reused as they are.
    Selection is on CoNLL dev NER F1, the new task, in every row: `eval_score` would average in the SNIPS scores and
    make the choice of epoch a protection of its own, which blurs the comparison of the protections (and NER alone,
    the row the new task is compared with, is selected on its NER F1 too).
    """
    config, snips = only_tasks(conll_ag_recipe(), {"ner"}), snips_recipe()
    snips_spec = ({"path": "@snips_rehearsal", "format": "jointbert"} if snips_train else
                  dict(snips["datasets"]["snips"], splits={"validation": "dev", "test": "test"}))
    config["model_name_or_path"] = run_folder(CONTINUAL_START)
    config["datasets"] = {"snips": snips_spec, **config["datasets"]}
    config["tasks"] = snips["tasks"] + config["tasks"]
    config.update(metric_for_best_model="eval_ner_f1", seed=1)
    return config


def distillation(teachers: dict, alpha=0.5, temperature=2.0) -> dict:
    """The `distillation` config key: task -> teacher folder or "self"."""
    return {"teachers": teachers, "alpha": alpha, "temperature": temperature}


def conll_ag_joint(seed: int) -> dict:
    """The joint CoNLL-2003 + AG News setting dev chose (temperature T=2, topic loss weight 0.5)."""
    return with_keys(conll_ag_recipe(), task_sampling="temperature", sampling_temperature=2.0,
                     loss_weights={"topic": 0.5}, seed=seed)


def build_rows() -> dict:
    """Row name -> {setting, kind, describe, config() (hf_mtl rows) / task (stock rows)}, in the tables' order;
    `needs`: the model folders a row starts from or learns from."""
    rows = {}

    def add(name, setting, kind, describe, **spec):
        rows[name] = dict(name=name, setting=setting, kind=kind, describe=describe, **spec)

    for add_setting in (add_snips_rows, add_snips_lora_rows, add_snips_dev_rows, add_conll_ag_rows,
                        add_pairs_and_mixsnips_rows, add_embedding_rows, add_continual_rows, add_distillation_rows):
        add_setting(add)
    return rows


def add_snips_rows(add) -> None:
    """SNIPS on test: the recipe's joint, single-task and stock rows at 3 seeds, and recipe v1's."""
    for seed in (1, 2, 3):
        add(f"snips_recipe_seed{seed}", "snips", "mtl",
            f"hf_mtl joint intent + slots (recipe: 12 epochs, CRF slots), seed {seed}",
            config=lambda seed=seed: with_keys(snips_recipe(), seed=seed), seed=seed)
    # The single-task rows and the stock pair under the same recipe (the stock token classifier has no CRF).
    for prefix, kind, task, describe in (
            ("snips_recipe_intent_only", "mtl", "intent", "hf_mtl, intent task only (recipe)"),
            ("snips_recipe_slots_only", "mtl", "slots", "hf_mtl, slots task only (recipe: CRF slots)"),
            ("snips_recipe_hf_seqcls", "hf", "intent", "stock AutoModelForSequenceClassification + Trainer (intent, "
                                                       "recipe's 12 epochs)"),
            ("snips_recipe_hf_tokcls", "hf", "slots", "stock AutoModelForTokenClassification + Trainer (slots, "
                                                      "recipe's 12 epochs, softmax)")):
        for seed in (1, 2, 3):
            add(f"{prefix}_seed{seed}", "snips", kind, f"{describe}, seed {seed}",
                config=lambda seed=seed, task=task, kind=kind: with_keys(
                    only_tasks(snips_recipe(), {task}, keep_crf=kind == "mtl"), seed=seed), seed=seed)
    for seed in (1, 2, 3):
        add(f"snips_mtl_seed{seed}", "snips", "mtl", f"hf_mtl joint intent + slots (recipe v1), seed {seed}",
            config=lambda seed=seed: with_keys(snips_recipe_v1(), seed=seed), seed=seed)
    add("snips_intent_only", "snips", "mtl", "hf_mtl, intent task only (recipe v1), seed 1",
        config=lambda: with_keys(only_tasks(snips_recipe_v1(), {"intent"}), seed=1), seed=1)
    add("snips_slots_only", "snips", "mtl", "hf_mtl, slots task only (recipe v1), seed 1",
        config=lambda: with_keys(only_tasks(snips_recipe_v1(), {"slots"}), seed=1), seed=1)
    add("snips_hf_seqcls", "snips", "hf", "stock AutoModelForSequenceClassification + Trainer (intent), seed 1",
        config=lambda: with_keys(only_tasks(snips_recipe_v1(), {"intent"}), seed=1), seed=1)
    add("snips_hf_tokcls", "snips", "hf", "stock AutoModelForTokenClassification + Trainer (slots), seed 1",
        config=lambda: with_keys(only_tasks(snips_recipe_v1(), {"slots"}), seed=1), seed=1)
    add("snips_mtl_frozen", "snips", "mtl", "hf_mtl joint, encoder frozen (heads only), seed 1",
        config=lambda: with_keys(snips_recipe_v1(), seed=1, freeze_encoder=True), seed=1)


def add_snips_lora_rows(add) -> None:
    """LoRA vs full fine-tuning: run the three in one sitting, so step time and peak memory compare."""
    add("snips_full_ft", "snips_lora", "mtl", "hf_mtl joint, full fine-tuning (recipe v1), seed 1",
        config=lambda: with_keys(snips_recipe_v1(), seed=1), seed=1)
    for rank in (8, 16):
        add(f"snips_lora_r{rank}", "snips_lora", "mtl",
            f"hf_mtl joint, LoRA r={rank} alpha={2 * rank} on query/value, encoder lr 5e-4, seed 1",
            config=lambda rank=rank: with_keys(snips_recipe_v1(), seed=1, lora={"r": rank, "alpha": 2 * rank},
                                               encoder_learning_rate=5e-4), seed=1)


def add_snips_dev_rows(add) -> None:
    """The slot-filling recipe search from recipe v1: dev metrics only (the best epoch on dev), never test."""

    def snips_variant(epochs=6, crf=False, bio_constraints=True, **keys):
        config = with_keys(snips_recipe_v1(), seed=1, num_train_epochs=epochs, **keys)
        for task in config["tasks"]:
            if task["type"] == "token_classification" and crf:
                task.update(crf=True, bio_constraints=bio_constraints)
        return config

    for name, describe, options in (
        ("snips_dev_crf", "recipe + CRF slots (BIO constraints)", {"crf": True}),
        ("snips_dev_crf_nobio", "recipe + CRF slots without BIO constraints", {"crf": True, "bio_constraints": False}),
        ("snips_dev_e12", "12 epochs, softmax slots", {"epochs": 12}),
        ("snips_dev_e12_crf", "12 epochs + CRF slots (BIO constraints)", {"epochs": 12, "crf": True}),
        ("snips_dev_e12_crf_lr2e4", "12 epochs + CRF, encoder lr 2e-4", {"epochs": 12, "crf": True,
                                                                          "learning_rate": 2e-4}),
        ("snips_dev_e12_crf_slots2", "12 epochs + CRF, slot loss weight 2", {"epochs": 12, "crf": True,
                                                                             "loss_weights": {"slots": 2.0}}),
        ("snips_dev_e12_crf_lld09", "12 epochs + CRF, layer-wise lr decay 0.9", {"epochs": 12, "crf": True,
                                                                                 "layerwise_lr_decay": 0.9}),
        ("snips_dev_e12_crf_bs16", "12 epochs + CRF, batch 16", {"epochs": 12, "crf": True,
                                                                  "per_device_train_batch_size": 16}),
        ("snips_dev_e12_crf_hlr3e3", "12 epochs + CRF, head lr 3e-3", {"epochs": 12, "crf": True,
                                                                        "head_learning_rate": 3e-3}),
    ):
        add(name, "snips_dev", "mtl", f"dev search: {describe}, seed 1",
            config=lambda options=options: snips_variant(**options), seed=1)


def add_conll_ag_rows(add) -> None:
    """CoNLL-2003 NER + AG News topic: sampling and loss settings of the joint model, each task alone, frozen."""
    add("conll_ag_mtl_proportional", "conll_ag", "mtl", "hf_mtl NER + topic, task_sampling proportional, seed 1",
        config=lambda: with_keys(conll_ag_recipe(), task_sampling="proportional"), seed=1)
    add("conll_ag_mtl_temperature", "conll_ag", "mtl", "hf_mtl NER + topic, task_sampling temperature (T=2), seed 1",
        config=lambda: with_keys(conll_ag_recipe(), task_sampling="temperature", sampling_temperature=2.0), seed=1)
    add("conll_ag_mtl_uncertainty", "conll_ag", "mtl",
        "hf_mtl NER + topic, temperature (T=2), uncertainty loss weighting, seed 1",
        config=lambda: with_keys(conll_ag_recipe(), task_sampling="temperature", sampling_temperature=2.0,
                                 loss_weighting="uncertainty"), seed=1)
    add("conll_ag_mtl_per_row", "conll_ag", "mtl",
        "hf_mtl NER + topic, temperature (T=2), loss_reduction per_row, seed 1",
        config=lambda: with_keys(conll_ag_recipe(), task_sampling="temperature", sampling_temperature=2.0,
                                 loss_reduction="per_row"), seed=1)
    add("conll_ag_mtl_topic_w05", "conll_ag", "mtl",
        "hf_mtl NER + topic, temperature (T=2), topic loss weight 0.5, seed 1",
        config=lambda: with_keys(conll_ag_recipe(), task_sampling="temperature", sampling_temperature=2.0,
                                 loss_weights={"topic": 0.5}), seed=1)
    for seed in (2, 3):  # seed 1 is the row without a suffix; the joint setting dev chose
        add(f"conll_ag_mtl_topic_w05_seed{seed}", "conll_ag", "mtl",
            f"hf_mtl NER + topic, temperature (T=2), topic loss weight 0.5, seed {seed}",
            config=lambda seed=seed: with_keys(conll_ag_recipe(), task_sampling="temperature", sampling_temperature=2.0,
                                               loss_weights={"topic": 0.5}, seed=seed), seed=seed)
    add("conll_ner_only", "conll_ag", "mtl", "hf_mtl, CoNLL NER only, seed 1",
        config=lambda: only_tasks(conll_ag_recipe(), {"ner"}), seed=1)
    add("ag_topic_only", "conll_ag", "mtl", "hf_mtl, AG News topic only, seed 1",
        config=lambda: only_tasks(conll_ag_recipe(), {"topic"}), seed=1)
    for seed in (2, 3):  # seed 1 is the row without a suffix
        add(f"conll_ner_only_seed{seed}", "conll_ag", "mtl", f"hf_mtl, CoNLL NER only, seed {seed}",
            config=lambda seed=seed: with_keys(only_tasks(conll_ag_recipe(), {"ner"}), seed=seed), seed=seed)
        add(f"ag_topic_only_seed{seed}", "conll_ag", "mtl", f"hf_mtl, AG News topic only, seed {seed}",
            config=lambda seed=seed: with_keys(only_tasks(conll_ag_recipe(), {"topic"}), seed=seed), seed=seed)
    add("conll_ag_mtl_frozen", "conll_ag", "mtl", "hf_mtl NER + topic (proportional), encoder frozen, seed 1",
        config=lambda: with_keys(conll_ag_recipe(), task_sampling="proportional", freeze_encoder=True), seed=1)


def add_pairs_and_mixsnips_rows(add) -> None:
    """Sentence pairs (MRPC, STS) alone and mixed with SNIPS; MixSNIPS joint and each task alone."""
    add("mrpc_only", "pairs", "mtl", "hf_mtl, MRPC paraphrase pairs alone, seed 1",
        config=lambda: only_tasks(pairs_recipe(), {"paraphrase"}), seed=1)
    add("sts_only", "pairs", "mtl", "hf_mtl, STS 2015 similarity regression alone, seed 1",
        config=lambda: with_keys(only_tasks(pairs_recipe(), {"similarity"}), do_predict=False), seed=1)
    # The pair rows at a lower encoder learning rate and more epochs (a pretrained bi-encoder read as a cross-encoder
    # moves far from its start at 1e-4).
    for name, task, describe in (("mrpc_only_lr2e5", "paraphrase", "MRPC"), ("sts_only_lr2e5", "similarity", "STS")):
        add(name, "pairs", "mtl", f"hf_mtl, {describe} alone, encoder lr 2e-5, 10 epochs, seed 1",
            config=lambda task=task: with_keys(only_tasks(pairs_recipe(), {task}), learning_rate=2e-5,
                                               num_train_epochs=10, do_predict=task != "similarity"), seed=1)
    add("pairs_snips_mtl", "pairs", "mtl", "hf_mtl MRPC + STS + SNIPS intent + slots in one model (temperature T=2), seed 1",
        config=pairs_with_snips, seed=1)
    add("mixsnips_mtl", "mixsnips", "mtl", "hf_mtl MixSNIPS multi-label intents + slots (joint), seed 1",
        config=mixsnips_recipe, seed=1)
    add("mixsnips_intents_only", "mixsnips", "mtl", "hf_mtl, MixSNIPS multi-label intents alone, seed 1",
        config=lambda: only_tasks(mixsnips_recipe(), {"intents"}), seed=1)
    add("mixsnips_slots_only", "mixsnips", "mtl", "hf_mtl, MixSNIPS slots alone, seed 1",
        config=lambda: only_tasks(mixsnips_recipe(), {"slots"}), seed=1)


def add_embedding_rows(add) -> None:
    """The embedding trained as a bi-encoder on STS (3 seeds), and what the SNIPS heads cost it with and without it."""
    for seed in (1, 2, 3):
        add(f"sts_biencoder_seed{seed}", "embeddings", "mtl",
            f"hf_mtl STS 2015 `sentence_similarity` (bi-encoder, CoSENT, 4 epochs), seed {seed}",
            config=lambda seed=seed: with_keys(sts_biencoder_recipe(), seed=seed), seed=seed)
    # Two variants on the validation split (STS 2015 has no test split): the loss, and a higher learning rate.
    add("sts_biencoder_cosine_mse", "embeddings", "mtl", "the same with loss cosine_mse, seed 1",
        config=lambda: with_keys(with_task(sts_biencoder_recipe(), "similarity", loss="cosine_mse"), seed=1), seed=1)
    add("sts_biencoder_lr5e5", "embeddings", "mtl", "the same (CoSENT) at learning rate 5e-5, seed 1",
        config=lambda: with_keys(sts_biencoder_recipe(), seed=1, learning_rate=5e-5, head_learning_rate=5e-5), seed=1)
    add("snips_recipe_sts_biencoder", "embeddings", "mtl",
        "hf_mtl SNIPS recipe (intent + CRF slots) + STS bi-encoder in one model (temperature T=2), seed 1",
        config=lambda: with_keys(snips_with_sts_biencoder(), seed=1), seed=1)


def add_continual_rows(add) -> None:
    """The trained SNIPS model given CoNLL-2003 NER without SNIPS training data: what SNIPS loses under each
    protection (no protection, frozen heads, frozen lower layers, distillation from the starting model, rehearsal)."""
    start = needs(CONTINUAL_START)
    for name, describe, keys in (
        ("continual_none", "no protection", {}),
        ("continual_freeze_heads", "`freeze_heads` intent, slots (the encoder still moves)",
         {"freeze_heads": ["intent", "slots"]}),
        ("continual_frozen_layers", "`freeze_layers: 4` (embeddings + 4 of 6 layers frozen)", {"freeze_layers": 4}),
        ("continual_distill_self", 'distillation from `"self"` (intent, slots; T=2; no SNIPS gold, so the teacher '
                                   "alone trains them, on CoNLL sentences)",
         {"distillation": distillation({"intent": "self", "slots": "self"})}),
        # The teachers' share of the loss against the new task's: at weight 1 the old tasks hold and NER is held
        # back (both measured), so two lighter weights of the distilled tasks.
        *((f"continual_distill_self_w{str(weight).replace('.', '')}",
           f'distillation from `"self"`, loss weight {weight} on intent and slots',
           {"distillation": distillation({"intent": "self", "slots": "self"}),
            "loss_weights": {"intent": weight, "slots": weight}}) for weight in (0.1, 0.3)),
    ):
        add(name, "continual", "mtl", f"{describe}, seed 1",
            config=lambda keys=keys: with_keys(continual_recipe(), **keys), seed=1, needs=start)
    add("continual_rehearsal", "continual", "mtl",
        f"rehearsal: {SNIPS_REHEARSAL_SHARE * 100:.0f} % of SNIPS train (a seeded sample) mixed in proportionally, "
        "seed 1",
        config=lambda: continual_recipe(snips_train=True), seed=1, needs=start)
    add("continual_rehearsal_distill_w01", "continual", "mtl",
        f"rehearsal ({SNIPS_REHEARSAL_SHARE * 100:.0f} % of SNIPS train) and distillation from `\"self\"`, loss weight "
        "0.1 on intent and slots, seed 1",
        config=lambda: with_keys(continual_recipe(snips_train=True),
                                 distillation=distillation({"intent": "self", "slots": "self"}),
                                 loss_weights={"intent": 0.1, "slots": 0.1}), seed=1, needs=start)


def add_distillation_rows(add) -> None:
    """Single-task teachers distilled into the joint student (MT-DNN's answer to the multi-task gap), 3 seeds; the
    teachers are the seed-1 single-task models for every seed of the student."""
    for seed in (1, 2, 3):
        add("conll_ag_distill" + (f"_seed{seed}" if seed > 1 else ""), "distillation", "mtl",
            "hf_mtl NER + topic (temperature T=2, topic weight 0.5), teachers conll_ner_only + ag_topic_only "
            f"(alpha 0.5, T=2), seed {seed}",
            config=lambda seed=seed: with_keys(conll_ag_joint(seed), distillation=distillation(
                {"ner": run_folder("conll_ner_only"), "topic": run_folder("ag_topic_only")})),
            seed=seed, needs=needs("conll_ner_only", "ag_topic_only"))
    for seed in (1, 2, 3):
        add(f"snips_recipe_distill_seed{seed}", "distillation", "mtl",
            "hf_mtl joint intent + slots (recipe), teachers snips_recipe_intent_only_seed1 + "
            f"snips_recipe_slots_only_seed1 (alpha 0.5, T=2; needs their folders), seed {seed}",
            config=lambda seed=seed: with_keys(snips_recipe(), seed=seed, distillation=distillation(
                {"intent": run_folder("snips_recipe_intent_only_seed1"),
                 "slots": run_folder("snips_recipe_slots_only_seed1")})),
            seed=seed, needs=needs("snips_recipe_intent_only_seed1", "snips_recipe_slots_only_seed1"))


ROWS = build_rows()

# ---------------------------------------------------------------------------------------------------------------------
# data that has to be derived (AG News has only its test split here)


def ag_news_split(out_dir: Path) -> Path:
    """6,000 / 800 / 800 rows of ag_news/test.csv, by a permutation with seed 0; text = title + " " + description."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if all((out_dir / f"{split}.jsonl").is_file() for split in AG_SPLIT):
        return out_dir
    source = SHARED / "ag_news"
    classes = [line.strip() for line in (source / "classes.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(source / "test.csv", encoding="utf-8", newline="") as handle:
        records = [(int(label), title, body) for label, title, body in csv.reader(handle)]
    order = list(range(len(records)))
    random.Random(AG_SEED).shuffle(order)
    start = 0
    for split, size in AG_SPLIT.items():
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for index in order[start:start + size]:
                label, title, body = records[index]
                text = " ".join(f"{title} {body}".replace("\\", " ").split())
                handle.write(json.dumps({"text": text, "label": classes[label - 1]}) + "\n")
        start += size
    return out_dir


def snips_rehearsal_split(out_dir: Path) -> Path:
    """
    A JointBERT folder whose train/ holds 10 % of SNIPS train (a seeded sample, in the file's order) and whose dev/
    and test/ are SNIPS's own, copied: the old data a rehearsal run mixes back in, scored on the full dev and test.
    """
    files = ("seq.in", "seq.out", "label")
    if all((out_dir / split / name).is_file() for split in ("train", "dev", "test") for name in files):
        return out_dir
    source = SHARED / "snips"
    lines = {name: (source / "train" / name).read_text(encoding="utf-8").splitlines() for name in files}
    if len({len(column) for column in lines.values()}) != 1:
        raise SystemExit(f"{source / 'train'}: seq.in, seq.out and label differ in length")
    count = len(lines["label"])
    kept = sorted(random.Random(SNIPS_REHEARSAL_SEED).sample(range(count), round(count * SNIPS_REHEARSAL_SHARE)))
    staging = out_dir.parent / f".{out_dir.name}.partial"  # renamed into place when complete: never half a folder
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "train").mkdir(parents=True)
    for name in files:
        (staging / "train" / name).write_text("".join(lines[name][index] + "\n" for index in kept), encoding="utf-8")
    for split in ("dev", "test"):
        shutil.copytree(source / split, staging / split)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


DERIVED_DATA = {"@ag_news_split": lambda: ag_news_split(RUNS / "data" / "ag_news_split"),
                "@snips_rehearsal": lambda: snips_rehearsal_split(RUNS / "data" / "snips_rehearsal_10pct")}


def localize(config: dict) -> dict:
    """Replace the placeholder path of a derived data set (the AG News split, the SNIPS rehearsal share) by its real
    place, writing it on first use."""
    config = copy.deepcopy(config)
    for spec in config["datasets"].values():
        if spec.get("path") in DERIVED_DATA:
            spec["path"] = os.path.relpath(DERIVED_DATA[spec["path"]](), ROOT)
    return config


# ---------------------------------------------------------------------------------------------------------------------
# running


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sentence_scores(predictions_file: Path) -> dict:
    """Sentence accuracy (every task of the example right: label and all word tags) from test_predictions.jsonl."""
    total = right = 0
    with open(predictions_file, encoding="utf-8") as handle:
        for line in handle:
            example = json.loads(line)
            tasks = [value for key, value in example.items() if key not in ("words", "words_pair")]
            if not tasks:
                continue
            total += 1
            right += all(task["gold"] == task["pred"] for task in tasks)
    return {"sentence_accuracy": right / total if total else None, "sentences": total}


def positive_class_f1(predictions_file: Path, task: str, positive: str) -> dict:
    """`test_<task>_f1` of the positive class (how MRPC is scored) from test_predictions.jsonl; {} without the task."""
    pairs = []
    with open(predictions_file, encoding="utf-8") as handle:
        for line in handle:
            example = json.loads(line)
            if task in example:
                pairs.append((example[task]["gold"] == positive, example[task]["pred"] == positive))
    if not pairs:
        return {}
    true_positive = sum(gold and pred for gold, pred in pairs)
    predicted, actual = sum(pred for _, pred in pairs), sum(gold for gold, _ in pairs)
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {f"test_{task}_f1": f1}


def zero_shot_pearson(config: dict, rank=False) -> float:
    """Pearson correlation of the untrained encoder's cosine similarity (mean pooling, as sentence-transformers uses
    all-MiniLM-L6-v2) with the STS validation scores (Spearman with `rank`): what the fine-tuned head has to beat."""
    import numpy as np
    import torch
    from scipy import stats
    from transformers import AutoModel, AutoTokenizer

    sys.path.insert(0, str(ROOT))
    from hf_mtl.data import load_raw_dataset
    from hf_mtl.train import resolve_model_path

    name = next(task["dataset"] for task in config["tasks"] if task["name"] == "similarity")
    rows = load_raw_dataset(name, config["datasets"][name])["validation"]
    path = resolve_model_path(config["model_name_or_path"])
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(texts):
        vectors = []
        for start in range(0, len(texts), 64):
            batch = tokenizer(texts[start:start + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.no_grad():
                states = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors.append(torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(vectors).numpy()

    cosines = (embed(rows["sentence1"]) * embed(rows["sentence2"])).sum(axis=1)
    correlation = stats.spearmanr if rank else stats.pearsonr
    return float(correlation(cosines, np.asarray(rows["score"], dtype=np.float64))[0])


def embedding_sts_scores(model_dir) -> dict:
    """Pearson and Spearman of the cosine of a trained model's `embed()` with the STS 2015 validation scores: what its
    training did to the sentence embedding (the untouched encoder scores `zero_shot_similarity_pearson`)."""
    import numpy as np
    from scipy import stats

    sys.path.insert(0, str(ROOT))
    from hf_mtl import MultiTaskPipeline
    from hf_mtl.data import load_raw_dataset

    spec = localize(sts_biencoder_recipe())["datasets"]["sts"]
    rows = load_raw_dataset("sts", spec)["validation"]
    pipe = MultiTaskPipeline(str(model_dir), bf16=False)
    first, second = pipe.embed(rows["sentence1"], normalize=True), pipe.embed(rows["sentence2"], normalize=True)
    cosines, scores = (first * second).sum(axis=1), np.asarray(rows["score"], dtype=np.float64)
    return {"embedding_sts_pearson": float(stats.pearsonr(cosines, scores)[0]),
            "embedding_sts_spearman": float(stats.spearmanr(cosines, scores)[0])}


def write_embedding_scores(row: str, model_dir: Path, results_dir: Path) -> Path:
    """`embedding_sts_scores` of a model an earlier row trained, beside the untouched encoder's zero-shot Pearson."""
    metrics = {**embedding_sts_scores(model_dir),
               "zero_shot_similarity_pearson": zero_shot_pearson(localize(pairs_recipe())),
               "zero_shot_similarity_spearman": zero_shot_pearson(localize(pairs_recipe()), rank=True)}
    result = dict(row=row, model_dir=str(model_dir), metrics=metrics, environment=environment(), precision="fp32",
                  started_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  command=f"python bench/quality.py --embedding-of {row}={model_dir}")
    path = results_dir / f"embedding_{row}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(metrics, indent=2))
    return path


def row_config(row: dict, model=None) -> dict:
    config = localize(row["config"]())
    if model is not None:  # --model: another encoder (the CI smoke test uses a tiny random one)
        config["model_name_or_path"] = str(model)
    return config


def run_mtl_row(row: dict, run_dir: Path, extra_args=(), model=None) -> dict:
    config = row_config(row, model)
    config["output_dir"] = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir.parent / f"{run_dir.name}.config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    command = [PYTHON, "run_mtl.py", str(config_path.relative_to(ROOT) if config_path.is_relative_to(ROOT) else config_path),
               *extra_args]
    started = time.time()
    log_file = run_dir.parent / f"{run_dir.name}.log"
    with open(log_file, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this run's own peak RSS (KiB on Linux)
    wall = time.time() - started
    returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0:
        raise SystemExit(f"{row['name']}: run_mtl.py failed (exit {returncode}); see {log.name}")
    train = read_json(run_dir / "train_results.json")
    test = read_json(run_dir / "test_results.json") if (run_dir / "test_results.json").exists() else {}
    evaluation = read_json(run_dir / "eval_results.json")
    metrics = {key: value for key, value in {**evaluation, **test}.items()
               if key.startswith(("eval_", "test_")) and isinstance(value, (int, float))}
    if test:
        metrics.update(sentence_scores(run_dir / "test_predictions.jsonl"))
        metrics.update(positive_class_f1(run_dir / "test_predictions.jsonl", "paraphrase", "1"))
    if (run_dir / "start_results.json").exists():  # a run from a trained model: its tasks' scores before training
        metrics.update({f"start_{key}": value for key, value in read_json(run_dir / "start_results.json").items()
                        if key.startswith(("eval_", "test_")) and isinstance(value, (int, float))})
    if any(task["name"] == "similarity" for task in config["tasks"]):
        metrics["zero_shot_similarity_pearson"] = zero_shot_pearson(config)
    if row["setting"] == "embeddings":
        metrics.update(embedding_sts_scores(run_dir))
        metrics["zero_shot_similarity_spearman"] = zero_shot_pearson(localize(sts_biencoder_recipe()), rank=True)
    state = read_json(run_dir / "trainer_state.json")
    evaluations = [entry for entry in state.get("log_history", []) if "eval_score" in entry]
    best_dev = max(evaluations, key=lambda entry: entry["eval_score"]) if evaluations else {}
    parameters = re.search(r"total\s+trainable\s+([\d,]+)\s+frozen\s+([\d,]+)", log_file.read_text(encoding="utf-8"))
    return dict(
        metrics=metrics,
        best_dev={key: value for key, value in best_dev.items() if key.startswith("eval_") or key == "epoch"},
        trainable_parameters=int(parameters.group(1).replace(",", "")) if parameters else None,
        total_parameters=sum(int(group.replace(",", "")) for group in parameters.groups()) if parameters else None,
        peak_rss_mib=usage.ru_maxrss / 1024,
        seconds_per_step=train["train_runtime"] / state["global_step"] if state.get("global_step") else None,
        precision="bf16" if read_json(run_dir / "training_args.json").get("bf16") else "fp32",
        train_seconds=train.get("train_runtime"),
        train_samples_per_second=train.get("train_samples_per_second"),
        test_seconds=test.get("test_runtime"),
        test_samples_per_second=test.get("test_samples_per_second"),
        test_samples=test.get("test_samples"),
        wall_seconds=wall,
        best_checkpoint=state.get("best_model_checkpoint"),
        best_metric=state.get("best_metric"),
        epochs=state.get("epoch"),
        steps=state.get("global_step"),
        config=config,
        run_command=" ".join(command[1:]),
    )


def run_hf_row(row: dict, run_dir: Path, extra_args=(), model=None) -> dict:
    """A stock single-task model trained by `transformers.Trainer`, with the recipe's data and training arguments."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from hf_mtl.evaluation import decode_predictions
    from hf_mtl.reports import write_predictions_jsonl

    config, args, task, token_task, splits, tokenizer, model_path = stock_row_inputs(row, run_dir, extra_args, model)
    trainer = stock_trainer(args, task, token_task, splits, tokenizer, model_path)
    train_result = trainer.train()
    trainer.save_model()
    results = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        trainer.compute_metrics = stock_metrics(task, splits[split])
        prediction = trainer.predict(stock_model_rows(splits[split], task), metric_key_prefix=prefix)
        results[prefix] = prediction.metrics
        if split == "test":
            ids = np.argmax(prediction.predictions, axis=-1)
            decoded = decode_predictions([task], {task.name: ids}, splits["test"])
            write_predictions_jsonl(run_dir / "test_predictions.jsonl", decoded)
    metrics = {key: value for split in results.values() for key, value in split.items()
               if key.startswith(("eval_", "test_")) and isinstance(value, (int, float))}
    metrics.update(sentence_scores(run_dir / "test_predictions.jsonl"))
    return dict(
        metrics=metrics,
        precision="bf16" if args.bf16 else "fp32",
        train_seconds=train_result.metrics.get("train_runtime"),
        train_samples_per_second=train_result.metrics.get("train_samples_per_second"),
        test_seconds=results["test"].get("test_runtime"),
        test_samples_per_second=results["test"].get("test_samples_per_second"),
        test_samples=len(splits["test"]),
        best_checkpoint=trainer.state.best_model_checkpoint,
        best_metric=trainer.state.best_metric,
        epochs=trainer.state.epoch,
        steps=trainer.state.global_step,
        config=config,
        run_command="(in-process: stock Trainer, see bench/quality.py run_hf_row)",
    )


def stock_row_inputs(row: dict, run_dir: Path, extra_args, model) -> tuple:
    """
    (config, training arguments, task, whether it tags tokens, {split: rows}, tokenizer, model path) of a stock row:
    its config written beside the run folder and parsed as `run_mtl.py` parses it, its data encoded by hf_mtl's data
    layer (the label on the first subtoken, -100 on the rest, as `run_ner.py`).
    """
    from transformers import AutoTokenizer, set_seed

    from hf_mtl.data import prepare_datasets
    from hf_mtl.machine import fall_back_from_emulated_bf16
    from hf_mtl.train import parse_arguments, resolve_model_path

    config = row_config(row, model)
    config["output_dir"] = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir.parent / f"{run_dir.name}.config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model_args, data_args, args = parse_arguments([str(config_path), *extra_args])
    fall_back_from_emulated_bf16(args)  # the same precision as the hf_mtl rows on this machine
    (task_dict,) = data_args.tasks
    set_seed(args.seed)
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = prepare_datasets(
        data_args.datasets, data_args.tasks, tokenizer, max_seq_length=data_args.max_seq_length,
        label_all_tokens=data_args.label_all_tokens, seed=args.seed,
        validation_split_percentage=data_args.validation_split_percentage,
    )
    (task,) = data.tasks

    def limit(dataset, count):
        return dataset.select(range(min(count, len(dataset)))) if count is not None else dataset

    splits = {"train": limit(data.train, data_args.max_train_samples),
              "validation": limit(data.validation, data_args.max_eval_samples),
              "test": limit(data.test, data_args.max_eval_samples)}
    token_task = task_dict["type"] == "token_classification"
    return config, args, task, token_task, splits, tokenizer, model_path


def stock_trainer(args, task, token_task: bool, splits: dict, tokenizer, model_path: str):
    """Stock `AutoModelFor*` from the encoder checkpoint and a `Trainer` that evaluates the rows in order."""
    from torch.utils.data import SequentialSampler
    from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification,
                              DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer)

    labels = list(task.labels)
    encoder_config = AutoConfig.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    auto = AutoModelForTokenClassification if token_task else AutoModelForSequenceClassification
    model = auto.from_pretrained(model_path, config=encoder_config)
    collator = (DataCollatorForTokenClassification(tokenizer) if token_task
                else DataCollatorWithPadding(tokenizer))
    args.label_names = ["labels"]
    args.remove_unused_columns = True
    if args.metric_for_best_model in ("eval_score", "score"):
        args.metric_for_best_model = "eval_score"  # compute_metrics_from_decoded gives `score` for one task too

    class InOrderEvalTrainer(Trainer):
        # transformers 5 also length-groups (and shuffles) evaluation batches under `group_by_length`; the word-level
        # scoring pairs predictions with rows by position, so evaluation reads the rows in order. Training is
        # untouched: this is the one change to stock Trainer (hf_mtl's MultiTaskTrainer does the same).
        def _get_eval_sampler(self, eval_dataset):
            return SequentialSampler(eval_dataset)

    return InOrderEvalTrainer(model=model, args=args, train_dataset=stock_model_rows(splits["train"], task),
                              eval_dataset=stock_model_rows(splits["validation"], task), processing_class=tokenizer,
                              data_collator=collator, compute_metrics=stock_metrics(task, splits["validation"]))


def stock_model_rows(dataset, task):
    """A split as a stock model reads it: the task's labels as `labels`, the model inputs, nothing else."""
    dataset = dataset.rename_column(f"{task.name}_labels", "labels")
    keep = {"input_ids", "attention_mask", "token_type_ids", "labels"}
    return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


def stock_metrics(task, rows):
    """Trainer's `compute_metrics` for one split: argmax, decoded to words and scored as hf_mtl scores its tasks."""
    import numpy as np

    from hf_mtl.evaluation import compute_metrics_from_decoded, decode_predictions

    def compute(prediction):
        ids = np.argmax(prediction.predictions, axis=-1)
        decoded = decode_predictions([task], {task.name: ids}, rows)
        return compute_metrics_from_decoded([task], decoded)

    return compute


def run_row(name: str, results_dir: Path, runs_dir: Path, force=False, extra_args=(), smoke=False, model=None) -> Path:
    row = ROWS[name]
    result_file = results_dir / f"{name}.json"
    if result_file.exists() and not force:
        print(f"{name}: {result_file} exists, skipped (--force reruns it)")
        return result_file
    missing = {folder: command for folder, command in row.get("needs", {}).items()
               if not (ROOT / folder / "config.json").is_file()}
    if missing:
        raise SystemExit(f"{name} starts from or learns from trained models that are not there yet; make them first:\n"
                         + "\n".join(f"  {folder}: {command}" for folder, command in missing.items()))
    run_dir = runs_dir / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: no stale checkpoint or best model from an earlier attempt
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"{name}: {row['describe']} -> {run_dir}", flush=True)
    runner = run_mtl_row if row["kind"] == "mtl" else run_hf_row
    outcome = runner(row, run_dir, extra_args, model)
    command = (f"python bench/quality.py --smoke --smoke-row {name}" if smoke else f"python bench/quality.py --row {name}")
    if os.environ.get("OMP_NUM_THREADS") and os.environ.get("MKL_NUM_THREADS") == os.environ["OMP_NUM_THREADS"]:
        command += f" --threads {os.environ['OMP_NUM_THREADS']}"
    if model is not None:
        command += f" --model {model}"
    result = dict(row=name, setting=row["setting"], kind=row["kind"], describe=row["describe"], seed=row["seed"],
                  command=command, smoke=smoke, started_utc=started.isoformat(timespec="seconds"),
                  environment=environment(), **outcome)
    results_dir.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{name}: wrote {result_file}")
    print(json.dumps({k: v for k, v in result["metrics"].items() if k.startswith("test_")}, indent=2))
    return result_file


SMOKE_ARGS = ("--max_train_samples", "96", "--max_eval_samples", "32", "--max_steps", "24",
              "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--save_strategy", "no",
              "--load_best_model_at_end", "false", "--logging_steps", "8")


# ---------------------------------------------------------------------------------------------------------------------
# the table


def fmt(value, scale=100.0, digits=2):
    return "–" if value is None else f"{value * scale:.{digits}f}"


def mean_std(values, scale=100.0, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0], scale, digits)
    return f"{statistics.mean(values) * scale:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def secs(value, digits=0):
    return "–" if value is None else f"{value:.{digits}f}"


def default_command(name):
    return f"python bench/quality.py --threads 2 --row {name}"


SNIPS_COLUMNS = ("row", "model", "intent acc", "slot F1", "sentence acc", "train s", "test s (700)", "best epoch",
                 "run on", "command")
CONLL_COLUMNS = ("row", "model", "NER F1", "topic acc", "dev NER F1", "dev topic acc", "train s", "test s", "best epoch",
                 "run on", "command")
PAIRS_COLUMNS = ("row", "model", "MRPC F1", "MRPC acc", "STS Pearson (val)", "STS Spearman (val)",
                 "zero-shot cosine Pearson", "SNIPS intent acc", "SNIPS slot F1", "train s", "run on", "command")
MIXSNIPS_COLUMNS = ("row", "model", "intent exact-set acc", "intent micro-F1", "slot F1", "train s", "best epoch",
                    "run on", "command")
EMBEDDING_COLUMNS = ("row", "model", "STS Pearson (embed, val)", "STS Spearman (embed, val)", "zero-shot Pearson",
                     "zero-shot Spearman", "SNIPS intent acc", "SNIPS slot F1", "train s", "run on", "command")
SNIPS_DEV_COLUMNS = ("row", "model", "dev intent acc", "dev slot F1", "train s", "best epoch", "run on", "command")
LORA_COLUMNS = ("row", "model", "intent acc", "slot F1", "trainable parameters", "s/step", "peak RSS MiB", "train s",
                "run on", "command")
CONTINUAL_COLUMNS = ("row", "protection", "SNIPS intent acc (start → end, drift)", "SNIPS slot F1 (start → end, drift)",
                     "CoNLL NER F1", "vs NER alone", "train s", "s/step", "run on", "command")
DISTILLATION_COLUMNS = ("row", "model", "NER F1", "topic acc", "SNIPS intent acc", "SNIPS slot F1", "train s", "test s",
                        "best epoch", "run on", "command")


def seed_families() -> dict:
    """Rows that differ only by `seed`: their first row's name -> the rows' names, for every group of two or more
    (the 3-seed rows, whose mean ± std the table adds). Rows of another setting or kind never group (the stock
    intent classifier reads the same config as hf_mtl's intent-only row)."""
    groups = {}
    for name, row in ROWS.items():
        key = (row["setting"], row["kind"], json.dumps(dict(row["config"](), seed=None), sort_keys=True))
        groups.setdefault(key, []).append(name)
    return {names[0]: names for names in groups.values() if len(names) > 1}


def best_epoch(result) -> str:
    """The epoch of the checkpoint `load_best_model_at_end` kept (dev-selected), of the epochs trained."""
    match = re.search(r"checkpoint-(\d+)", result.get("best_checkpoint") or "")
    if not match or not result.get("steps") or not result.get("epochs"):
        return "–"
    per_epoch = result["steps"] / result["epochs"]
    return f"{round(int(match.group(1)) / per_epoch)} of {round(result['epochs'])}"


def machine_label(env: dict) -> str:
    bf16 = "native bf16" if env.get("native_bf16") else f"no native bf16 ({env.get('cpu_capability', '?')})"
    return (f"{cpu_name(env)}, {env['cpu_count']} CPU cores, {bf16}, torch threads {env['torch_threads']}, "
            f"{env['platform']}; Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}")


def machine_labels(results) -> dict:
    """Machine description -> number, in the order the rows first ran on it."""
    labels = {}
    for result in sorted(results, key=lambda result: result.get("started_utc", "")):
        labels.setdefault(machine_label(result["environment"]), len(labels) + 1)
    return labels


class QualityTable:
    """The generated tables of BENCHMARKS.md: one per setting, from the result files of `results_dir`."""

    def __init__(self, results_dir: Path):
        self.results = {name: read_json(results_dir / f"{name}.json") for name in ROWS
                        if (results_dir / f"{name}.json").exists()}
        self.measurements = [read_json(path) for path in sorted(results_dir.glob("embedding_*.json"))]
        self.machines = machine_labels([*self.results.values(), *self.measurements])
        self.families = seed_families()

    def run_on(self, result) -> str:
        return f"M{self.machines[machine_label(result['environment'])]} {result.get('precision', '?')}"

    def setting_table(self, setting, columns, measured) -> list:
        """The rows of one setting; `measured(result)` gives the cells between the description and the command."""
        table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for name, row in ROWS.items():
            if row["setting"] != setting:
                continue
            result = self.results.get(name)
            cells = [name, row["describe"]]
            cells += measured(result) if result else ["not run"] + [""] * (len(columns) - 4)
            cells.append(f"`{result['command'] if result else default_command(name)}`")
            table.append("| " + " | ".join(cells) + " |")
        return table

    def mean_rows(self, setting, metrics) -> list:
        """
        A mean ± std row under a setting's table for each of its seed families with two or more results; the cells
        follow the setting's columns (`metrics`: result -> value, then train s, test s, best epoch, run on, command).
        """
        table = []
        for first, names in self.families.items():
            done = [self.results[name] for name in names if name in self.results]
            if ROWS[first]["setting"] != setting or len(done) < 2:
                continue
            cells = [f"**{first.removesuffix('_seed1')} (mean ± std over seeds "
                     + ", ".join(str(result["seed"]) for result in done) + ")**",
                     ROWS[first]["describe"].rsplit(", seed", 1)[0]]
            cells += [mean_std([value(result) for result in done]) for value in metrics]
            cells += [mean_std([result["train_seconds"] for result in done], 1, 0),
                      mean_std([result["test_seconds"] for result in done], 1, 1), "",
                      ", ".join(self.run_on(result) for result in done), ""]
            table.append("| " + " | ".join(cells) + " |")
        return table


def metric(key):
    """result -> one of its metrics (None where the row did not measure it)."""
    return lambda result: result["metrics"].get(key) if result else None


def sentence_accuracy(result):
    """Every intent and slot of an utterance right: a joint row's number only (a single-task row's file has it)."""
    joint = "test_intent_accuracy" in result["metrics"] and "test_slots_f1" in result["metrics"]
    return result["metrics"].get("sentence_accuracy") if joint else None


def table_markdown(results_dir: Path) -> str:
    table = QualityTable(results_dir)
    lines = [f"- Machine M{index}: {label}" for label, index in table.machines.items()]
    lines += ["", f"Table generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
              "`python bench/quality.py --table`; each row's own date and machine are in its result JSON.", "",
              "Metrics on the **test** split (model selected on the validation split). Percentages. `train s` is "
              "Trainer's `train_runtime` (includes the per-epoch dev evaluations and checkpoint saves); `test s` "
              "is the `predict` call on the whole test split (metrics included). `run on` is the machine and the "
              "precision the row trained in: the recipes ask for bf16, which hf_mtl turns into float32 on a CPU "
              "without native bfloat16.", ""]
    for section in (snips_tables, conll_table, pairs_table, mixsnips_table, embeddings_table, continual_table,
                    distillation_table):
        lines += section(table)
    return "\n".join(lines)


def snips_tables(table: QualityTable) -> list:
    """SNIPS: the joint, single-task and stock rows with their seed means, LoRA, and the dev recipe search."""
    lines = ["### SNIPS (intent + slots), MiniLM-L6", ""]
    lines += table.setting_table("snips", SNIPS_COLUMNS, lambda result: [
        fmt(metric("test_intent_accuracy")(result)), fmt(metric("test_slots_f1")(result)),
        fmt(sentence_accuracy(result)), secs(result["train_seconds"]), secs(result["test_seconds"], 1),
        best_epoch(result), table.run_on(result)])
    lines += table.mean_rows("snips", (metric("test_intent_accuracy"), metric("test_slots_f1"), sentence_accuracy))
    lines += ["| *target (3 seeds; stretch slot F1 97.0 = BERT-base, Chen et al. 2019)* | | ≥ 98.6 | "
              "≥ 96.5 | | ≤ 1200 | | | | |", "",
              "### SNIPS: LoRA vs full fine-tuning, MiniLM-L6", "",
              "The three rows run in one sitting on one machine. `s/step` is Trainer's `train_runtime` over the "
              "steps (the per-epoch dev evaluations included, the same for each row); peak RSS is the training "
              "process's, from the operating system.", ""]
    lines += table.setting_table("snips_lora", LORA_COLUMNS, lambda result: [
        fmt(metric("test_intent_accuracy")(result)), fmt(metric("test_slots_f1")(result)),
        f"{result['trainable_parameters']:,} of {result['total_parameters']:,}"
        if result.get("trainable_parameters") is not None else "–",
        secs(result.get("seconds_per_step"), 3), secs(result.get("peak_rss_mib")), secs(result["train_seconds"]),
        table.run_on(result)])
    return lines + [""] + snips_dev_table(table)


def snips_dev_table(table: QualityTable) -> list:
    lines = ["### SNIPS recipe search on the validation split, MiniLM-L6", "",
             "Each row keeps the epoch with the best `eval_score` on SNIPS dev (700 utterances) and reports that "
             "epoch's dev scores; no test number decides anything here. The search starts from recipe v1 (6 "
             "epochs, softmax slots: row `snips_full_ft`); every row changes the settings it names from there. "
             "Test scores of every row are in its result JSON, read only after the recipe was chosen.", ""]
    dev_table = table.setting_table("snips_dev", SNIPS_DEV_COLUMNS, lambda result: [
        fmt(result.get("best_dev", {}).get("eval_intent_accuracy")),
        fmt(result.get("best_dev", {}).get("eval_slots_f1")), secs(result["train_seconds"]), best_epoch(result),
        table.run_on(result)])
    recipe = table.results.get("snips_full_ft")
    if recipe:  # the recipe itself, first after the header
        best = recipe.get("best_dev", {})
        dev_table.insert(2, f"| snips_full_ft | recipe v1 (6 epochs, softmax slots), seed 1 | "
                            f"{fmt(best.get('eval_intent_accuracy'))} | {fmt(best.get('eval_slots_f1'))} | "
                            f"{secs(recipe['train_seconds'])} | {best_epoch(recipe)} | {table.run_on(recipe)} | "
                            f"`{recipe['command']}` |")
    return lines + dev_table + [""]


def conll_table(table: QualityTable) -> list:
    lines = ["### CoNLL-2003 NER + AG News topic, MiniLM-L6", "",
             "AG News: only its 7,600-row test file exists here; `bench/quality.py` splits it by a permutation "
             f"with seed {AG_SEED} into 6,000 train / 800 validation / 800 test rows (text = title + description).", ""]
    keys = ("test_ner_f1", "test_topic_accuracy", "eval_ner_f1", "eval_topic_accuracy")
    lines += table.setting_table("conll_ag", CONLL_COLUMNS, lambda result: [
        *(fmt(metric(key)(result)) for key in keys),
        secs(result["train_seconds"]), secs(result["test_seconds"], 1), best_epoch(result), table.run_on(result)])
    lines += table.mean_rows("conll_ag", tuple(metric(key) for key in keys))
    return lines + [""]


def pairs_table(table: QualityTable) -> list:
    lines = ["### Sentence pairs: MRPC (paraphrase) and STS 2015 (similarity 0-5), MiniLM-L6", "",
             "Fixed epochs, no selection on the validation split (STS has no test split: its Pearson is on "
             "validation). MRPC F1 is the positive class's on the test split, as GLUE scores it. The zero-shot "
             "column is the untrained encoder's cosine similarity (mean pooling) on the same STS pairs.", ""]
    keys = ("test_paraphrase_f1", "test_paraphrase_accuracy", "eval_similarity_pearson", "eval_similarity_spearman",
            "zero_shot_similarity_pearson", "test_intent_accuracy", "test_slots_f1")
    lines += table.setting_table("pairs", PAIRS_COLUMNS, lambda result: [
        *(fmt(metric(key)(result)) for key in keys), secs(result["train_seconds"]), table.run_on(result)])
    return lines + ["| *target (MiniLM-L6)* | | ≥ 88 | | ≥ 80 | | below the head | | | | | |", ""]


def mixsnips_table(table: QualityTable) -> list:
    lines = ["### MixSNIPS (multi-label intents + slots), MiniLM-L6", "",
             "Train 2,198 utterances (5 % carved for validation), test 2,199: the published multi-intent models "
             "train on 45k, so their numbers are not comparable. Intent accuracy is exact-set.", ""]
    keys = ("test_intents_accuracy", "test_intents_micro_f1", "test_slots_f1")
    lines += table.setting_table("mixsnips", MIXSNIPS_COLUMNS, lambda result: [
        *(fmt(metric(key)(result)) for key in keys), secs(result["train_seconds"]), best_epoch(result),
        table.run_on(result)])
    return lines + [""]


def embeddings_table(table: QualityTable) -> list:
    lines = ["### The embedding itself: STS 2015 as a bi-encoder, and what SNIPS heads cost it, MiniLM-L6", "",
             "`embed()` cosine against the STS 2015 validation scores (750 pairs) after training; the zero-shot column "
             "is the untouched encoder's. Fixed epochs, no selection. SNIPS on test.", ""]
    keys = ("embedding_sts_pearson", "embedding_sts_spearman", "zero_shot_similarity_pearson",
            "zero_shot_similarity_spearman", "test_intent_accuracy", "test_slots_f1")
    lines += table.setting_table("embeddings", EMBEDDING_COLUMNS, lambda result: [
        *(fmt(metric(key)(result)) for key in keys), secs(result["train_seconds"]), table.run_on(result)])
    for result in table.measurements:
        cells = [f"embedding_{result['row']}", f"the model row `{result['row']}` trained (`{result['model_dir']}`), measured after",
                 *(fmt(result["metrics"].get(key)) for key in keys[:4]), "", "", "",
                 table.run_on(result), f"`{result['command']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    done = [table.results[name] for name in table.families.get("sts_biencoder_seed1", []) if name in table.results]
    if len(done) >= 2:
        cells = ["**sts_biencoder (mean ± std)**", f"seeds {', '.join(str(result['seed']) for result in done)}",
                 *(mean_std([metric(key)(result) for result in done]) for key in keys),
                 mean_std([result["train_seconds"] for result in done], 1, 0),
                 ", ".join(table.run_on(result) for result in done), ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["| *target* | | ≥ zero-shot + 3 | ≥ zero-shot + 3 | | | within 0.3 of the recipe | within 0.3 | | | |",
                    ""]


def family_values(table: QualityTable, first: str, key: str) -> list:
    """`key` of every result of the seed family whose first row is `first` (the row itself when it has no family)."""
    names = table.families.get(first, [first])
    return [table.results[name]["metrics"].get(key) for name in names if name in table.results]


def signed(value, scale=100.0, digits=2):
    return "–" if value is None else f"{value * scale:+.{digits}f}"


def drift_cell(result, key) -> str:
    """`start → end (drift)` of a test metric of a run that started from a trained model; the end alone without
    `start_results.json`."""
    start, end = result["metrics"].get(f"start_{key}"), result["metrics"].get(key)
    if start is None or end is None:
        return fmt(end)
    return f"{fmt(start)} → {fmt(end)} ({signed(end - start)})"


def continual_table(table: QualityTable) -> list:
    alone = [value for value in family_values(table, "conll_ner_only", "test_ner_f1") if value is not None]
    reference = statistics.mean(alone) if alone else None
    lines = ["### Continual: CoNLL-2003 NER added to the trained SNIPS model, MiniLM-L6", "",
             "Every row starts from `bench/runs/snips_recipe_crf` (the SNIPS recipe, seed 1: intent + CRF slots) and "
             "trains CoNLL-2003 NER with the CoNLL part of the CoNLL + AG News recipe (2 epochs). SNIPS is in the run "
             "as an eval-only data set (dev and test, no train split), except in the rehearsal row, which mixes "
             f"{SNIPS_REHEARSAL_SHARE * 100:.0f} % of SNIPS train back in. Start: the starting model's SNIPS test "
             "score (`start_results.json`, before training); end: the trained model's; drift = end - start. The epoch "
             "is selected on CoNLL dev NER F1 (the new task) in every row. `vs NER alone`: test NER F1 against the mean "
             f"of the `conll_ner_only` rows ({fmt(reference)}, {len(alone)} seed{'s' if len(alone) != 1 else ''}). "
             "`s/step`: `train_runtime` over the steps (dev evaluations included).", ""]
    lines += table.setting_table("continual", CONTINUAL_COLUMNS, lambda result: [
        drift_cell(result, "test_intent_accuracy"), drift_cell(result, "test_slots_f1"),
        fmt(metric("test_ner_f1")(result)),
        signed(metric("test_ner_f1")(result) - reference
               if metric("test_ner_f1")(result) is not None and reference is not None else None),
        secs(result["train_seconds"]), secs(result.get("seconds_per_step"), 3), table.run_on(result)])
    return lines + ["| *target (one protection)* | | drift ≥ -0.30 | drift ≥ -0.30 | | ≥ -1.00 | | | | |", ""]


def distillation_table(table: QualityTable) -> list:
    lines = ["### Distillation: single-task teachers in the joint model, MiniLM-L6", "",
             "The joint rows of the tables above with the single-task models as teachers (the seed-1 models, for "
             "every seed of the student; alpha 0.5, temperature 2): on a row with the task's gold label its loss is "
             "half the gold loss, half the KL to its teacher's softened distribution (x T²); on the other data set's "
             "rows the KL alone. The teachers' logits are computed once before training (evaluation mode, no "
             "gradients, bf16). Below the rows: the same joint settings without teachers and each task trained "
             "alone (means over the seeds with results).", ""]
    keys = ("test_ner_f1", "test_topic_accuracy", "test_intent_accuracy", "test_slots_f1")
    lines += table.setting_table("distillation", DISTILLATION_COLUMNS, lambda result: [
        *(fmt(metric(key)(result)) for key in keys), secs(result["train_seconds"]), secs(result["test_seconds"], 1),
        best_epoch(result), table.run_on(result)])
    lines += table.mean_rows("distillation", tuple(metric(key) for key in keys))
    for label, sources in (
            ("*without teachers: `conll_ag_mtl_topic_w05`, `snips_recipe`*",
             {"test_ner_f1": "conll_ag_mtl_topic_w05", "test_topic_accuracy": "conll_ag_mtl_topic_w05",
              "test_intent_accuracy": "snips_recipe_seed1", "test_slots_f1": "snips_recipe_seed1"}),
            ("*each task alone: `conll_ner_only`, `ag_topic_only`, `snips_recipe_intent_only`, "
             "`snips_recipe_slots_only`*",
             {"test_ner_f1": "conll_ner_only", "test_topic_accuracy": "ag_topic_only",
              "test_intent_accuracy": "snips_recipe_intent_only_seed1",
              "test_slots_f1": "snips_recipe_slots_only_seed1"})):
        cells = [label, "", *(mean_std(family_values(table, sources[key], key)) for key in keys)] + [""] * 5
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["| *target (3 seeds)* | | ≥ NER alone | ≥ topic alone | ≥ 98.6 | ≥ 96.5 | | | | | |", ""]


def write_table(results_dir: Path, markdown_file: Path):
    table = table_markdown(results_dir)
    replace_section(markdown_file, MARK_BEGIN, MARK_END, table)
    print(f"wrote the table into {markdown_file}")


# ---------------------------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--row", action="append", help="row(s) to run, in order (repeatable)")
    action.add_argument("--list", action="store_true", help="list the rows and their result files")
    action.add_argument("--table", action="store_true", help="rewrite the table in BENCHMARKS.md from the results")
    action.add_argument("--smoke", action="store_true", help="CI: a few dozen steps of --smoke-row on a tiny subset")
    action.add_argument("--embedding-of", metavar="ROW=MODEL_DIR",
                        help="the STS cosine of an already trained model's embed(), written as "
                             "results/embedding_ROW.json (ROW: the row that trained it, e.g. snips_recipe_seed1)")
    parser.add_argument("--smoke-row", default="snips_mtl_seed1", help="the row --smoke runs (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="rerun rows whose result file exists")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where result JSON go (default bench/results; --smoke: a temporary folder)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where model folders go (default bench/runs; --smoke: inside the results folder)")
    parser.add_argument("--model", default=None,
                        help="replace the rows' encoder (default: the recipe's MiniLM); e.g. a tiny one for --smoke")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/OpenMP threads (OMP_NUM_THREADS) for the runs; default: torch's (one per core)")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.threads is not None:  # before torch is imported here, and inherited by the run_mtl.py subprocesses
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    if args.list:
        results_dir = args.results_dir or RESULTS
        for name, row in ROWS.items():
            state = "done" if (results_dir / f"{name}.json").exists() else "to run"
            print(f"{name:<28} {state:<7} {row['describe']}")
        return 0
    if args.embedding_of:
        row, _, model_dir = args.embedding_of.partition("=")
        write_embedding_scores(row, Path(model_dir), args.results_dir or RESULTS)
        return
    if args.table:
        write_table(args.results_dir or RESULTS, args.markdown)
        return 0
    if not SHARED.is_dir():
        raise SystemExit(f"no data folder {SHARED}: the benchmark needs ../shared/data")
    if args.smoke:
        results_dir = args.results_dir or Path(tempfile.mkdtemp(prefix="hf_mtl_bench_smoke_"))
        runs_dir = args.runs_dir or results_dir / "runs"
        if args.smoke_row not in ROWS:
            raise SystemExit(f"unknown row {args.smoke_row!r}; --list shows them")
        run_row(args.smoke_row, results_dir, runs_dir, force=True, extra_args=SMOKE_ARGS, smoke=True, model=args.model)
        return 0
    if args.model is not None and args.results_dir is None:
        raise SystemExit("--model needs --results-dir: bench/results holds the recipe encoder's numbers only")
    unknown = [name for name in args.row if name not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; --list shows them")
    for name in args.row:
        run_row(name, args.results_dir or RESULTS, args.runs_dir or RUNS, force=args.force, model=args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
