#!/usr/bin/env python
"""Train / evaluate / predict a multi-task model from a JSON config.

    python run_mtl.py configs/demo.json
    accelerate launch run_mtl.py configs/full_ft.json --num_train_epochs 1 --output_dir /tmp/run

The JSON holds hf_mtl's keys (model, data, tasks, freezing, learning-rate groups) and any TrainingArguments key;
`--key value` after the file overrides it. The steps themselves are in `hf_mtl/train.py`, also run by `hf-mtl train`.
"""

from hf_mtl.train import cli_main

if __name__ == "__main__":
    cli_main()
