"""`hf-mtl export-onnx`: the whole multi-task model as one ONNX graph that ONNX Runtime or OpenVINO serves.

The exported folder holds `model.onnx` (float32), with `--quantize int8` also `model_int8.onnx` (dynamic int8 weights
and activations of the matrix products), the tokenizer and the hf_mtl `config.json` (tasks, labels, pooling), so
`MultiTaskPipeline(folder, backend="onnx")` runs it without the torch weights. A model with CRF token tasks also gets
`crf.safetensors` (each CRF's start, end and transition scores, float32 also beside an int8 graph): the graph gives
the emission scores and the pipeline decodes them by the same Viterbi as the torch head, BIO constraints rebuilt from
the labels in `config.json`. Decoding stays outside the graph because it is a loop over word positions that the
pipeline already runs on whole batches, and the same code then serves every backend.

The graph: inputs as the tokenizer gives them (`input_ids`, `attention_mask`, and `token_type_ids` where the encoder
takes them), outputs `<task>_logits` per task and `sentence_embedding` (the model's pooling, not normalised), batch
and sequence axes dynamic.

Why `torch.onnx.export` and not optimum: optimum's exporter lives in `optimum-onnx` since optimum 2.0, and its only
release (0.1.0) requires `transformers<4.58` and `optimum~=2.1`; installed beside transformers 5.x anyway it fails at
import (`cannot import name '_CAN_RECORD_REGISTRY' from 'transformers.utils.generic'`), so it cannot take a custom
`OnnxConfig` here. The TorchScript exporter (`dynamo=False`) on the encoder's eager attention is used because ONNX
Runtime's transformer optimizer fuses its graph into the BERT kernels (`Attention`, `EmbedLayerNormalization`,
`SkipLayerNormalization`, `BiasGelu`); the graphs of the dynamo exporter, or of SDPA attention, keep attention unfused.
"""

import contextlib
import inspect
import json
import logging
import os
import tempfile
import warnings

import numpy as np
import torch
from safetensors.torch import save_file

from .errors import ConfigError, ModelError
from .export import export_output
from .loading import load_model_folder
from .tasks import tasks_of_config
from .pipeline_mtl import CRF_FILE, EMBEDDING_OUTPUT, LOGITS_OUTPUT_SUFFIX, ONNX_FILE, ONNX_INT8_FILE, import_backend
from .task_kinds import kind_of

logger = logging.getLogger(__name__)

OPSET = 17
QUANTIZATIONS = ("int8",)
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Sentences of different lengths for tracing and the check after export: padding runs through the graph.
PROBE_TEXTS = ["Apple opened a store in Paris.", "Book a table for two at the Italian place near Central Park tonight"]
MAX_DIFFERENCE = 1e-4


class GraphOutputs(torch.nn.Module):
    """The model as the graph computes it: positional inputs in, every task's logits and the pooled embedding out."""

    def __init__(self, model, input_names):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        # A bi-encoder head's output is the sentence embedding itself (`EMBEDDING_OUTPUT`), not logits of its own.
        self.task_names = [task["name"] for task in model.config.tasks if not kind_of(task).encodes_pair_separately]
        # The pooled vector of the same forward pass: one encoder run for every output.
        self._pooled = None
        model.pooling.register_forward_hook(self._keep_pooled)

    def _keep_pooled(self, module, args, output):
        self._pooled = output

    def forward(self, *inputs):
        logits = self.model(**dict(zip(self.input_names, inputs))).logits
        return (*[logits[name] for name in self.task_names], self._pooled)

    @property
    def output_names(self) -> list:
        return [name + LOGITS_OUTPUT_SUFFIX for name in self.task_names] + [EMBEDDING_OUTPUT]


def export_onnx(model_dir: str, output_dir: str, quantize: str | None = None) -> str:
    """Write `output_dir` as described in the module docstring; nothing is written when anything fails."""
    import_backend("onnx", "onnx")
    import_backend("onnxruntime", "onnx")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize: {quantize!r} is not one of {list(QUANTIZATIONS)}")
    output = export_output(model_dir, output_dir)
    output.check()  # not the model folder, not a file, not a folder of something else: before anything is loaded
    model, tokenizer = load_model_folder(model_dir, attn_implementation="eager", dtype=torch.float32)
    crf_tasks = [task.name for task in tasks_of_config(model.config) if task.needs_word_starts]

    input_names = graph_input_names(model, tokenizer)
    probe = tokenizer(PROBE_TEXTS, padding=True, return_tensors="pt")
    probe = {name: probe[name] for name in input_names}
    graph = GraphOutputs(model, input_names).eval()
    with torch.inference_mode():
        expected = [output.numpy() for output in graph(*probe.values())]

    with output:  # written beside output_dir and renamed into place once complete (`hf_mtl.atomic_files.StagedOutput`)
        staging = output.path
        traced = staging / f"traced_{ONNX_FILE}"  # before ONNX Runtime's fusions; the int8 fallback's input
        _export_graph(graph, probe, expected, traced, staging / ONNX_FILE)
        _check_graph(staging / ONNX_FILE, probe, expected, MAX_DIFFERENCE)
        if quantize == "int8":
            _quantize_int8(staging / ONNX_FILE, traced, staging / ONNX_INT8_FILE)
            _check_graph(staging / ONNX_INT8_FILE, probe, expected, None)
        traced.unlink()
        if crf_tasks:
            crf_state = {f"{name}.{key}": value.detach().float().contiguous()
                         for name in crf_tasks for key, value in model.heads[name].crf.state_dict().items()}
            save_file(crf_state, str(staging / CRF_FILE))
        tokenizer.save_pretrained(staging)
        config = model.config.to_dict()
        # The folder has no torch weights or model code: nothing for AutoModel or the remote-code pipeline to load.
        for key in ("auto_map", "custom_pipelines", "_attn_implementation_autoset"):
            config.pop(key, None)
        with open(staging / "config.json", "w", encoding="utf-8") as writer:
            writer.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return str(output_dir)


