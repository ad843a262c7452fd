"""Prediction on raw text with an hf_mtl multi-task model: every head at once, entity spans, sentence embeddings.

Self-contained on purpose (torch, numpy and transformers only; ONNX Runtime and OpenVINO are imported only when asked
for): `add_pipeline_to_folder` copies this file next to the weights and declares it in `config.json`, so
`transformers.pipeline(model=..., trust_remote_code=True)` builds this same class where hf_mtl is not installed.
"""

import importlib
import json
import os
import re
import shutil
import threading
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, Pipeline
from transformers.utils import cached_file, logging

from .configuration_mtl import MultiTaskConfig
from .task_kinds import kind_of, task_kind
from .crf import crf_for_task
from .precision import cpu_has_native_bf16
from .tokenizer_checks import check_tokenizer, max_input_length

logger = logging.get_logger(__name__)

PIPELINE_TASK = "multi-task"
# The fastest measured on native-bf16 CPUs, and as fast as smaller batches on AVX2 (BENCHMARKS.md, speed).
DEFAULT_BATCH_SIZE = 64
# What `hf-mtl export-onnx` writes and the exported backends read: the graph files and its output names.
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
# The CRF parameters of CRF token tasks beside the graph (`<task>.transitions`, ...): decoded outside it by Viterbi.
CRF_FILE = "crf.safetensors"
LOGITS_OUTPUT_SUFFIX = "_logits"
EMBEDDING_OUTPUT = "sentence_embedding"
# A fast tokenizer keeps each call's truncation settings in its Rust backend, where a call from another thread can
# change them between setting and encoding: every pipeline sets and encodes under this one lock (tokenizers may be
# shared between pipelines). Encoding is a small part of a call, so threads still overlap in the forward passes.
_TOKENIZER_LOCK = threading.Lock()
# The CJK ideographs, as BERT's BasicTokenizer (`_is_chinese_char`) splits them: Chinese is written without spaces
# and labelled one character per word, so each is a word of its own. Kana, Hangul and Thai are not in these blocks.
_CJK_IDEOGRAPH = re.compile(
    "[\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f]"
)


def split_words(text: str) -> list:
    """
    Character spans `(start, end)` of the words of `text`: whitespace-separated chunks with their leading and trailing
    punctuation split off one character at a time, as in CoNLL-style training data (`"(Paris),"` -> `( Paris ) ,`),
    while inner punctuation stays (`U.S`, `Apple's`, `e-mail`). Each CJK ideograph is a word of its own (the code
    points BERT's tokenizer splits: `"张三在北京"` -> `张 三 在 北 京`), with any combining marks that follow it; the
    text between ideographs is split as above (`"在Apple的店"` -> `在 Apple 的 店`). Scripts written without spaces
    and without such a rule (Thai, Japanese kana) stay whole chunks: pass their words with `is_split_into_words=True`.
    """
    spans = []
    for match in re.finditer(r"\S+", text):
        start, end = match.span()
        chunk = match.group()
        if chunk.isascii() or not _CJK_IDEOGRAPH.search(chunk):
            if chunk.isalnum():  # letters and digits only: no punctuation to peel (the common case, fast)
                spans.append((start, end))
            else:
                _add_word(text, start, end, spans)
            continue
        for ideograph in _CJK_IDEOGRAPH.finditer(text, start, end):
            _add_word(text, start, ideograph.start(), spans)
            start = ideograph.end()
            while start < end and unicodedata.category(text[start])[0] == "M":
                start += 1
            spans.append((ideograph.start(), start))
        _add_word(text, start, end, spans)
    return spans


def _add_word(text: str, start: int, end: int, spans: list) -> None:
    """Append the spans of `text[start:end]` (no whitespace in it): the word with its edge punctuation peeled off."""
    if start >= end:
        return
    if text[start:end].isalnum():  # letters and digits only: no punctuation to peel (the common case, fast)
        spans.append((start, end))
        return
    trailing = []
    while start < end and _is_punctuation(text[start]):
        spans.append((start, start + 1))
        start += 1
    while end > start and _is_punctuation(text[end - 1]):
        trailing.append((end - 1, end))
        end -= 1
    if start < end:
        spans.append((start, end))
    spans.extend(reversed(trailing))


def _is_punctuation(char: str) -> bool:
    # Punctuation and symbols only: combining accents ("M*") must stay with their letter.
    return unicodedata.category(char)[0] in "PS"


