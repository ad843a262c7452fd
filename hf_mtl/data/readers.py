"""Read one declared data set (JointBERT folders, CoNLL, JSON/CSV/Parquet files or a Hub id) into a `DatasetDict`.

Readers of pre-split text give the columns `tokens` and `tags` (JointBERT also `label`); every other format keeps its
own columns. Split names come out as `train`, `validation` and `test`.
"""

import glob
import json
import logging
from pathlib import Path

import datasets

from ..errors import ConfigError, DataError
from ..json_files import malformed_json
from .specs import check_dataset_spec
from .tags import tag_problem as bio_tag_problem

logger = logging.getLogger(__name__)

SPLIT_ALIASES = {
    "train": "train",
    "dev": "validation",
    "valid": "validation",
    "val": "validation",
    "validation": "validation",
    "test": "test",
}
BUILDER_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
# Options of the `csv` builder per delimited format: tab-separated files are read without quote handling (a quote
# is text, as in MRPC and STS), and a UTF-8 byte order mark never becomes part of the first column name.
DELIMITED = {"csv": {"encoding": "utf-8-sig"}, "tsv": {"sep": "\t", "quoting": 3, "encoding": "utf-8-sig"}}
JOINTBERT_FILES = ("seq.in", "seq.out", "label")
WORDS_TAGS = datasets.Features(
    {"tokens": datasets.List(datasets.Value("string")), "tags": datasets.List(datasets.Value("string"))}
)
WORDS_TAGS_LABEL = datasets.Features({**WORDS_TAGS, "label": datasets.Value("string")})


def load_raw_dataset(name: str, spec: dict, base_dir=".", tag_problem=bio_tag_problem) -> datasets.DatasetDict:
    """Read the data set `name` declared by `spec` (one entry of the run config's `datasets` block); CoNLL and
    JointBERT tags are checked by `tag_problem(tag) -> problem or None` as `file:line` (default: BIO tags)."""
    check_dataset_spec(name, spec)
    where = f"datasets.{name}"
    root = Path(base_dir)
    path = root / spec["path"] if spec.get("path") else None
    fmt = spec.get("format")
    file_map = spec.get("splits") if spec.get("splits") is not None else spec.get("data_files")

    if fmt == "hub":
        return read_hub(name, spec["path"], spec.get("name"))
    if fmt is None and path is not None and not path.exists() and file_map is None:
        return read_hub(name, spec["path"], spec.get("name"), missing_local=path)
    if path is not None and not path.exists():
        raise DataError(f"{where}.path: no such file or folder: {path}")

    files_where = f"{where}.{'splits' if spec.get('splits') is not None else 'data_files'}"
    if file_map is not None:
        files = normalize_file_map(file_map, files_where)
        folder = path if path is not None and path.is_dir() else root
        if fmt is None and all(
            (folder / entry / "seq.in").is_file() for entries in files.values() for entry in entries
        ):
            fmt = "jointbert"
    elif path.is_file():
        files, folder = {"train": [path.name]}, path.parent
    elif fmt in (None, "jointbert") and find_jointbert_splits(path):
        fmt, files, folder = "jointbert", find_jointbert_splits(path), path
    else:
        files, folder = find_split_files(path) if fmt != "jointbert" else {}, path
        if not files:
            raise DataError(
                f"{where}.path: no data files in {path} (expected train.*, dev.*/valid.*/validation.*, test.* "
                "or JointBERT folders train/, dev/, test/ holding seq.in, seq.out and label)"
            )

    if fmt == "jointbert":
        dataset = read_jointbert({split: folder / names[0] for split, names in files.items()}, tag_problem)
    else:
        paths = {split: resolve_files(folder, names, files_where) for split, names in files.items()}
        fmt = fmt or infer_format(paths, where)
        if fmt == "conll":
            dataset = read_conll(paths, tag_problem)
        else:
            dataset = read_with_builder(name, fmt, paths, spec.get("column_names"))
    logger.info("data set %r: %s", name, ", ".join(f"{split} {len(rows):,}" for split, rows in dataset.items()))
    return dataset


def normalize_file_map(file_map, where: str) -> dict[str, list[str]]:
    """`splits` / `data_files` as split -> list of names, with `dev`/`valid` renamed to `validation`."""
    if not isinstance(file_map, dict):
        file_map = {"train": file_map}
    files = {}
    for split, names in file_map.items():
        if split not in SPLIT_ALIASES:
            raise ConfigError(f"{where}.{split}: unknown split (use train, validation or dev, test)")
        files[SPLIT_ALIASES[split]] = [names] if isinstance(names, str) else list(names)
    return files


