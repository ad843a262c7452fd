"""Accuracy and profiles per backend for the speed benchmark: intent accuracy and slot F1 of a trained model through
MultiTaskPipeline on each backend and precision (compared with torch fp32 by bench/speed_report.py), and where each
backend's time goes (torch.profiler, ONNX Runtime's operator profile, cProfile of the whole call). Imported by
bench/speed.py."""

import json
from pathlib import Path

from benchlib import environment, module_help, peak_rss_mib, read_snips, repeated  # bench/ is on sys.path
from speed_inference import BATCH_INFER, WARMUP_SENTENCES, mtl_pipeline
from speed_models import key_of, use_inductor_cache


def run_accuracy(job: dict) -> dict:
    """
    Intent accuracy and word-level slot F1 (seqeval) of the trained model through MultiTaskPipeline with the job's
    method and precision, on the job's split; with every prediction, so that backends can be compared sentence by
    sentence.
    """
    from seqeval.metrics import f1_score

    use_inductor_cache(job)
    rows = read_snips(job["split"], job.get("limit"))
    pipe, _, facts = mtl_pipeline(job)
    outputs = pipe([row["words"] for row in rows], is_split_into_words=True, return_tags=True, batch_size=BATCH_INFER)
    correct = sum(out["intent"]["label"] == row["intent"] for out, row in zip(outputs, rows))
    slot_f1 = f1_score([row["tags"] for row in rows], [out["tags"]["slots"] for out in outputs])
    predictions = [" ".join([out["intent"]["label"], *out["tags"]["slots"]]) for out in outputs]
    return dict(precision=job["precision"], backend=facts["backend"], split=job["split"], sentences=len(rows),
                intent_accuracy=100 * correct / len(rows), slot_f1=100 * slot_f1, predictions=predictions,
                peak_rss_mib=peak_rss_mib())


def run_profile(job: dict) -> dict:
    """
    Per method of `job["methods"]`: cProfile of whole calls (tokenizer, backend, postprocessing) and the backend's own
    operator profile: torch.profiler's ops by self CPU time and by input shape (the matrix sizes, the autocast
    casts), or ONNX Runtime's per-operator times. OpenVINO gets cProfile only. Written to `job["path"]`.
    """
    use_inductor_cache(job)
    texts = [" ".join(row["words"]) for row in repeated(read_snips("test"), job["sentences"])]
    sections = []
    for method in job["methods"]:
        method_job = dict(job, **method)
        pipe, facts = profiled_pipeline(method_job, Path(job["path"]).with_name("onnxruntime_profile"))
        batch_size = None if method["method"] == "hf_mtl_pipeline_default" else BATCH_INFER  # None: its default
        call = lambda: pipe(texts, batch_size=batch_size)  # noqa: E731
        pipe(texts[:WARMUP_SENTENCES])
        title = f"{key_of(dict(job=method_job))} ({facts['settings']})"
        sections.append(f"== {title} ==\n\n{backend_profile(pipe, facts['backend'], call)}\n\n"
                        f"-- cProfile: top 15 functions by cumulative time --\n{python_profile(call)}")
    Path(job["path"]).write_text(
        f"MultiTaskPipeline over {len(texts)} SNIPS test sentences ({job['model_label']}), "
        f"{environment()['torch_threads']} torch threads, per backend\n\n" + "\n\n".join(sections), encoding="utf-8")
    methods = [key_of(dict(job=dict(job, **method))) for method in job["methods"]]
    return dict(path=job["path"], sentences=len(texts), methods=methods)


def profiled_pipeline(job: dict, onnx_profile_prefix: Path) -> tuple:
    """(pipeline, facts) of a method; an ONNX Runtime pipeline on a session that records its operator profile."""
    from hf_mtl import MultiTaskPipeline
    from hf_mtl.pipeline_mtl import OnnxRuntimeModel

    pipe, _, facts = mtl_pipeline(job)
    if facts["backend"] == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(onnx_profile_prefix)
        graph = OnnxRuntimeModel(pipe.model.name_or_path, file_name=pipe.model.file_name, session_options=options)
        pipe = MultiTaskPipeline(graph, tokenizer=pipe.tokenizer, bf16=False)
    return pipe, facts


def backend_profile(pipe, backend: str, call) -> str:
    """The backend's own operator profile of one `call()`: torch.profiler or ONNX Runtime's; none for OpenVINO."""
    if backend == "torch":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
            call()
        averages = profiler.key_averages()
        shapes = profiler.key_averages(group_by_input_shape=True)
        return (f"-- torch.profiler: top 20 ops by self CPU time --\n"
                f"{averages.table(sort_by='self_cpu_time_total', row_limit=20)}\n"
                f"-- torch.profiler: top 15 (op, input shapes) by self CPU time --\n"
                f"{shapes.table(sort_by='self_cpu_time_total', row_limit=15)}")
    if backend == "onnx":
        call()
        return onnxruntime_profile_table(pipe.model.session.end_profiling())
    return "(OpenVINO: no operator profile here; cProfile below shows its share of the call)"


def python_profile(call) -> str:
    """cProfile of one `call()`: the 15 functions with the largest cumulative time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(call)
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(15)
    return stream.getvalue()


def onnxruntime_profile_table(path: str, rows: int = 20) -> str:
    """ONNX Runtime's profile (a Chrome trace of node runs) summed per operator type, largest share first."""
    events = json.loads(Path(path).read_text(encoding="utf-8"))
    Path(path).unlink()
    totals = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            operator = event.get("args", {}).get("op_name", "?")
            count, micros = totals.get(operator, (0, 0))
            totals[operator] = (count + 1, micros + event.get("dur", 0))
    whole = sum(micros for _, micros in totals.values()) or 1
    lines = ["-- ONNX Runtime: operator kernel time --", f"{'operator':<32} {'calls':>8} {'ms':>10} {'share':>7}"]
    for operator, (count, micros) in sorted(totals.items(), key=lambda item: -item[1][1])[:rows]:
        lines.append(f"{operator:<32} {count:>8} {micros / 1000:>10.1f} {100 * micros / whole:>6.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    module_help(__doc__, "bench/speed.py")