def entities_from_tags(text: str, word_spans: list, tags: list, scores: list, tag_format: str = "BIO") -> list:
    """
    Group word-level BIO or BIOES tags into entities `{"entity", "text", "start", "end", "score"}` with
    `text[start:end] == entity["text"]`. `I-X` (or `E-X`) after a different type starts a new entity (as seqeval
    does), `E-X` ends its entity and `S-X` is one, a tag with no prefix continues an adjacent entity of its type, and
    the score is the mean of the words' scores. Plain tags (`tag_format` `"plain"`, e.g. POS): one entry per word
    with a tag, the tag as `entity` (as transformers' token-classification pipeline gives without aggregation).
    """
    if tag_format == "plain":
        return [
            {"entity": tag, "text": text[start:end], "start": start, "end": end, "score": score}
            for (start, end), tag, score in zip(word_spans, tags, scores)
            if tag is not None
        ]
    entities, current = [], None
    for span, tag, score in zip(word_spans, tags, scores):
        if tag == "O":
            current = None
            continue
        prefix, entity_type = (tag[0], tag[2:]) if tag[:2] in ("B-", "I-", "E-", "S-") else ("", tag)
        if prefix in ("B", "S") or current is None or current["entity"] != entity_type:
            current = {"entity": entity_type, "start": span[0], "scores": []}
            entities.append(current)
        current["end"] = span[1]
        current["scores"].append(score)
        if prefix in ("E", "S"):
            current = None
    return [
        {
            "entity": entity["entity"],
            "text": text[entity["start"] : entity["end"]],
            "start": entity["start"],
            "end": entity["end"],
            "score": sum(entity["scores"]) / len(entity["scores"]),
        }
        for entity in entities
    ]


def first_token_of_words(word_spans: list, offsets: list, special_tokens_mask: list, char_shift: int = 0) -> list:
    """For each word, the index of the first token overlapping it (None where the tokenizer produced no token)."""
    first_tokens = [None] * len(word_spans)
    word = 0
    for token, ((start, end), special) in enumerate(zip(offsets, special_tokens_mask)):
        if special or start == end:
            continue
        start, end = start + char_shift, end + char_shift
        while word < len(word_spans) and word_spans[word][1] <= start:
            word += 1
        # A token may cover several words (no tokenizer boundary between them): each word reads that token.
        overlapped = word
        while overlapped < len(word_spans) and word_spans[overlapped][0] < end:
            if first_tokens[overlapped] is None:
                first_tokens[overlapped] = token
            overlapped += 1
    return first_tokens


def word_windows(token_counts: list, budget: int) -> list:
    """
    Overlapping windows `(start, end, owned_start, owned_end)` of whole words, each at most `budget` tokens (a single
    longer word gets a window of its own), together covering every word. Consecutive windows share about a quarter of
    the budget; each word of an overlap is owned by the window in which it sits further from the edge.
    """
    overlap = budget // 4
    windows, start = [], 0
    while True:
        end, used = start, 0
        while end < len(token_counts) and (end == start or used + token_counts[end] <= budget):
            used += token_counts[end]
            end += 1
        windows.append([start, end])
        if end >= len(token_counts):
            break
        next_start, shared = end, 0
        while next_start - 1 > start and shared + token_counts[next_start - 1] <= overlap:
            next_start -= 1
            shared += token_counts[next_start]
        start = next_start
    owned_start = 0
    for window, following in zip(windows, windows[1:] + [None]):
        owned_end = len(token_counts) if following is None else (following[0] + window[1]) // 2
        window.extend([owned_start, owned_end])
        owned_start = owned_end
    return [tuple(window) for window in windows]


class BackendNotInstalledError(ImportError):
    """The package of an optional backend is missing; the message names the pip extra that installs it."""


