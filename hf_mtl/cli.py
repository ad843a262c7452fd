"""The `hf-mtl` command line: train, predict, embed and export multi-task models."""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .data.readers import iter_text_lines
from .errors import ConfigError, DataError, HfMtlError, ModelError
from .outputs import StagedOutput
from .pipeline_mtl import DEFAULT_BATCH_SIZE, BackendNotInstalledError

# Lines handed to the pipeline at once: large enough to sort by length, small enough for a lively progress bar.
BLOCK_SIZE = 1024


class ArgumentParser(argparse.ArgumentParser):
    """Reports a bad command line as a `ConfigError`, so it prints as one `error: ...` line like every user error."""

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        if argv[:1] == ["train"]:
            # Everything after `train`, options included, belongs to hf_mtl.train's own parser.
            return run_train(argv[1:]) or 0
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return args.run(args) or 0
    except (HfMtlError, BackendNotInstalledError) as error:
        if os.environ.get("HF_MTL_DEBUG") == "1":
            raise
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="hf-mtl", description="Multi-task transformer models for the HF ecosystem.")
    parser.add_argument("--version", action="version", version=f"hf-mtl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Listed for --help only: main() hands `train ...` to hf_mtl.train before parsing.
    commands.add_parser("train", help="train a model (`hf-mtl train --help` lists its options)", add_help=False)

    predict = commands.add_parser("predict", help="predict every task on raw text, one JSON line per input")
    add_model_arguments(predict)
    predict.add_argument(
        "--input", required=True, help=".txt (one text per line) or .jsonl ('text', 'text' + 'text_pair', or 'tokens')"
    )
    predict.add_argument("--output", required=True, help="output .jsonl, one pipeline result per input line")
    predict.add_argument("--tags", action="store_true", help="also write the words and their tags")
    predict.set_defaults(run=run_predict)

    embed = commands.add_parser("embed", help="sentence embeddings of a .txt file (one text per line) as .npy")
    add_model_arguments(embed)
    embed.add_argument("--input", required=True, help=".txt file, one text per line")
    embed.add_argument("--output", required=True, help="output .npy file, float32 [lines, hidden]")
    embed.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=None, help="L2-normalise (default: the model's)"
    )
    embed.set_defaults(run=run_embed)

    export_task = commands.add_parser(
        "export-task", help="one task as a stock AutoModelForTokenClassification / AutoModelForSequenceClassification"
    )
    export_task.add_argument("--model", required=True, help="saved hf_mtl model folder or Hub id")
    export_task.add_argument("--task", required=True, help="name of the task")
    export_task.add_argument("--output", required=True, help="folder to write")
    export_task.set_defaults(run=run_export_task)

    export_st = commands.add_parser("export-sentence-transformers", help="the encoder as a SentenceTransformer folder")
    export_st.add_argument("--model", required=True, help="saved hf_mtl model folder or Hub id")
    export_st.add_argument("--output", required=True, help="folder to write")
    export_st.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=None, help="add Normalize (default: the model's)"
    )
    export_st.set_defaults(run=run_export_sentence_transformers)

    export_onnx = commands.add_parser("export-onnx", help="every task as one ONNX graph for ONNX Runtime / OpenVINO")
    export_onnx.add_argument("--model", required=True, help="saved hf_mtl model folder or Hub id")
    export_onnx.add_argument("--output", required=True, help="folder to write (model.onnx, tokenizer, config.json)")
    export_onnx.add_argument("--quantize", choices=["int8"], default=None, help="also write model_int8.onnx")
    export_onnx.set_defaults(run=run_export_onnx)
    return parser


def add_model_arguments(parser):
    parser.add_argument("--model", required=True, help="saved hf_mtl model folder or Hub id")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"inputs per forward pass (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast (default: on for CPUs with native bf16, off elsewhere)",
    )
    parser.add_argument(
        "--backend",
        choices=["torch", "onnx", "openvino"],
        default="torch",
        help="torch (default), or onnx / openvino on a folder written by `hf-mtl export-onnx`",
    )
    parser.add_argument("--onnx-file", default=None, help="graph of an exported folder (default model.onnx)")
    parser.add_argument("--compile", action="store_true", help="torch backend: run the model through torch.compile")


def run_train(argv):
    from .train import main as train_main

    return train_main(argv)