def graph_input_names(model, tokenizer) -> list:
    """The tokenizer outputs the encoder reads: `token_type_ids` only where it has token type embeddings (DeBERTa-v2
    takes the argument but has `type_vocab_size` 0, and the traced graph would drop the unused input)."""
    encoder_inputs = set(inspect.signature(model.encoder.forward).parameters)
    names = [name for name in tokenizer.model_input_names if name in GRAPH_INPUTS and name in encoder_inputs]
    if getattr(model.config.encoder, "type_vocab_size", 1) == 0:
        names = [name for name in names if name != "token_type_ids"]
    return names


def _export_graph(graph, probe, expected, traced, path):
    """TorchScript export with dynamic batch / sequence axes, then ONNX Runtime's BERT fusions where they apply."""
    from onnxruntime.transformers.optimizer import optimize_model

    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in probe}
    for name, value in zip(graph.output_names, expected):
        # Per-token outputs (token tasks) carry the sequence axis; per-sentence outputs only the batch axis.
        dynamic_axes[name] = {0: "batch", 1: "sequence"} if value.ndim == 3 else {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about shape checks in the attention mask code and about index ops with negative indices;
        # neither applies to these inputs, and `_check_graph` compares the result with the torch model anyway.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing")
        torch.onnx.export(
            graph,
            tuple(probe.values()),
            str(traced),
            input_names=list(probe),
            output_names=graph.output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    encoder = graph.model.config.encoder
    optimized = optimize_model(
        str(traced),
        model_type="bert",  # the fusion patterns of every BERT-like encoder (BERT, RoBERTa, DistilBERT, ...)
        num_heads=getattr(encoder, "num_attention_heads", 0),
        hidden_size=getattr(encoder, "hidden_size", 0),
    )
    optimized.save_model_to_file(str(path))


def _quantize_int8(source, traced, target):
    """
    Dynamic int8 quantization of the matrix products and attention (int8 weights, uint8 activations scaled per
    batch) after ONNX Runtime's pre-processing (shape inference), as its quantization guide does it. Weights are
    scaled per output channel: as fast as one scale per matrix and far closer to float32 (BENCHMARKS.md, speed).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inferred = target.with_name("shapes_" + source.name)
    # A failed symbolic inference dumps its graph into the working directory (sym_shape_infer_temp.onnx and external
    # data files): it runs in a scratch directory that is removed afterwards.
    with tempfile.TemporaryDirectory(prefix="hf_mtl-quantize-") as scratch, working_directory(scratch):
        try:
            quant_pre_process(str(source), str(inferred), skip_optimization=True)
        except Exception as error:  # ONNX Runtime raises a plain Exception when its symbolic inference gives up
            # DeBERTa-v2's relative positions and ALBERT's shared layers defeat the symbolic shape inference, and
            # ONNX's own cannot type the fused operators: quantize the graph as traced, before the fusions, instead.
            logger.info(f"int8: shape inference of the fused graph failed ({error}); quantizing the unfused graph")
            quant_pre_process(str(traced), str(inferred), skip_optimization=True, skip_symbolic_shape=True)
    quantize_dynamic(
        str(inferred),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        per_channel=True,
    )
    inferred.unlink()


@contextlib.contextmanager
def working_directory(path):
    """The process's working directory set to `path` inside the block (`contextlib.chdir` from Python 3.11 on)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _check_graph(path, probe, expected, max_difference):
    """Run the graph on the probe: the torch outputs' shapes, and values within `max_difference` (relative to the
    output's largest value where that exceeds 1) when given."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_outputs()]
    outputs = session.run(names, {name: value.numpy() for name, value in probe.items()})
    real = probe["attention_mask"].numpy().astype(bool)
    for name, output, reference in zip(names, outputs, expected):
        if output.shape != reference.shape:
            raise ModelError(f"{path.name}: output {name} has shape {output.shape}, the torch model {reference.shape}")
        if max_difference is None:
            continue
        # Per-token outputs are compared at real tokens only: padding positions are never read.
        difference = np.abs(output - reference)[real] if output.ndim == 3 else np.abs(output - reference)
        allowed = max_difference * max(1.0, float(np.abs(reference).max()))
        if difference.max() > allowed:
            raise ModelError(
                f"{path.name}: output {name} differs from the torch model by {difference.max():.2e} "
                f"(more than {allowed:.1e}); the export is not faithful"
            )