def resolve_files(folder: Path, names: list[str], where: str) -> list[Path]:
    paths = []
    for name in names:
        if glob.has_magic(name):
            matches = sorted(glob.glob(str(folder / name)))
            if not matches:
                raise DataError(f"{where}: no file matches {folder / name}")
            paths.extend(Path(match) for match in matches)
        elif not (folder / name).is_file():
            raise DataError(f"{where}: no such file: {folder / name}")
        else:
            paths.append(folder / name)
    return paths


def find_jointbert_splits(folder: Path) -> dict[str, list[str]]:
    found = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name in SPLIT_ALIASES and (child / "seq.in").is_file():
            found[SPLIT_ALIASES[child.name]] = [child.name]
    return found


def find_split_files(folder: Path) -> dict[str, list[str]]:
    found = {}
    for child in sorted(folder.iterdir()):
        split = SPLIT_ALIASES.get(child.name.split(".")[0].lower())
        if child.is_file() and split is not None:
            found.setdefault(split, []).append(child.name)
    return found


def infer_format(paths: dict[str, list[Path]], where: str) -> str:
    """Builder formats from the file extension; anything else (`.txt`, `.conll`, `.bio`, none) is CoNLL text."""
    formats = {BUILDER_FORMATS.get(path.suffix.lower(), "conll") for names in paths.values() for path in names}
    if len(formats) > 1:
        raise ConfigError(f"{where}.format: files of several formats ({', '.join(sorted(formats))}); set format")
    return formats.pop()


def iter_text_lines(path: Path):
    """Lines of a UTF-8 file without their line ends; a byte that is not UTF-8 is reported as `file:line`."""
    with open(path, "rb") as handle:
        yield from decode_text_lines(handle, path)


def decode_text_lines(handle, name):
    """Lines of a binary stream (a file, or standard input named `<stdin>`) decoded as UTF-8, as `iter_text_lines`."""
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            raise DataError(
                f"{name}:{number}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1})"
            ) from None


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def read_jointbert(folders: dict[str, Path], tag_problem=bio_tag_problem) -> datasets.DatasetDict:
    """JointBERT folders: line i of `seq.in` (words), `seq.out` (one tag per word) and `label` is one example."""
    splits = {}
    for split, folder in folders.items():
        if not folder.is_dir():
            raise DataError(f"no such folder: {folder}")
        paths = [folder / file_name for file_name in JOINTBERT_FILES]
        for path in paths:
            if not path.is_file():
                raise DataError(f"no such file: {path} (a JointBERT split needs {', '.join(JOINTBERT_FILES)})")
        words_lines, tags_lines, labels = (list(iter_text_lines(path)) for path in paths)
        if not len(words_lines) == len(tags_lines) == len(labels):
            counts = ", ".join(
                f"{path} has {len(lines)}" for path, lines in zip(paths, (words_lines, tags_lines, labels))
            )
            raise DataError(f"JointBERT split {split!r}: files differ in line count: {counts} lines")
        tokens, tags = [], []
        for number, (words_line, tags_line) in enumerate(zip(words_lines, tags_lines), start=1):
            words, word_tags = words_line.split(), tags_line.split()
            if len(words) != len(word_tags):
                raise DataError(
                    f"{paths[0]}:{number} has {len(words)} words but {paths[1]}:{number} has {len(word_tags)} tags"
                )
            for tag in word_tags:
                problem = tag_problem(tag)
                if problem:
                    raise DataError(f"{paths[1]}:{number}: {problem}")
            tokens.append(words)
            tags.append(word_tags)
        splits[split] = datasets.Dataset.from_dict(
            {"tokens": tokens, "tags": tags, "label": [label.strip() for label in labels]}, features=WORDS_TAGS_LABEL
        )
    return datasets.DatasetDict(splits)


def scan_conll_file(path: Path, tag_problem=bio_tag_problem) -> tuple[int, int]:
    """(columns per token line, sentences) of a CoNLL file, raising `file:line` for what the builder would hide.

    The `conll` builder pads a short line with "" and cuts a long one to `column_names`, and keeps no line numbers,
    so the column count, the tag shape and the encoding are checked here, with the builder's own line rules (a
    whitespace-only line, such as WNUT-17's single TAB, ends a sentence in both).
    """
    columns = sentences = 0
    in_sentence = False
    for number, line in enumerate(iter_text_lines(path), start=1):
        if not line.strip():
            in_sentence = False
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split()
        if columns == 0:
            if len(parts) < 2:
                raise DataError(
                    f"{path}:{number}: {plural(len(parts), 'column')}; "
                    "a CoNLL line needs a word and a tag (last column)"
                )
            columns, first_line = len(parts), number
        elif len(parts) != columns:
            raise DataError(f"{path}:{number}: {plural(len(parts), 'column')}, but line {first_line} has {columns}")
        problem = tag_problem(parts[-1])
        if problem:
            raise DataError(f"{path}:{number}: {problem}")
        sentences += not in_sentence
        in_sentence = True
    return columns, sentences


