"""`hf-mtl export-onnx` and the pipeline's exported backends (ONNX Runtime, OpenVINO): tiny random models, seconds."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import TOPIC_NER_TASKS as TASKS
from pipeline_helpers import SENTENCES, assert_same_predictions, build_scaled_tiny_model, raw_text, read_jsonl
from transformers import AutoModel

from hf_mtl import MultiTaskModel, MultiTaskPipeline, cli
from hf_mtl.pipeline_mtl import BackendNotInstalledError, OnnxRuntimeModel

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'hf_mtl[onnx]')")

TEXTS = [
    "Apple opened a store in Paris.",
    "Angela Merkel met Emmanuel Macron in Berlin!",
    "short",
    "(Volkswagen's) factory, in Wolfsburg: employs thousands of workers",
]
# Longer than the tiny encoder's 128 positions: read in overlapping windows.
LONG_TEXT = " ".join(f"word{index} in Berlin," for index in range(60))


def build_model(folder, tokenizer, model_type="bert", pooling="mean", tasks=TASKS):
    return build_scaled_tiny_model(folder, tokenizer, tasks, model_type=model_type, pooling=pooling)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer):
    """(torch model folder, exported folder with model.onnx and model_int8.onnx)."""
    folder = tmp_path_factory.mktemp("onnx")
    model_dir = build_model(folder, tokenizer)
    output = folder / "exported"
    assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(output), "--quantize", "int8"]) == 0
    return model_dir, output


def random_batch(tokenizer, batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 20000, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row in range(1, batch):  # rows of different real lengths, padded at the end
        attention_mask[row, max(2, length - row * 3) :] = 0
    input_ids[:, 0] = tokenizer.cls_token_id
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


def test_export_writes_one_graph_with_named_outputs_and_dynamic_axes(exported):
    model_dir, output = exported
    names = sorted(path.name for path in output.iterdir())
    assert {"model.onnx", "model_int8.onnx", "config.json", "tokenizer.json"} <= set(names)
    assert not any(name.endswith((".safetensors", ".py")) or name.startswith(".") for name in names)
    config = json.loads((output / "config.json").read_text())
    assert config["tasks"] == TASKS and config["pooling"] == "mean" and "auto_map" not in config

    session = onnxruntime.InferenceSession(str(output / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {node.name: node.shape for node in session.get_inputs()}
    outputs = {node.name: node.shape for node in session.get_outputs()}
    assert inputs == {name: ["batch", "sequence"] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert outputs == {"topic_logits": ["batch", 3], "ner_logits": ["batch", "sequence", 5], "sentence_embedding": ["batch", 32]}


@pytest.mark.parametrize("batch, length", [(1, 5), (3, 17), (8, 64)])
def test_onnx_outputs_match_torch_fp32(exported, tokenizer, batch, length):
    model_dir, output = exported
    model = AutoModel.from_pretrained(model_dir).eval()
    inputs = random_batch(tokenizer, batch, length, seed=batch)
    graph = OnnxRuntimeModel(output)
    with torch.inference_mode():
        logits = model(**inputs).logits
        embeddings = model.embed(**inputs, normalize=False)
    ours = graph.logits(inputs, bf16=False)
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(ours["topic"], logits["topic"], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours["ner"][real], logits["ner"][real], atol=1e-4, rtol=0)
    torch.testing.assert_close(graph.embeddings(inputs, bf16=False), embeddings, atol=1e-4, rtol=0)


def test_int8_graph_is_quantized_and_keeps_shapes(exported, tokenizer):
    import onnx

    _, output = exported
    operators = {node.op_type for node in onnx.load(str(output / "model_int8.onnx")).graph.node}
    assert operators & {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}, operators
    fp32, int8 = OnnxRuntimeModel(output), OnnxRuntimeModel(output, file_name="model_int8.onnx")
    inputs = random_batch(tokenizer, 4, 23, seed=0)
    for name, value in fp32.logits(inputs, bf16=False).items():
        quantized = int8.logits(inputs, bf16=False)[name]
        assert quantized.shape == value.shape and quantized.dtype == torch.float32
        assert torch.isfinite(quantized).all() and not torch.equal(quantized, value)
    assert int8.embeddings(inputs, bf16=False).shape == (4, 32)


def test_pipeline_predicts_the_same_with_every_backend(exported):
    model_dir, output = exported
    torch_pipe = MultiTaskPipeline(str(model_dir), bf16=False)
    onnx_pipe = MultiTaskPipeline(str(output), backend="onnx")
    texts = TEXTS + [LONG_TEXT]
    expected = torch_pipe(texts, return_tags=True, batch_size=2)
    assert any(result["ner"] for result in expected)  # entities to compare, not only "O"
    assert_same_predictions(onnx_pipe(texts, return_tags=True, batch_size=2), expected, score_tolerance=1e-4)
    words = [text.split() for text in TEXTS]
    assert_same_predictions(
        onnx_pipe(words, is_split_into_words=True), torch_pipe(words, is_split_into_words=True), score_tolerance=1e-4
    )
    np.testing.assert_allclose(onnx_pipe.embed(texts), torch_pipe.embed(texts, bf16=False), atol=1e-5)
    similarity = torch_pipe.similarity(TEXTS[0], TEXTS[1], bf16=False)
    assert onnx_pipe.similarity(TEXTS[0], TEXTS[1]) == pytest.approx(similarity, abs=1e-5)

    int8_pipe = MultiTaskPipeline(str(output), backend="onnx", file_name="model_int8.onnx")
    quantized = int8_pipe(texts, return_tags=True)
    assert [result["words"] for result in quantized] == [result["words"] for result in expected]
    assert all(result["topic"]["label"] in TASKS[0]["labels"] for result in quantized)


def test_onnx_backend_has_no_bf16_and_no_compile(exported):
    model_dir, output = exported
    pipe = MultiTaskPipeline(str(output), backend="onnx")
    with pytest.raises(ValueError, match="bf16"):
        pipe("Apple", bf16=True)
    assert pipe("Apple", bf16=False)["text"] == "Apple"
    with pytest.raises(ValueError, match="compile"):
        MultiTaskPipeline(str(output), backend="onnx", compile=True)
    with pytest.raises(ValueError, match="exported folder"):
        pipe.save_pretrained(str(output / "copy"))
    with pytest.raises(ValueError, match="backend"):
        MultiTaskPipeline(str(output), backend="tensorrt")
    with pytest.raises(ValueError, match="export-onnx"):  # a torch model handed to an exported backend
        MultiTaskPipeline(AutoModel.from_pretrained(model_dir), tokenizer=pipe.tokenizer, backend="onnx")
    with pytest.raises(ValueError, match="file_name"):
        MultiTaskPipeline(str(model_dir), file_name="model_int8.onnx")


def test_distilbert_max_pooling_exports_without_token_type_ids(tmp_path, tokenizer):
    model_dir = build_model(tmp_path, tokenizer, model_type="distilbert", pooling="max")
    tokenizer_inputs = list(tokenizer.model_input_names)
    assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(tmp_path / "out")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [node.name for node in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert "token_type_ids" in tokenizer_inputs  # the tokenizer gives them; the pipeline leaves them out
    assert not (tmp_path / "out" / "model_int8.onnx").exists()
    # Exported again with int8, then without: the stale int8 graph does not outlive the export it belonged to.
    assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(tmp_path / "out"), "--quantize", "int8"]) == 0
    assert (tmp_path / "out" / "model_int8.onnx").exists()
    assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "model_int8.onnx").exists()
    texts = TEXTS + [LONG_TEXT]
    expected = MultiTaskPipeline(str(model_dir), bf16=False)(texts, return_tags=True)
    onnx_pipe = MultiTaskPipeline(str(tmp_path / "out"), backend="onnx")
    assert_same_predictions(onnx_pipe(texts, return_tags=True), expected, score_tolerance=1e-4)
    torch_embeddings = MultiTaskPipeline(str(model_dir)).embed(texts, normalize=False, bf16=False)
    np.testing.assert_allclose(onnx_pipe.embed(texts, normalize=False), torch_embeddings, atol=1e-4)


def test_cli_predict_and_embed_with_the_onnx_backend(exported, tmp_path):
    model_dir, output = exported
    lines = tmp_path / "in.txt"
    lines.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for backend, model in (("torch", model_dir), ("onnx", output)):
        arguments = ["--model", str(model), "--input", str(lines), "--backend", backend, "--no-bf16"]
        assert cli.main(["predict", *arguments, "--output", str(tmp_path / f"{backend}.jsonl"), "--tags"]) == 0
        assert cli.main(["embed", *arguments, "--output", str(tmp_path / f"{backend}.npy")]) == 0
    assert_same_predictions(read_jsonl(tmp_path / "onnx.jsonl"), read_jsonl(tmp_path / "torch.jsonl"), 1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "onnx.npy"), np.load(tmp_path / "torch.npy"), atol=1e-5)
    int8 = ["--model", str(output), "--backend", "onnx", "--onnx-file", "model_int8.onnx", "--input", str(lines)]
    assert cli.main(["predict", *int8, "--output", str(tmp_path / "int8.jsonl")]) == 0
    assert len(read_jsonl(tmp_path / "int8.jsonl")) == len(TEXTS)


def error_line(capsys):
    """The one line on stderr, past the progress bars that loading a model draws there."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading weights")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_export_errors_are_one_line_and_write_nothing(exported, tmp_path, capsys):
    model_dir, output = exported
    assert cli.main(["export-onnx", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "x")]) == 2
    assert "no such folder" in error_line(capsys) and not (tmp_path / "x").exists()
    assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(model_dir)]) == 2
    assert "is also an input of this command" in error_line(capsys)
    assert not (model_dir / "model.onnx").exists()
    assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(tmp_path), "--quantize", "int4"]) == 2
    assert "--quantize" in error_line(capsys)

    lines = tmp_path / "in.txt"
    lines.write_text("Apple\n", encoding="utf-8")
    predict = ["predict", "--input", str(lines), "--output", str(tmp_path / "out.jsonl")]
    assert cli.main([*predict, "--model", str(model_dir), "--backend", "onnx"]) == 2  # a torch folder, no graph
    assert "model.onnx" in error_line(capsys)
    assert cli.main([*predict, "--model", str(output), "--backend", "onnx", "--bf16"]) == 2
    assert "bf16" in error_line(capsys)
    assert cli.main([*predict, "--model", str(tmp_path / "missing"), "--backend", "onnx"]) == 2
    assert "no such folder" in error_line(capsys)
    assert not (tmp_path / "out.jsonl").exists()