def import_backend(module: str, extra: str):
    """Import an optional backend's package, or raise a `BackendNotInstalledError` naming `hf_mtl[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendNotInstalledError(
            f"{module} is not installed: `pip install 'hf_mtl[{extra}]'` (or `pip install {module}`) to use it"
        ) from error


# Every backend answers the same two questions from the padded input tensors, so preprocessing and decoding are one
# code path: `logits` (task name -> float32 CPU tensor, `[batch, labels]` or `[batch, seq, labels]`) and `embeddings`
# (`[batch, hidden]` float32, the model's pooling, not normalised). `uses_bf16` resolves the `bf16` call parameter.


class TorchBackend:
    """A torch `MultiTaskModel`, eager or through `torch.compile`, with bfloat16 autocast where asked."""

    def __init__(self, model, compile=False):
        self.model = model
        self._compiled = None
        if compile:
            # `compile=True` or a dict of `torch.compile` options; inductor caches its kernels in
            # TORCHINDUCTOR_CACHE_DIR, so a later process with the same cache skips most of the warm-up.
            options = {} if compile is True else dict(compile)
            self._compiled = {"logits": torch.compile(model, **options), "embeddings": torch.compile(model.embed, **options)}

    def uses_bf16(self, bf16):
        if bf16 is not None:
            return bf16
        if self.model.dtype != torch.float32 or self.model.device.type != "cpu":
            return False
        # MiniLM on 2 cores: 2.4-2.6x faster with native bf16 dot products; without them bf16 is only emulated.
        return cpu_has_native_bf16()

    def logits(self, model_inputs, bf16):
        forward = self._compiled["logits"] if self._compiled else self.model
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=bf16):
            return {name: logits.float() for name, logits in forward(**model_inputs).logits.items()}

    def embeddings(self, model_inputs, bf16):
        embed = self._compiled["embeddings"] if self._compiled else self.model.embed
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=bf16):
            return embed(**model_inputs, normalize=False).float()

    def decode_crf(self, name, logits, word_start_mask):
        return self.model.heads[name].crf.decode_word_starts(logits, word_start_mask)


class ExportedMultiTaskModel:
    """
    A folder written by `hf-mtl export-onnx` (the graph, the tokenizer and the hf_mtl `config.json`) in the place of the
    torch model: no weights of its own, only the graph whose outputs are `<task>_logits` per task and
    `sentence_embedding`. Subclasses run the graph (ONNX Runtime, OpenVINO); CPU only.
    """

    device = torch.device("cpu")
    dtype = torch.float32
    input_modalities = ("text",)

    def __init__(self, folder, file_name=None):
        self.name_or_path = str(folder)
        self.file_name = file_name or ONNX_FILE
        self.config = MultiTaskConfig.from_pretrained(self.name_or_path)
        self.path = cached_file(self.name_or_path, self.file_name)
        self.task_names = [task["name"] for task in self.config.tasks if not kind_of(task).encodes_pair_separately]
        self.crfs = self._load_crfs()

    def _load_crfs(self) -> dict:
        """CRF token task -> its `LinearChainCRF`, the transitions read from `crf.safetensors` beside the graph."""
        crf_tasks = [task for task in self.config.tasks if task.get("crf")]
        if not crf_tasks:
            return {}
        from safetensors.torch import load_file

        state = load_file(cached_file(self.name_or_path, CRF_FILE))
        crfs = {}
        for task in crf_tasks:
            crf = crf_for_task(task)
            crf.load_state_dict({key: state[f"{task['name']}.{key}"] for key in crf.state_dict()})
            crfs[task["name"]] = crf.eval()
        return crfs

    def decode_crf(self, name, logits, word_start_mask):
        return self.crfs[name].decode_word_starts(logits, word_start_mask)

    def to(self, device):
        if torch.device(device).type != "cpu":
            raise ValueError(f"{type(self).__name__} runs on the CPU only, not on {device}")
        return self

    def can_generate(self):
        return False

    def logits(self, model_inputs, bf16):
        outputs = self._run(model_inputs, [name + LOGITS_OUTPUT_SUFFIX for name in self.task_names], bf16)
        return dict(zip(self.task_names, outputs))

    def embeddings(self, model_inputs, bf16):
        return self._run(model_inputs, [EMBEDDING_OUTPUT], bf16)[0]

    def _feeds(self, model_inputs):
        """The graph's inputs as int64 numpy arrays; the tokenizer's other outputs are not graph inputs."""
        missing = [name for name in self.input_names if name not in model_inputs]
        if missing:
            raise ValueError(f"{self.path} takes inputs {missing} that the tokenizer did not produce")
        return {name: model_inputs[name].numpy() for name in self.input_names}


class OnnxRuntimeModel(ExportedMultiTaskModel):
    """The exported graph in an ONNX Runtime session (`backend="onnx"`): float32 `model.onnx` or `model_int8.onnx`."""

    def __init__(self, folder, file_name=None, session_options=None, providers=None):
        super().__init__(folder, file_name)
        onnxruntime = import_backend("onnxruntime", "onnx")
        if session_options is None:
            session_options = onnxruntime.SessionOptions()
            # The torch path's thread count (torch's default or `torch.set_num_threads`), so both compare alike.
            session_options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(
            self.path, session_options, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_names = [node.name for node in self.session.get_inputs()]

    def uses_bf16(self, bf16):
        if bf16:
            raise ValueError(
                "bf16: the onnx backend runs the exported graph as it was written (model.onnx in float32, "
                "model_int8.onnx in int8); use the torch or openvino backend for bf16"
            )
        return False

    def _run(self, model_inputs, output_names, bf16):
        return [torch.from_numpy(output) for output in self.session.run(output_names, self._feeds(model_inputs))]


class OpenVINOModel(ExportedMultiTaskModel):
    """
    The exported graph compiled by OpenVINO for the CPU (`backend="openvino"`). Its CPU plugin computes in bfloat16 where
    the CPU has native bf16 and in float32 elsewhere, like the torch path's default; `bf16=True/False` forces either.
    """

    def __init__(self, folder, file_name=None):
        super().__init__(folder, file_name)
        openvino = import_backend("openvino", "openvino")
        self._core = openvino.Core()
        self._graph = self._core.read_model(self.path)
        self.input_names = [port.get_any_name() for port in self._graph.inputs]
        self._compiled = {}
        self._compile_lock = threading.Lock()
        # A compiled model runs in parallel, but one infer request holds one inference's tensors: one per thread.
        self._requests = threading.local()

    def uses_bf16(self, bf16):
        return cpu_has_native_bf16() if bf16 is None else bf16

    def _run(self, model_inputs, output_names, bf16):
        precision = "bf16" if bf16 else "f32"
        compiled = self._compiled_model(precision)
        request = getattr(self._requests, precision, None)
        if request is None:
            request = compiled.create_infer_request()
            setattr(self._requests, precision, request)
        results = request.infer(self._feeds(model_inputs))
        return [torch.from_numpy(np.asarray(results[compiled.output(name)], dtype=np.float32)) for name in output_names]

    def _compiled_model(self, precision):
        """The graph compiled for `precision`: on first use, once, even when threads ask at the same time."""
        with self._compile_lock:
            if precision not in self._compiled:
                properties = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
                self._compiled[precision] = self._core.compile_model(self._graph, "CPU", properties)
            return self._compiled[precision]


EXPORTED_BACKENDS = {"onnx": OnnxRuntimeModel, "openvino": OpenVINOModel}
BACKENDS = ("torch", *EXPORTED_BACKENDS)


@dataclass
class _Chunk:
    """One model input: a whole input or one window of a long one, and the words it predicts."""

    features: dict
    words: list  # word indices whose tags this chunk predicts
    token_positions: list  # the first token of each of those words
    logits: dict = field(default_factory=dict)  # sentence task -> logits (averaged over windows in postprocess)
    word_predictions: dict = field(default_factory=dict)  # token task -> (best label ids, their probabilities)


@dataclass
class _Example:
    text: str
    word_spans: list
    chunks: list
    text_pair: str | None = None


class MultiTaskPipeline(Pipeline):
    """
    Runs every head of a [`MultiTaskModel`] on raw text.

    ```python
    >>> pipe = MultiTaskPipeline("path/to/model")  # or a Hub id
    >>> pipe("Apple opened a store in Paris")
    {"text": "Apple opened a store in Paris", "topic": {"label": "business", "score": 0.93},
     "ner": [{"entity": "ORG", "text": "Apple", "start": 0, "end": 5, "score": 0.98}, ...]}
    >>> pipe({"text": "A man plays a guitar.", "text_pair": "Someone makes music."})  # a sentence pair
    {"text": ..., "text_pair": ..., "similarity": {"score": 3.9}, "paraphrase": {"label": "1", "score": 0.9}}
    ```

    Per kind of task: a single-label task gives `{"label", "score"}`, a multi-label task a list of
    `{"label", "score"}` (the labels over its threshold, best first), a regression `{"score": number}` in the data's
    units, a token task its entity spans `{"entity", "text", "start", "end", "score"}`.

    The same class is what `transformers.pipeline(model=folder, trust_remote_code=True)` builds when the folder was
    prepared with [`add_pipeline_to_folder`].

    Token tasks are decoded per word (see [`split_words`]) from each word's first sub-token, so entity offsets never
    cut a word. Words are whitespace-separated with edge punctuation split off, and each CJK ideograph is a word of its
    own (Chinese is labelled per character); for other scripts written without spaces (Thai, Japanese kana) pass the
    words of a segmenter with `is_split_into_words=True`. Inputs are batched longest first with per-batch padding;
    inputs longer than the model's maximum are read in overlapping word windows, so every word gets a tag, and sentence
    heads average their logits over windows. A sentence pair is read as the tokenizer's pair input, truncated
    (`longest_first`) to the maximum instead, with one warning per call counting the truncated pairs; token tasks then
    tag the words of `text`, and its words past the cut are tagged `O`.

    Threads: one pipeline may be shared by threads calling it, `embed` and `similarity` at once (a threaded server):
    each call equals the same call made alone. The tokenizer is called under a process-wide lock (a fast tokenizer
    keeps its truncation settings between calls), the forward passes run in parallel, and the openvino backend gives
    each thread its own infer request. Calling the same tokenizer object from your own threads while the pipeline
    runs is not covered. Tested for the eager torch, onnx and openvino backends; with `compile=True` it rests on
    torch.compile's own thread safety.

    Call parameters (also accepted at construction):
        batch_size (`int`, defaults to 64): inputs per forward pass.
        is_split_into_words (`bool`, defaults to `False`): each input is a list of words (joined with spaces for
            `text`) instead of a string.
        return_tags (`bool`, defaults to `False`): also return `"words"` and `"tags"` (token task -> one tag per word).
        max_length (`int`, *optional*): tokens per window, at most (and by default) the tokenizer's and encoder's limit.
        bf16 (`bool`, *optional*): bfloat16 autocast. Default: on for a float32 model on a CPU with native bf16
            instructions (AVX512-BF16 or AMX), where it is about 2.5x faster on MiniLM with embedding cosines above
            0.9999 to float32; off everywhere else (`HF_MTL_NATIVE_BF16=0` / `=1` overrides the CPU check). The
            openvino backend follows the same rule; the onnx backend has no bf16 (`bf16=True` is an error).

    Precision: in float32 an input's logits and embedding do not depend on the batch it was computed in (to ~1e-6).
    bf16 keeps 8 bits of mantissa, and the kernels it runs depend on the batch's shape, so there an embedding moves
    with its batch's padding length: a cosine similarity by up to ~1e-3, against float32 by up to ~2e-3; labels and
    spans are unchanged wherever the model is not on a knife edge. `similarity(a, b)` is always the dot products of
    `embed(a, normalize=True)` and `embed(b, normalize=True)` in the same precision.

    Construction only:
        backend (`str`, defaults to `"torch"`): `"torch"` runs the `MultiTaskModel`; `"onnx"` (ONNX Runtime) and
            `"openvino"` run a folder written by `hf-mtl export-onnx` (`pip install 'hf_mtl[onnx]'` /
            `'hf_mtl[openvino]'`). Every backend feeds the same preprocessing and decoding.
        file_name (`str`, *optional*): the graph in an exported folder, `"model.onnx"` (default) or
            `"model_int8.onnx"` (written by `--quantize int8`).
        compile (`bool` or `dict`, defaults to `False`): run the torch model through `torch.compile` (a dict: its
            options). The first calls of each input shape family compile (seconds to minutes); set
            `TORCHINDUCTOR_CACHE_DIR` to a lasting folder so that later processes reuse the compiled kernels.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(
        self,
        model,
        tokenizer=None,
        dtype=None,
        trust_remote_code=None,
        revision=None,
        token=None,
        backend="torch",
        file_name=None,
        compile=False,
        **kwargs,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {list(BACKENDS)}")
        if isinstance(model, (str, os.PathLike)):
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(model, revision=revision, token=token)
            if backend != "torch":
                model = EXPORTED_BACKENDS[backend](model, file_name=file_name)
            else:
                load_kwargs = {"revision": revision, "token": token}
                if dtype is not None:
                    load_kwargs["dtype"] = dtype
                model = AutoModel.from_pretrained(model, trust_remote_code=trust_remote_code, **load_kwargs)
        elif backend != "torch" and not isinstance(model, EXPORTED_BACKENDS[backend]):
            raise ValueError(
                f"backend={backend!r} runs a folder written by `hf-mtl export-onnx` (or a "
                f"{EXPORTED_BACKENDS[backend].__name__}), not a {type(model).__name__}"
            )
        if isinstance(model, ExportedMultiTaskModel):
            if compile:
                raise ValueError("compile: torch.compile applies to the torch backend only")
            kwargs.setdefault("device", "cpu")
            self.backend = model
        else:
            if file_name is not None:
                raise ValueError("file_name: names the graph of an exported folder; the torch backend has none")
            self.backend = TorchBackend(model, compile=compile)
        tasks = getattr(model.config, "tasks", None)
        if not tasks:
            raise ValueError(f"MultiTaskPipeline needs a model with `config.tasks`, got {type(model).__name__}")
        if tokenizer is None:
            raise ValueError("MultiTaskPipeline needs a fast tokenizer (character offsets give the entity spans)")
        try:
            check_tokenizer(tokenizer, model.config.encoder)
        except ValueError as error:
            raise ValueError(f"{getattr(model, 'name_or_path', None) or 'MultiTaskPipeline'}: {error}") from None
        super().__init__(model=model, tokenizer=tokenizer, **kwargs)
        self.tasks = [{**task, "kind": task_kind(task)} for task in tasks]

    def get_inference_context(self):
        # inference_mode skips autograd's version counters: about 6 % faster than Pipeline's default no_grad on MiniLM
        # (2 CPU cores); every output leaves as a numpy array, so no inference tensor reaches autograd.
        return torch.inference_mode

    def _sanitize_parameters(self, is_split_into_words=None, max_length=None, bf16=None, return_tags=None):
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if is_split_into_words is not None:
            preprocess_params["is_split_into_words"] = is_split_into_words
        if max_length is not None:
            preprocess_params["max_length"] = max_length
        if bf16 is not None:
            forward_params["bf16"] = bf16
        if return_tags is not None:
            postprocess_params["return_tags"] = return_tags
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, inputs, batch_size=None, **kwargs):
        """
        Predict every task for one input (returns a dict) or a list of inputs (returns a list of dicts, in order). An
        input is a string, a `{"text": ..., "text_pair": ...}` dict (a sentence pair), or with
        `is_split_into_words=True` a list of words.
        """
        preprocess_params, forward_params, postprocess_params = self._call_parameters(kwargs)
        if not isinstance(inputs, (str, dict, list, tuple)):
            inputs = list(inputs)
        if len(inputs) == 0 and not isinstance(inputs, (str, dict)):
            return []
        words_given = preprocess_params.get("is_split_into_words", False)
        single = isinstance(inputs, (str, dict)) or (words_given and isinstance(inputs[0], str))
        examples = self.preprocess([inputs] if single else list(inputs), **preprocess_params)

        chunks = [chunk for example in examples for chunk in example.chunks]
        for indices, model_inputs in self._batches([chunk.features for chunk in chunks], batch_size):
            self._attach_predictions([chunks[index] for index in indices], self.forward(model_inputs, **forward_params))

        outputs = [self.postprocess(example, **postprocess_params) for example in examples]
        self.score_pairs(outputs, batch_size, forward_params.get("bf16"))
        return outputs[0] if single else outputs

    def score_pairs(self, outputs, batch_size=None, bf16=None):
        """Add each bi-encoder task's score to the outputs of pair inputs (as `postprocess` gives them, with `text` and
        `text_pair`): the cosine of the two texts' own embeddings. Outputs of single texts get no such score."""
        tasks = [task for task in self.tasks if kind_of(task).encodes_pair_separately]
        paired = [output for output in outputs if output.get("text_pair") is not None]
        if not tasks or not paired:
            return
        firsts = self.embed([output["text"] for output in paired], normalize=False, batch_size=batch_size, bf16=bf16)
        seconds = self.embed([output["text_pair"] for output in paired], normalize=False, batch_size=batch_size, bf16=bf16)
        for output, first, second in zip(paired, firsts, seconds):
            for task in tasks:
                output[task["name"]] = kind_of(task).pipeline_output(task, np.stack([first, second]))

    def _attach_predictions(self, batch_chunks, logits):
        """
        Give each chunk of a batch its sentence logits and, per word it owns, the best tag and its probability. Whole
        batch tensors at a time: per-row tensor and numpy calls cost as much as the postprocessing of a batch.
        """
        rows = [row for row, chunk in enumerate(batch_chunks) for _ in chunk.token_positions]
        positions = [position for chunk in batch_chunks for position in chunk.token_positions]
        for task in self.tasks:
            if kind_of(task).encodes_pair_separately:
                continue  # scored from the pair's own embeddings (`score_pairs`)
            name = task["name"]
            if not kind_of(task).reads_tokens:
                for chunk, values in zip(batch_chunks, logits[name].numpy()):
                    chunk.logits[name] = values
                continue
            probabilities = logits[name][rows, positions].softmax(dim=-1)
            if task.get("crf"):
                # Viterbi over the words' first tokens; a word's score is its emission probability of that tag.
                word_starts = torch.zeros(logits[name].shape[:2], dtype=torch.bool)
                word_starts[rows, positions] = True
                tags = self.backend.decode_crf(name, logits[name], word_starts)
                best = tags[rows, positions]
                scores = probabilities.gather(-1, best.unsqueeze(-1)).squeeze(-1)
            else:
                scores, best = probabilities.max(dim=-1)
            scores, best = scores.tolist(), best.tolist()
            start = 0
            for chunk in batch_chunks:
                end = start + len(chunk.token_positions)
                chunk.word_predictions[name] = (best[start:end], scores[start:end])
                start = end

    def preprocess(self, inputs, is_split_into_words=False, max_length=None):
        """Tokenize a list of inputs into `_Example`s, each with one chunk, or several word windows when too long."""
        max_length = min(max_length or self.max_length, self.max_length)
        texts, pairs, all_spans = [], [], []
        for item in inputs:
            text, pair = self._split_input(item)
            if is_split_into_words and not isinstance(item, dict):
                starts = np.cumsum([0] + [len(word) + 1 for word in item[:-1]])
                texts.append(" ".join(item))
                all_spans.append([(int(start), int(start) + len(word)) for start, word in zip(starts, item)])
            else:
                texts.append(text)
                all_spans.append(split_words(text))
            pairs.append(pair)

        examples = [None] * len(texts)
        paired = [index for index, pair in enumerate(pairs) if pair is not None]
        if paired:
            # A pair is one chunk, truncated longest-first: windows would cut the relation between its two texts.
            encodings = self._truncated_pairs([texts[i] for i in paired], [pairs[i] for i in paired], max_length)
            for index, encoding in zip(paired, encodings):
                first_tokens = first_token_of_words(
                    all_spans[index], encoding.pop("offset_mapping"), encoding.pop("special_tokens_mask")
                )
                words = [word for word, token in enumerate(first_tokens) if token is not None]
                chunk = _Chunk(encoding, words, [first_tokens[word] for word in words])
                examples[index] = _Example(texts[index], all_spans[index], [chunk], text_pair=pairs[index])
        single = [index for index, pair in enumerate(pairs) if pair is None]
        for index, encoding in zip(single, self._tokenize([texts[i] for i in single]) if single else []):
            text, spans = texts[index], all_spans[index]
            special_tokens_mask = encoding.pop("special_tokens_mask")
            first_tokens = first_token_of_words(spans, encoding.pop("offset_mapping"), special_tokens_mask)
            if len(encoding["input_ids"]) <= max_length:
                words = [word for word, token in enumerate(first_tokens) if token is not None]
                chunks = [_Chunk(encoding, words, [first_tokens[word] for word in words])]
            else:
                # A word's tokens run from its first token to the next word's (or to the last non-special token).
                following = len(special_tokens_mask) - special_tokens_mask[::-1].index(0)
                counts = [0] * len(spans)
                for word in reversed(range(len(spans))):
                    if first_tokens[word] is not None:
                        counts[word], following = following - first_tokens[word], first_tokens[word]
                chunks = self._window_chunks(text, spans, counts, max_length)
            examples[index] = _Example(text, spans, chunks)
        return examples

    def _truncated_pairs(self, texts, pairs, max_length):
        """The pairs' features, those over `max_length` truncated longest-first, with one warning counting them."""
        features = self._tokenize(texts, pairs)
        too_long = [index for index, feature in enumerate(features) if len(feature["input_ids"]) > max_length]
        if too_long:
            logger.warning(
                f"{len(too_long)} of {len(texts)} sentence pairs are longer than {max_length} tokens and were "
                "truncated (longest first): sentence tasks read the kept tokens only, and words of `text` past the "
                "cut are tagged O"
            )
            truncated = self._tokenize(
                [texts[i] for i in too_long], [pairs[i] for i in too_long], max_length=max_length
            )
            for index, feature in zip(too_long, truncated):
                features[index] = feature
        return features

    @staticmethod
    def _split_input(item):
        """`(text, text_pair or None)` of one input: a string, a word list, or a `{"text", "text_pair"}` dict."""
        if isinstance(item, dict):
            unknown = set(item) - {"text", "text_pair"}
            if unknown or not isinstance(item.get("text"), str) or not isinstance(item.get("text_pair", ""), str):
                raise ValueError(
                    f'an input dict holds "text" and optionally "text_pair", both strings; got keys {sorted(item)}'
                )
            return item["text"], item.get("text_pair")
        return item, None

    def _window_chunks(self, text, spans, token_counts, max_length):
        windows = word_windows(token_counts, max_length - self.tokenizer.num_special_tokens_to_add())
        window_texts = [text[spans[start][0] : spans[end - 1][1]] for start, end, _, _ in windows]
        chunks = []
        for (start, end, owned_start, owned_end), encoding in zip(
            windows, self._tokenize(window_texts, max_length=max_length)
        ):
            first_tokens = first_token_of_words(
                spans[start:end],
                encoding.pop("offset_mapping"),
                encoding.pop("special_tokens_mask"),
                char_shift=spans[start][0],
            )
            owned = [word for word in range(owned_start, owned_end) if first_tokens[word - start] is not None]
            chunks.append(_Chunk(encoding, owned, [first_tokens[word - start] for word in owned]))
        return chunks

    def _tokenize(self, texts, pairs=None, max_length=None):
        """
        One feature dict per text (or pair) with offsets and special-token masks; truncated only when `max_length` is
        set. The tokens of a pair's second text count as special: words, spans and tags are those of the first.
        """
        with _TOKENIZER_LOCK:
            encoding = self.tokenizer(
                texts, pairs, truncation=max_length is not None, max_length=max_length, return_attention_mask=False,
                verbose=False,
            )
        features = [{key: encoding[key][index] for key in encoding} for index in range(len(texts))]
        # Offsets and special-token masks read from the tokenizers `Encoding`s: the same values, but half the time of
        # the whole call when `BatchEncoding` converts them (0.2 of 0.4 s for 5,000 SNIPS sentences).
        for feature, text_encoding in zip(features, encoding.encodings):
            feature["offset_mapping"] = text_encoding.offsets
            feature["special_tokens_mask"] = text_encoding.special_tokens_mask
            if pairs is not None:
                feature["special_tokens_mask"] = [
                    int(special or sequence != 0)
                    for special, sequence in zip(text_encoding.special_tokens_mask, text_encoding.sequence_ids)
                ]
        return features

    def _batches(self, features, batch_size=None):
        """Yield `(indices, padded tensors)` over `features`, longest first so each batch pads to similar lengths."""
        batch_size = batch_size or self._batch_size or DEFAULT_BATCH_SIZE
        order = sorted(range(len(features)), key=lambda index: len(features[index]["input_ids"]), reverse=True)
        for begin in range(0, len(order), batch_size):
            indices = order[begin : begin + batch_size]
            yield indices, self.tokenizer.pad([features[index] for index in indices], return_tensors="pt")

    def _forward(self, model_inputs, bf16=None, embed=False, normalize=None):
        bf16 = self._use_bf16(bf16)
        if not embed:
            return self.backend.logits(model_inputs, bf16)
        embeddings = self.backend.embeddings(model_inputs, bf16)
        normalize = self.model.config.normalize_embeddings if normalize is None else normalize
        return F.normalize(embeddings, p=2, dim=-1) if normalize else embeddings

    def postprocess(self, example, return_tags=False):
        output = {"text": example.text}
        if example.text_pair is not None:
            output["text_pair"] = example.text_pair
        tags = {}
        for task in self.tasks:
            name = task["name"]
            if kind_of(task).encodes_pair_separately:
                continue  # scored from the pair's own embeddings (`score_pairs`)
            if not kind_of(task).reads_tokens:
                chunk_logits = [chunk.logits[name] for chunk in example.chunks]
                logits = chunk_logits[0] if len(chunk_logits) == 1 else np.mean(chunk_logits, axis=0)
                output[name] = kind_of(task).pipeline_output(task, logits)
                continue
            labels, tag_format = task["labels"], task.get("tag_format", "BIO")
            # A word the tokenizer gave no token: outside any entity, or (plain tags) no tag.
            fill = None if tag_format == "plain" else "O"
            word_tags, word_scores = [fill] * len(example.word_spans), [0.0] * len(example.word_spans)
            for chunk in example.chunks:
                for word, best, score in zip(chunk.words, *chunk.word_predictions[name]):
                    word_tags[word], word_scores[word] = labels[best], score
            output[name] = entities_from_tags(example.text, example.word_spans, word_tags, word_scores, tag_format)
            tags[name] = word_tags
        if return_tags:
            output["words"] = [example.text[start:end] for start, end in example.word_spans]
            output["tags"] = tags
        return output

    def embed(self, texts, normalize=None, batch_size=None, bf16=None, max_length=None):
        """
        Sentence embeddings as a float32 array `[len(texts), hidden]` (`[hidden]` for one string), pooled as the model
        was configured; L2-normalised if `normalize` (default: the model's `normalize_embeddings`). Texts longer than
        the model's maximum are truncated, with one warning counting them.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        max_length = min(max_length or self.max_length, self.max_length)
        features = self._tokenize(texts) if texts else []
        too_long = [index for index, feature in enumerate(features) if len(feature["input_ids"]) > max_length]
        if too_long:
            logger.warning(
                f"{len(too_long)} of {len(texts)} texts are longer than {max_length} tokens and were truncated for "
                "their embeddings"
            )
            for index, feature in zip(too_long, self._tokenize([texts[i] for i in too_long], max_length=max_length)):
                features[index] = feature
        for feature in features:
            del feature["offset_mapping"], feature["special_tokens_mask"]

        embeddings = np.zeros((len(texts), self.model.config.encoder.hidden_size), dtype=np.float32)
        # A `bf16` given at construction holds here too, unless this call says otherwise.
        bf16 = self._forward_params.get("bf16") if bf16 is None else bf16
        forward_params = {"embed": True, "normalize": normalize, "bf16": bf16}
        for indices, model_inputs in self._batches(features, batch_size):
            embeddings[indices] = self.forward(model_inputs, **forward_params).numpy()
        return embeddings[0] if single else embeddings

    def similarity(self, a, b, batch_size=None, bf16=None):
        """Cosine similarity: a float for two strings, else a `[len(a), len(b)]` array (a string counts as one text)."""
        left = self.embed([a] if isinstance(a, str) else a, normalize=True, batch_size=batch_size, bf16=bf16)
        right = self.embed([b] if isinstance(b, str) else b, normalize=True, batch_size=batch_size, bf16=bf16)
        scores = left @ right.T
        return float(scores[0, 0]) if isinstance(a, str) and isinstance(b, str) else scores

    def save_pretrained(self, save_directory, **kwargs):
        if not isinstance(self.backend, TorchBackend):
            raise ValueError(f"an exported folder ({self.model.name_or_path}) is complete as it is: copy it instead")
        super().save_pretrained(save_directory, **kwargs)
        add_pipeline_to_folder(save_directory)

    @property
    def max_length(self) -> int:
        return max_input_length(self.model.config, self.tokenizer)

    def _call_parameters(self, kwargs):
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        return (
            {**self._preprocess_params, **preprocess_params},
            {**self._forward_params, **forward_params},
            {**self._postprocess_params, **postprocess_params},
        )

    def _use_bf16(self, bf16):
        return self.backend.uses_bf16(bf16)


def add_pipeline_to_folder(folder) -> None:
    """
    Make a saved model folder serve `transformers.pipeline(model=folder, trust_remote_code=True)`: copy this file and
    the package modules it imports next to the model files and declare it under `custom_pipelines` in the folder's
    `config.json`.
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    for path in (__file__, *get_relative_import_files(__file__)):
        shutil.copyfile(path, os.path.join(folder, os.path.basename(path)))
    config_file = os.path.join(folder, "config.json")
    with open(config_file, encoding="utf-8") as reader:
        config = json.load(reader)
    config["custom_pipelines"] = {
        PIPELINE_TASK: {"impl": f"pipeline_mtl.{MultiTaskPipeline.__name__}", "pt": ["AutoModel"], "type": "text"}
    }
    with open(config_file, "w", encoding="utf-8") as writer:
        writer.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


__all__ = [
    "BackendNotInstalledError",
    "MultiTaskPipeline",
    "OnnxRuntimeModel",
    "OpenVINOModel",
    "add_pipeline_to_folder",
    "entities_from_tags",
    "split_words",
]