def read_conll(paths: dict[str, list[Path]], tag_problem=bio_tag_problem) -> datasets.DatasetDict:
    """CoNLL text via the packaged `conll` builder: word in the first column, tag in the last, the rest dropped."""
    splits = {}
    for split, files in paths.items():
        scanned = {path: scan_conll_file(path, tag_problem) for path in files}
        counts = {columns for columns, sentences in scanned.values() if sentences}
        if len(counts) > 1:
            raise DataError(
                f"split {split!r}: files differ in column count: "
                + ", ".join(f"{p} has {c}" for p, (c, _) in scanned.items())
            )
        if not counts:
            # The builder cannot write a split without one example.
            splits[split] = datasets.Dataset.from_dict({"tokens": [], "tags": []}, features=WORDS_TAGS)
            continue
        columns = counts.pop()
        middle = [f"column_{index}" for index in range(1, columns - 1)]
        data_files = [str(path) for path, (_, sentences) in scanned.items() if sentences]
        dataset = datasets.load_dataset(
            "conll", data_files={split: data_files}, column_names=["tokens", *middle, "tags"], split=split
        )
        splits[split] = dataset.remove_columns(middle)
    return datasets.DatasetDict(splits)


def read_with_builder(name: str, fmt: str, paths: dict[str, list[Path]], column_names=None) -> datasets.DatasetDict:
    """JSON (Lines), CSV, TSV or Parquet files through the datasets builder of that name (TSV: `csv`)."""
    if fmt != "parquet":
        for split, files in paths.items():
            # The builders fail on an empty split with a message that names no file.
            if not sum(1 for path in files for line in iter_text_lines(path) if line.strip()):
                raise DataError(f"data set {name!r}: split {split!r} is empty: {', '.join(map(str, files))}")
    kwargs = {"column_names": column_names} if column_names else {}
    kwargs.update(DELIMITED.get(fmt, {}))
    data_files = {split: [str(path) for path in files] for split, files in paths.items()}
    try:
        loaded = datasets.load_dataset("csv" if fmt in DELIMITED else fmt, data_files=data_files, **kwargs)
    except Exception as err:
        # pyarrow counts JSON rows from the start of a block and skips blank lines: name the file and line instead.
        located = next(filter(None, map(json_syntax_error, sum(paths.values(), [])))) if fmt == "json" else None
        cause = err.__cause__ or err
        raise DataError(located or f"data set {name!r}: cannot read {data_files} as {fmt}: {cause}") from err
    if fmt == "json":
        # Row i of a JSON Lines split is its i-th non-blank line: errors can then name file:line.
        loaded.source_files = {split: list(files) for split, files in paths.items()}
    return loaded


def json_syntax_error(path: Path) -> str | None:
    """`file:line:column: ...` of the first JSON error of a JSON document or a JSON Lines file; None if it has none."""
    lines = list(iter_text_lines(path))
    try:
        json.loads("\n".join(lines))
        return None  # one JSON document
    except json.JSONDecodeError as error:
        whole = malformed_json(path, error)
    if not next((line for line in lines if line.strip()), "").lstrip().startswith("{"):
        return whole
    for number, line in enumerate(lines, start=1):  # JSON Lines: one object a line
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            return f"{path}:{number}:{error.colno}: not valid JSON: {error.msg}"
        if not isinstance(value, dict):
            return f"{path}:{number}: a JSON Lines row must be an object, got {type(value).__name__} {line.strip()[:40]}"
    return None


def json_lines_location(files: list, index: int) -> str | None:
    """`file:line` (1-based) of row `index` of a JSON Lines split, or None when the files are not one object a line."""
    seen = 0
    for path in files:
        for number, line in enumerate(iter_text_lines(path), start=1):
            if line.strip():
                if not line.lstrip().startswith("{"):
                    return None
                if seen == index:
                    return f"{path}:{number}"
                seen += 1
    return None


def read_hub(name: str, hub_id: str, config_name, missing_local=None) -> datasets.DatasetDict:
    """A Hub data set; `dev`/`valid` splits become `validation`, other splits (e.g. `unsupervised`) are left out."""
    try:
        loaded = datasets.load_dataset(hub_id, config_name)
    except Exception as err:
        local = f"no file or folder at {missing_local}, and " if missing_local is not None else ""
        raise DataError(
            f"datasets.{name}.path: {local}loading {hub_id!r} from the Hugging Face Hub failed: {err}"
        ) from err
    return datasets.DatasetDict(
        {SPLIT_ALIASES[split]: rows for split, rows in loaded.items() if split in SPLIT_ALIASES}
    )