def broken_bio_transitions(tags: list) -> list:
    """Positions where an `I-X` tag starts a sentence or follows anything but `B-X` / `I-X`."""
    return [index for index, tag in enumerate(tags) if tag.startswith("I-")
            and (index == 0 or tags[index - 1] not in ("B-" + tag[2:], tag))]


def test_crf_tasks_decode_in_every_backend_as_in_torch(tmp_path, tokenizer):
    """CRF heads (BIO-constrained and free) with random transitions: the exported backends decode the graph's
    emissions by the same Viterbi, over a batch of 0, 1, a few, a windowed long input and a truncated pair."""
    tasks = [TASKS[0], {**TASKS[1], "crf": True}, {**TASKS[1], "name": "ner_free", "crf": True, "bio_constraints": False}]
    model_dir = build_model(tmp_path, tokenizer, tasks=tasks)
    model = MultiTaskModel.from_pretrained(model_dir)
    with torch.no_grad():  # transitions that matter: without the constraints they would pick I- tags after O
        for name in ("ner", "ner_free"):
            for parameter in model.heads[name].crf.parameters():
                parameter.normal_(std=3.0)
    model.save_pretrained(model_dir)
    output = tmp_path / "exported"
    assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(output), "--quantize", "int8"]) == 0
    assert (output / "crf.safetensors").is_file()

    inputs = ["", "Berlin", *TEXTS, LONG_TEXT, {"text": LONG_TEXT, "text_pair": "Paris " * 80}]
    expected = MultiTaskPipeline(str(model_dir), bf16=False)(inputs, return_tags=True)
    assert any(broken_bio_transitions(result["tags"]["ner_free"]) for result in expected)  # the free CRF is free
    backends = [("onnx", "model.onnx"), ("onnx", "model_int8.onnx")]
    try:
        import openvino  # noqa: F401

        backends.append(("openvino", "model.onnx"))
    except ImportError:
        pass
    for backend, file_name in backends:
        results = MultiTaskPipeline(str(output), backend=backend, file_name=file_name)(inputs, return_tags=True, bf16=False)
        for result in results + expected:
            assert not broken_bio_transitions(result["tags"]["ner"])
        if file_name == "model.onnx":  # int8 changes the emissions themselves
            assert_same_predictions(results, expected, score_tolerance=1e-4)

    # `hf-mtl predict --backend onnx` decodes the same way.
    lines = tmp_path / "in.txt"
    lines.write_text("\n".join([*TEXTS, LONG_TEXT]) + "\n", encoding="utf-8")
    for folder, backend in ((model_dir, "torch"), (output, "onnx")):
        assert cli.main(["predict", "--model", str(folder), "--backend", backend, "--no-bf16", "--tags",
                         "--input", str(lines), "--output", str(tmp_path / f"{backend}.jsonl")]) == 0
    torch_rows, onnx_rows = read_jsonl(tmp_path / "torch.jsonl"), read_jsonl(tmp_path / "onnx.jsonl")
    assert [row["tags"] for row in onnx_rows] == [row["tags"] for row in torch_rows] == [
        result["tags"] for result in expected[2:-1]]


