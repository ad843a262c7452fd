"""The `hf-mtl` command line: train, predict, embed, evaluate, inspect (`info`) and export multi-task models."""

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from . import __version__
from .data.readers import decode_text_lines, iter_text_lines
from .errors import ConfigError, DataError, HfMtlError, ModelError, print_error
from .atomic_files import StagedOutput
from .json_files import read_json_file
from .pipeline_mtl import DEFAULT_BATCH_SIZE, BackendNotInstalledError
from .precision import cpu_has_native_bf16

# Lines handed to the pipeline at once: large enough to sort by length, small enough for a lively progress bar.
BLOCK_SIZE = 1024
STDIO = "-"
INPUT_FORMATS = ("txt", "jsonl")
INPUT_HELP = (
    "--input is read as JSON Lines when it ends in .jsonl, else as text, one input a line (--input-format says "
    "otherwise); '-' reads standard input (text unless --input-format jsonl). --output - writes to standard output "
    "as results come (progress goes to standard error)."
)
RESUME_HELP = (
    "Predictions are written block by block (1,024 lines) to .<output>.hf_mtl-partial beside --output and moved into "
    "place when all are done; a run that is killed or interrupted (Ctrl-C) leaves that file, and the same command with "
    "--resume continues after its last complete line (refused when the input, the model or the options changed)."
)


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
        try:
            return args.run(args) or 0
        except KeyboardInterrupt:
            raise Interrupted("the command stopped before its end; nothing was written or replaced") from None
    except (HfMtlError, BackendNotInstalledError) as error:
        return print_error(error)  # exit status 130 for a training run stopped by SIGINT / SIGTERM
    except Interrupted as interruption:
        print(f"interrupted: {interruption}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of `--output -` stopped (`| head`): quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="hf-mtl", description="Multi-task transformer models for the HF ecosystem.")
    parser.add_argument("--version", action="version", version=f"hf-mtl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Listed for --help only: main() hands `train ...` to hf_mtl.train before parsing.
    commands.add_parser("train", help="train a model (`hf-mtl train --help` lists its options)", add_help=False)
    add_predict_parser(commands)
    add_embed_parser(commands)
    add_info_parser(commands)
    add_evaluate_parser(commands)
    add_export_parsers(commands)
    add_serve_parser(commands)
    return parser


def add_predict_parser(commands):
    predict = commands.add_parser(
        "predict",
        help="predict every task on raw text, one JSON line per input",
        description="Predict every task of the model on each input line; one JSON line per input, in input order.",
        epilog=INPUT_HELP + " " + RESUME_HELP,
    )
    add_model_arguments(predict)
    add_input_arguments(predict, "'text', 'text' + 'text_pair', or 'tokens'")
    predict.add_argument(
        "--output", required=True, help="output .jsonl, one pipeline result per input line ('-': standard output)"
    )
    predict.add_argument("--tags", action="store_true", help="also write the words and their tags")
    predict.add_argument(
        "--resume", action="store_true",
        help="continue the predictions an interrupted run of the same command left beside --output",
    )
    predict.set_defaults(run=run_predict)


def add_embed_parser(commands):
    embed = commands.add_parser(
        "embed",
        help="sentence embeddings of a text file, one row per input line, as .npy",
        description="Sentence embeddings, one float32 row per input line, pooled as the model was trained.",
        epilog=INPUT_HELP + " A .jsonl line gives its 'text', or its 'tokens' joined with spaces; a 'text_pair' is "
        "refused (an embedding is of one text: put each text on its own line).",
    )
    add_model_arguments(embed)
    add_input_arguments(embed, "'text' or 'tokens'")
    embed.add_argument(
        "--output", required=True, help="output .npy file, float32 [lines, hidden] ('-': standard output)"
    )
    embed.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=None, help="L2-normalise (default: the model's)"
    )
    embed.set_defaults(run=run_embed)


def add_info_parser(commands):
    info = commands.add_parser(
        "info", help="what a model folder holds: tasks, labels, encoder, files and recorded metrics",
        description="Summarise a trained or exported hf_mtl folder without loading its weights.",
    )
    info.add_argument("folder", help="a folder written by `hf-mtl train` (or `hf-mtl export-onnx`)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(run=run_info)


def add_evaluate_parser(commands):
    evaluate = commands.add_parser(
        "evaluate", help="score a model on a labelled file with a run's metrics and report",
        description="Score a trained model on a labelled file (any format a run's data set may have) with the "
        "metrics, report and predictions a run writes for its test split.",
        epilog="Columns: with --config, those of the run's tasks (and its max_seq_length, format, tag_scheme); "
        "without, a column named after each task holds its labels ('label' / 'tags' for a model's only sentence / "
        "token task) and the input is 'text' (+ 'text_pair') when present, else 'tokens'. Tasks whose labels the "
        "file lacks are left out. --output writes <name>_results.json, <name>_report.md and "
        "<name>_predictions.jsonl into a new folder (or one that holds only such files, which it keeps).",
    )
    evaluate.add_argument("--model", required=True, help="saved hf_mtl model folder or Hub id")
    evaluate.add_argument("--data", required=True,
                          help="labelled file (.jsonl, .json, .csv, .tsv, .parquet, CoNLL) or JointBERT folder")
    evaluate.add_argument("--config", default=None, help="the run config the model was trained with (columns, ...)")
    evaluate.add_argument("--task", action="append", default=None, help="score only this task (repeatable)")
    evaluate.add_argument("--name", default="test", help="prefix of the metric keys and files (default: test)")
    evaluate.add_argument("--max-seq-length", type=int, default=None,
                          help="truncate inputs to this many tokens (default: the run config's, else the model's "
                          "limit)")
    evaluate.add_argument("--batch-size", type=int, default=16, help="examples per forward pass (default: 16)")
    evaluate.add_argument("--output", default=None, help="folder for the results, report and predictions")
    evaluate.set_defaults(run=run_evaluate)


def add_export_parsers(commands):
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


def add_serve_parser(commands):
    serve = commands.add_parser(
        "serve", help="an HTTP server: every head per request, TEI-compatible routes, a web page at /",
        description="Serve a model over HTTP (`pip install 'hf_mtl[serve]'`): /predict_all (every head), "
        "/heads/<task>/predict and /tag, and Text Embeddings Inference's /embed, /predict, /similarity, /info, "
        "/health, /metrics; OpenAPI at /docs, a web page at /.",
    )
    add_model_arguments(serve)
    serve.set_defaults(backend=None, run=run_serve)
    for action in serve._actions:
        if action.dest == "backend":
            action.help = "torch, onnx or openvino (default: onnx for a folder of `hf-mtl export-onnx`, else torch)"
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    serve.add_argument("--max-batch-tokens", type=int, default=16384,
                       help="padded tokens per forward batch; requests are gathered up to it (default 16384)")
    serve.add_argument("--max-client-batch-size", type=int, default=32,
                       help="inputs one request may hold; more is answered 413 (default 32)")
    serve.add_argument("--max-concurrent-requests", type=int, default=512,
                       help="requests answered at once per worker; more are answered 429 (default 512)")
    serve.add_argument("--payload-limit", type=int, default=2_000_000,
                       help="bytes of a request body; more is answered 413 (default 2000000)")
    serve.add_argument("--default-head", default=None, help="sentence task of /predict (default: the first)")
    serve.add_argument("--graceful-timeout", type=int, default=None,
                       help="seconds to wait for requests in flight on SIGTERM (default: until they are answered)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


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
    if args.resume and output is None:
        raise ConfigError("--resume: needs --output to be a file (what went to standard output cannot be resumed)")
    if args.resume and args.input == STDIO:
        raise ConfigError("--resume: needs --input to be a file (standard input cannot be read again)")
    records = read_records(args.input, args.input_format, pairs=True)
    partial = PartialPredictions(output.target, prediction_fingerprint(args)) if output is not None else None
    if args.resume:
        partial.check(records)  # before the model loads: a refused resume fails at once
    pipe = load_pipeline(args)
    options = {"return_tags": args.tags, "bf16": args.bf16}
    if output is None:
        write_predictions(pipe, records, 0, stdout_bytes(), options)
        return
    with output, stop_on_sigterm():
        done = partial.start(records, resume=args.resume)  # checked again: now this process holds the lock
        try:
            with open(partial.path, "ab") as writer:
                write_predictions(pipe, records, done, writer, options)
        except KeyboardInterrupt:
            raise Interrupted(partial.interrupted_message(len(records))) from None
        except BaseException:
            partial.remove()  # an error, not an interruption: nothing half-written stays (a full disk included)
            raise
        partial.finish(output.path)


def write_predictions(pipe, records, start, writer, options):
    """Results of `records[start:]` as JSON lines on a binary `writer`, written and flushed block by block."""
    with progress(len(records), "predict", initial=start) as bar:
        for begin in range(start, len(records), BLOCK_SIZE):
            block = records[begin : begin + BLOCK_SIZE]
            results = predict_block(pipe, block, **options)
            writer.write("".join(json.dumps(result, ensure_ascii=False) + "\n" for result in results).encode("utf-8"))
            writer.flush()
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
    if output is None and sys.stdout.isatty():
        raise ConfigError("--output -: standard output is a terminal; redirect it to a file or a pipe (.npy is binary)")
    records = read_records(args.input, args.input_format, pairs=False)
    texts = [" ".join(record) if isinstance(record, list) else record for record in records]
    pipe = load_pipeline(args)
    embeddings = []
    with progress(len(texts), "embed") as bar:
        for begin in range(0, len(texts), BLOCK_SIZE):
            block = texts[begin : begin + BLOCK_SIZE]
            embeddings.append(pipe.embed(block, normalize=args.normalize, bf16=args.bf16))
            bar.update(len(block))
    if output is None:
        writer = stdout_bytes()
        np.save(writer, np.concatenate(embeddings))
        writer.flush()
        return
    with output, open(output.path, "wb") as writer:
        np.save(writer, np.concatenate(embeddings))


def run_info(args):
    from .folder_info import folder_info, render_info

    info = folder_info(args.folder)
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else render_info(info))


def run_evaluate(args):
    from .evaluate_model import evaluate_model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_seq_length is not None and args.max_seq_length < 8:
        raise ConfigError(f"--max-seq-length must be at least 8, got {args.max_seq_length}")
    evaluate_model(args.model, args.data, run_config=args.config, tasks=args.task, name=args.name,
                   max_seq_length=args.max_seq_length, batch_size=args.batch_size, output_dir=args.output)


def run_export_task(args):
    from .export import export_task

    export_task(args.model, args.task, args.output)


def run_export_sentence_transformers(args):
    from .export import export_sentence_transformers

    export_sentence_transformers(args.model, args.output, normalize=args.normalize)


def file_output(args) -> StagedOutput | None:
    """`--output`, checked before anything is read: written beside itself, renamed into place once complete; None
    for `-` (standard output, written as results come)."""
    if args.output == STDIO:
        return None
    inputs = [args.model] + ([] if args.input == STDIO else [args.input])
    output = StagedOutput(args.output, kind="file", inputs=inputs, where="--output")
    output.check()
    return output


def stdout_bytes():
    """Standard output as a binary stream, after what was written to it as text."""
    sys.stdout.flush()
    return sys.stdout.buffer


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a command; the message says what was kept and how to go on."""


@contextlib.contextmanager
def stop_on_sigterm():
    """SIGTERM (a job scheduler, `kill`) stops the command as Ctrl-C does, so it keeps what it has and says so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class PartialPredictions:
    """
    The results of an unfinished `predict`, beside its output: `.<name>.hf_mtl-partial` holds the results of the first
    inputs, in order (a prefix of the final output), and `.<name>.hf_mtl-partial.json` what they were computed from.
    A run that is killed or interrupted leaves both; `--resume` continues after the last complete line when the
    input, the model and the options are the same, and the finished file becomes the output.
    """

    def __init__(self, target: Path, fingerprint: dict):
        self.path = target.parent / f".{target.name}.hf_mtl-partial"
        self.record = target.parent / f".{target.name}.hf_mtl-partial.json"
        self.fingerprint = fingerprint

    def start(self, records: list, resume: bool) -> int:
        """How many results are already there (0 unless resuming); the partial files are ready for appending."""
        total = len(records)
        if resume and self.exists():
            done, complete = self.check(records)
            with open(self.path, "r+b") as handle:
                handle.truncate(complete)  # a line cut by the kill is predicted again
            print(f"--resume: {done:,} of {total:,} predictions already in {self.path}", file=sys.stderr)
            return done
        if resume:
            print(f"--resume: no partial predictions at {self.path}; starting from the first line", file=sys.stderr)
        elif self.path.exists() or self.record.exists():
            print(f"note: replacing the partial predictions of an earlier run at {self.path} (--resume would have "
                  "continued them)", file=sys.stderr)
        self.remove()
        self.record.write_text(json.dumps(self.fingerprint, indent=1), encoding="utf-8")
        self.path.write_bytes(b"")
        return 0

    def exists(self) -> bool:
        return self.path.is_file() and self.record.is_file()

    def check(self, records: list) -> tuple:
        """(results kept, bytes of their complete lines) when resuming is safe, else a `ConfigError` saying why."""
        if not self.exists():
            return 0, 0
        total = len(records)
        where = f"--resume: the partial predictions {self.path}"
        try:
            recorded = read_json_file(self.record, what="record of partial predictions")
        except ConfigError as error:
            raise ConfigError(f"{where}: cannot read {self.record.name} ({error}); run without --resume") from None
        changed = [key for key in sorted(set(recorded) | set(self.fingerprint))
                   if recorded.get(key) != self.fingerprint.get(key)]
        if changed:
            raise ConfigError(
                f"{where} were made with another {', '.join(changed)} (the input, model and options must be the "
                "same); run without --resume to start over"
            )
        with open(self.path, "rb") as handle:
            content = handle.read()
        complete = content[: content.rfind(b"\n") + 1]
        lines = complete.splitlines()
        if len(lines) > total:
            raise ConfigError(f"{where} hold {len(lines):,} results for {total:,} inputs; run without --resume")
        if lines and not self._is_result_of(lines[-1], records[len(lines) - 1]):
            raise ConfigError(
                f"{where}: line {len(lines)} is not the result of input {len(lines)}; run without --resume"
            )
        return len(lines), len(complete)

    @staticmethod
    def _is_result_of(line: bytes, record) -> bool:
        """A last check that the kept results line up with the inputs: the text of a text or pair input."""
        try:
            result = json.loads(line)
        except ValueError:
            return False
        if isinstance(record, list):
            return isinstance(result, dict)  # how words are joined back into a text is the pipeline's business
        text = record["text"] if isinstance(record, dict) else record
        return isinstance(result, dict) and result.get("text") == text

    def interrupted_message(self, total: int) -> str:
        with open(self.path, "rb") as handle:
            done = handle.read().count(b"\n")
        return (f"{done:,} of {total:,} predictions are kept in {self.path}; run the same command with --resume to "
                "continue")

    def finish(self, staging: Path):
        os.replace(self.path, staging)
        self.record.unlink(missing_ok=True)

    def remove(self):
        self.path.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)


def prediction_fingerprint(args) -> dict:
    """What a predict's results depend on: the input file, the model's files and the options."""
    return {
        "input": STDIO if args.input == STDIO else file_identity(args.input),
        "input-format": args.input_format,
        "model": model_identity(args.model),
        "tags": args.tags,
        # The precision that runs, not the option: by default it follows the CPU (a resume on another machine differs).
        "bf16": args.bf16 if args.bf16 is not None else (args.backend != "onnx" and cpu_has_native_bf16()),
        "backend": args.backend,
        "onnx-file": args.onnx_file,
    }


def file_identity(path) -> dict:
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(model: str):
    """A folder by its files' sizes and times (a retrained model differs); a Hub id by its name. Hidden files are
    left out: an output written into the folder keeps its partial files there."""
    if not os.path.isdir(model):
        return model
    files = sorted(entry for entry in os.listdir(model)
                   if not entry.startswith(".") and os.path.isfile(os.path.join(model, entry)))
    return {"path": os.path.realpath(model),
            "files": {name: [stat.st_size, stat.st_mtime_ns] for name in files
                      for stat in [os.stat(os.path.join(model, name))]}}


def run_serve(args):
    from .serving.server import run_serve as serve

    return serve(args)


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
        pipe.backend.uses_bf16(args.bf16)  # a precision the backend lacks fails here, before any output
    except (OSError, ValueError) as error:
        raise ModelError(f"--model {args.model}: {error}") from error
    return pipe


def add_input_arguments(parser, jsonl_fields: str):
    parser.add_argument(
        "--input", required=True,
        help=f"text file, one input a line, or .jsonl with {jsonl_fields} a line ('-': standard input)",
    )
    parser.add_argument(
        "--input-format", choices=INPUT_FORMATS, default=None,
        help="how to read --input (default: jsonl for a .jsonl file, else txt; txt for standard input)",
    )


def read_records(source: str, input_format: str | None, pairs: bool) -> list:
    """The inputs of `--input`: texts (str), pairs (`{"text", "text_pair"}` when `pairs`) and word lists (list)."""
    where = "--input -" if source == STDIO else f"--input {source}"
    lines = read_lines(source)
    input_format = input_format or ("jsonl" if source != STDIO and Path(source).suffix == ".jsonl" else "txt")
    if input_format == "txt":
        return lines
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            records.append(parse_record(line, f"{where}, line {number}", pairs))
    if not records:
        what = "standard input has" if source == STDIO else "the file has"
        raise DataError(f"{where}: {what} only blank lines, there is nothing to process")
    return records


def read_lines(source: str) -> list:
    """The lines of a text file (or of standard input for `-`) without their line breaks; no line is an error."""
    if source == STDIO:
        # Bytes, decoded here: the same UTF-8 check and line rules as a file, whatever the locale's encoding.
        lines = list(decode_text_lines(sys.stdin.buffer, "<stdin>"))
        if not lines:
            raise DataError("--input -: standard input is empty, there is nothing to process")
        return lines
    path = Path(source)
    if path.is_dir():
        raise DataError(f"--input {path}: is a folder, expected a text file")
    if not path.is_file():
        raise DataError(f"--input {path}: no such file")
    # Split on "\n" only (str.splitlines also breaks at U+2028 and friends); bad bytes are named as file:line.
    lines = list(iter_text_lines(path))
    if not lines:
        raise DataError(f"--input {path}: the file is empty, there is nothing to process")
    return lines


def parse_record(line: str, where: str, pairs: bool):
    """One JSON line as a text (str), a pair (dict) or a word list (list); strings checked to be encodable text."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error})") from error
    if isinstance(item, dict) and isinstance(item.get("text"), str) and "text_pair" in item:
        if not pairs:
            raise DataError(
                f'{where}: "text_pair": an embedding is of one text; put each text of the pair on its own line'
            )
        if not isinstance(item["text_pair"], str) or not item["text_pair"].strip():
            raise DataError(f'{where}: "text_pair" must be a non-empty string, got {item["text_pair"]!r}')
        check_text(item["text"], f'{where}: "text"')
        check_text(item["text_pair"], f'{where}: "text_pair"')
        return {"text": item["text"], "text_pair": item["text_pair"]}
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        check_text(item["text"], f'{where}: "text"')
        return item["text"]
    if isinstance(item, dict) and _is_word_list(item.get("tokens")):
        for index, word in enumerate(item["tokens"]):
            check_text(word, f'{where}: "tokens"[{index}]')
        return item["tokens"]
    expected = '"text" (a string, optionally with "text_pair")' if pairs else '"text" (a string)'
    raise DataError(f'{where}: expected an object with {expected} or "tokens" (a list of strings)')


def check_text(text: str, where: str):
    """JSON can escape half of a UTF-16 surrogate pair (`"\\ud800"`): such a string is not text a tokenizer takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DataError(
            f"{where} holds a lone surrogate {text[error.start]!r} at character {error.start + 1}; a \\uD800-\\uDFFF "
            "escape is only valid as half of a pair"
        ) from None


def _is_word_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(word, str) for word in value)


def progress(total: int, description: str, initial: int = 0):
    from tqdm import tqdm

    # tqdm writes to standard error: standard output stays for `--output -`.
    return tqdm(total=total, initial=initial, desc=description, unit="line", disable=None)


if __name__ == "__main__":
    sys.exit(main())