def run_predict(args):
    output = file_output(args)
    records = read_predict_input(Path(args.input))
    pipe = load_pipeline(args)
    with output, open(output.path, "w", encoding="utf-8") as writer, progress(len(records), "predict") as bar:
        for begin in range(0, len(records), BLOCK_SIZE):
            block = records[begin : begin + BLOCK_SIZE]
            for result in predict_block(pipe, block, return_tags=args.tags, bf16=args.bf16):
                writer.write(json.dumps(result, ensure_ascii=False) + "\n")
            bar.update(len(block))


def predict_block(pipe, records, **kwargs):
    """Results in input order for records that are texts (str), pairs (dict) or pre-split words (list), in one call
    per kind of record."""
    results = [None] * len(records)
    for split in (False, True):
        indices = [index for index, record in enumerate(records) if isinstance(record, list) == split]
        if indices:
            outputs = pipe([records[index] for index in indices], is_split_into_words=split, **kwargs)
            for index, output in zip(indices, outputs):
                results[index] = output
    return results


def run_embed(args):
    output = file_output(args)
    texts = read_lines(Path(args.input))
    pipe = load_pipeline(args)
    embeddings = []
    with progress(len(texts), "embed") as bar:
        for begin in range(0, len(texts), BLOCK_SIZE):
            block = texts[begin : begin + BLOCK_SIZE]
            embeddings.append(pipe.embed(block, normalize=args.normalize, bf16=args.bf16))
            bar.update(len(block))
    with output, open(output.path, "wb") as writer:
        np.save(writer, np.concatenate(embeddings))


def run_export_task(args):
    from .export import export_task

    export_task(args.model, args.task, args.output)


def run_export_sentence_transformers(args):
    from .export import export_sentence_transformers

    export_sentence_transformers(args.model, args.output, normalize=args.normalize)


def file_output(args) -> StagedOutput:
    """`--output`, checked before anything is read: written beside itself, renamed into place once complete."""
    output = StagedOutput(args.output, kind="file", inputs=[args.input, args.model], where="--output")
    output.check()
    return output


def run_export_onnx(args):
    from .onnx import export_onnx

    export_onnx(args.model, args.output, quantize=args.quantize)


def load_pipeline(args):
    from .loading import load_model_folder
    from .pipeline_mtl import MultiTaskPipeline

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.backend == "torch":
        model, tokenizer = load_model_folder(args.model)
    else:
        model, tokenizer = args.model, None
        if not os.path.isdir(args.model):
            raise ModelError(f"--model {args.model}: no such folder (the onnx and openvino backends read exported folders)")
    try:
        pipe = MultiTaskPipeline(
            model,
            tokenizer=tokenizer,
            batch_size=args.batch_size,
            backend=args.backend,
            file_name=args.onnx_file,
            compile=args.compile,
        )
        pipe._use_bf16(args.bf16)  # a precision the backend lacks fails here, before any output
    except (OSError, ValueError) as error:
        raise ModelError(f"--model {args.model}: {error}") from error
    return pipe


def read_lines(path: Path) -> list:
    """The lines of a text file without their line breaks; an empty file is an error."""
    if path.is_dir():
        raise DataError(f"--input {path}: is a folder, expected a text file")
    if not path.is_file():
        raise DataError(f"--input {path}: no such file")
    # Split on "\n" only (str.splitlines also breaks at U+2028 and friends); bad bytes are named as file:line.
    lines = list(iter_text_lines(path))
    if not lines:
        raise DataError(f"--input {path}: the file is empty, there is nothing to process")
    return lines


def read_predict_input(path: Path) -> list:
    """Texts (str) from a .txt file, or from each .jsonl line a text, a pair (`text` + `text_pair`, as a dict) or a
    word list (`tokens`)."""
    if path.suffix != ".jsonl":
        return read_lines(path)
    records = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"--input {path}, line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not valid JSON ({error})") from error
        if isinstance(item, dict) and isinstance(item.get("text"), str) and "text_pair" in item:
            if not isinstance(item["text_pair"], str) or not item["text_pair"].strip():
                raise DataError(f'{where}: "text_pair" must be a non-empty string, got {item["text_pair"]!r}')
            records.append({"text": item["text"], "text_pair": item["text_pair"]})
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            records.append(item["text"])
        elif isinstance(item, dict) and _is_word_list(item.get("tokens")):
            records.append(item["tokens"])
        else:
            raise DataError(
                f'{where}: expected an object with "text" (a string, optionally with "text_pair") or "tokens" (a '
                "list of strings)"
            )
    if not records:
        raise DataError(f"--input {path}: the file has only blank lines, there is nothing to process")
    return records


def _is_word_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(word, str) for word in value)


def progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="line", disable=None)


if __name__ == "__main__":
    sys.exit(main())