@pytest.mark.parametrize("module, extra", [("onnxruntime", "onnx"), ("onnx", "onnx"), ("openvino", "openvino")])
def test_missing_extra_is_one_clear_error(exported, tmp_path, capsys, monkeypatch, module, extra):
    model_dir, output = exported
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    if module != "openvino":
        assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(tmp_path / "out")]) == 2
        assert f"pip install 'hf_mtl[{extra}]'" in error_line(capsys) and not (tmp_path / "out").exists()
    if module != "onnx":
        backend = "onnx" if module == "onnxruntime" else "openvino"
        with pytest.raises(BackendNotInstalledError, match=rf"hf_mtl\[{extra}\]"):
            MultiTaskPipeline(str(output), backend=backend)


def test_openvino_backend_matches_torch_fp32(exported):
    pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'hf_mtl[openvino]')")
    model_dir, output = exported
    texts = TEXTS + [LONG_TEXT]
    expected = MultiTaskPipeline(str(model_dir), bf16=False)(texts, return_tags=True)
    pipe = MultiTaskPipeline(str(output), backend="openvino")
    assert_same_predictions(pipe(texts, return_tags=True, bf16=False), expected, score_tolerance=1e-4)
    torch_embeddings = MultiTaskPipeline(str(model_dir)).embed(texts, bf16=False)
    np.testing.assert_allclose(pipe.embed(texts, bf16=False), torch_embeddings, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_option_predicts_as_eager(exported):
    from torch._dynamo.utils import counters

    model_dir, _ = exported
    torch._dynamo.reset()
    counters.clear()
    # The "eager" dynamo backend traces the model as torch.compile does, without inductor's minutes of codegen.
    compiled = MultiTaskPipeline(str(model_dir), compile={"backend": "eager"}, bf16=False)
    eager = MultiTaskPipeline(str(model_dir), bf16=False)
    texts = TEXTS + [LONG_TEXT]
    assert_same_predictions(compiled(texts, return_tags=True), eager(texts, return_tags=True), score_tolerance=1e-5)
    assert counters["stats"]["unique_graphs"] >= 1  # the forward pass ran as a captured graph
    graphs = counters["stats"]["unique_graphs"]
    np.testing.assert_allclose(compiled.embed(texts, bf16=False), eager.embed(texts, bf16=False), atol=1e-6)
    assert counters["stats"]["unique_graphs"] > graphs  # and so did `embed`


@pytest.mark.slow
def test_minilm_export_predicts_as_torch(model_dir, pipe, tmp_path):
    """The real architecture (MiniLM, heads fitted to the helper sentences) through the fused graph."""
    assert cli.main(["export-onnx", "--model", str(model_dir), "--output", str(tmp_path / "onnx")]) == 0
    texts = [raw_text(words) for words, _, _ in SENTENCES]
    onnx_pipe = MultiTaskPipeline(str(tmp_path / "onnx"), backend="onnx")
    expected = pipe(texts, return_tags=True, bf16=False)
    assert_same_predictions(onnx_pipe(texts, return_tags=True), expected, score_tolerance=1e-4)
    assert sum(len(result["ner"]) for result in expected) == 18  # the helper sentences' entities, all compared
    np.testing.assert_allclose(onnx_pipe.embed(texts), pipe.embed(texts, bf16=False), atol=1e-4)
