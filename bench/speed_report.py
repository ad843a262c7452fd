"""The speed benchmark's summary and its BENCHMARKS.md section: the results of the worker jobs joined per method,
hf_mtl against the stock models as ratios with their targets, padding, accuracy per backend against torch fp32, and
the markdown between the `speed` markers. Imported by bench/speed.py."""

from pathlib import Path

from benchlib import ROOT, bf16_tag, cpu_name, module_help, replace_section  # bench/ is on sys.path
from speed_inference import BATCH_INFER, BLOCK_SENTENCES, PIPELINE_SETTINGS, installed_backends
from speed_models import DEFAULT_ENCODER, EMULATED_BF16_SENTENCES, EMULATED_BF16_STEPS, key_of
from speed_training import BATCH_TRAIN

MARK_BEGIN = "<!-- speed:begin -->"
MARK_END = "<!-- speed:end -->"
TARGETS = {"vs_hf_two_models": 1.9, "vs_hf_pipelines": 3.0, "padding": 1.10, "bf16_accuracy_points": 0.2,
           "int8_accuracy_points": 0.3, "crf_vs_softmax": 0.85}  # a CRF costs at most 15 % of the throughput


def inference_results(results: list) -> dict:
    """Method key -> its timing (from the shared "infer" jobs) with the peak RSS of its own "memory" job."""
    inference = {}
    for result in results:
        if result["job"]["kind"] != "infer":
            continue
        if "error" not in result:
            inference.update(result["methods"])
            continue
        for method in result["job"]["methods"]:  # the whole job failed: every method of it gets the error
            job = dict(kind="infer", sentences=result["job"]["sentences"], **method)
            inference[key_of(dict(job=job))] = dict(job=job, error=result["error"])
    for result in results:
        if result["job"]["kind"] != "memory" or key_of(result) not in inference:
            continue
        row = inference[key_of(result)]
        if result["job"].get("cache") == "warm":
            row["first_call_seconds_warm_cache"] = result.get("first_call_seconds")
            continue
        for field in ("peak_rss_mib", "one_call_padding_ratio", "load_seconds", "first_call_seconds"):
            row[field] = result.get(field)
    return inference


def ratio(results: dict, ours: str, theirs: str, target: float) -> dict:
    a, b = results.get(ours, {}), results.get(theirs, {})
    if "sentences_per_second" not in a or "sentences_per_second" not in b:
        return dict(ours=ours, theirs=theirs, target=target, ratio=None, reached=None, note="not measured")
    value = a["sentences_per_second"] / b["sentences_per_second"]
    # Repeat by repeat: how much the ratio itself moved with the machine.
    per_repeat = [(a["sentences"] / ours_seconds) / (b["sentences"] / theirs_seconds)
                 for ours_seconds, theirs_seconds in zip(a["seconds_all"], b["seconds_all"])]
    return dict(ours=ours, theirs=theirs, ours_sentences_per_second=a["sentences_per_second"],
                theirs_sentences_per_second=b["sentences_per_second"], ratio=value, per_repeat=per_repeat,
                target=target, reached=value >= target)


def summarize(args, env, peaks, inference, training, accuracy) -> dict:
    """The run's summary (speed.json): every result with its share of the peak, the ratios, padding and accuracy."""
    peak = {p["precision"]: p["gflops"] for p in peaks}
    for result in list(inference.values()) + list(training.values()):
        if "model_gflops" in result:
            # int8 has no measured peak here (the matmul peaks are fp32 and bf16): its share stays empty.
            precision_peak = peak.get(result["precision"])
            result["share_of_peak"] = result["model_gflops"] / precision_peak if precision_peak else None
    emulated = not env["native_bf16"]
    return dict(
        command=command_line(args), smoke=args.smoke, environment=env,
        bf16=dict(native=env["native_bf16"], emulated=emulated,
                  inference_sentences=min(args.sentences, EMULATED_BF16_SENTENCES) if emulated else args.sentences,
                  train_steps=min(args.train_steps, EMULATED_BF16_STEPS) if emulated else args.train_steps),
        settings=dict(sentences=args.sentences, repeats=args.repeats, train_steps=args.train_steps,
                      inference_batch=BATCH_INFER, train_batch=BATCH_TRAIN, encoder=args.model,
                      peak_rss="per method (one subprocess each)" if not args.smoke else "shared: one subprocess",
                      trained_model=str(args.trained_model) if args.trained_model else None,
                      crf_model=str(args.crf_model) if args.crf_model else None),
        peak=peaks, inference=inference, ratios=ratios_of(inference, crf=bool(args.crf_model)), training=training,
        padding=padding_summary(inference, training), bf16_accuracy=bf16_accuracy(accuracy),
        backend_accuracy=backend_agreement(accuracy),
    )


def ratios_of(inference: dict, crf: bool) -> dict:
    """hf_mtl's pipeline on each backend against the two stock models and the two stock pipelines; the CRF's cost."""
    ratios = {
        "pipeline_fp32_vs_hf_two_models_fp32": ratio(inference, "hf_mtl_pipeline_fp32", "hf_two_models_fp32",
                                                     TARGETS["vs_hf_two_models"]),
        "pipeline_default_vs_hf_pipelines_fp32": ratio(inference, "hf_mtl_pipeline_default", "hf_pipelines_fp32",
                                                       TARGETS["vs_hf_pipelines"]),
        "pipeline_bf16_vs_hf_two_models_bf16": ratio(inference, "hf_mtl_pipeline_bf16", "hf_two_models_bf16",
                                                     TARGETS["vs_hf_two_models"]),
        "pipeline_bf16_vs_hf_pipelines_bf16": ratio(inference, "hf_mtl_pipeline_bf16", "hf_pipelines_bf16",
                                                    TARGETS["vs_hf_pipelines"]),
    }
    for precision in ("fp32", "bf16") if crf else ():
        ratios[f"pipeline_crf_{precision}_vs_softmax_{precision}"] = ratio(
            inference, f"hf_mtl_pipeline_crf_{precision}", f"hf_mtl_pipeline_{precision}", TARGETS["crf_vs_softmax"])
    for method, precision in PIPELINE_SETTINGS:
        key = f"{method}_{precision}"
        if method in ("hf_mtl_pipeline", "hf_mtl_pipeline_crf") or key not in inference:
            continue
        stock = "bf16" if precision == "bf16" else "fp32"  # int8 against the stock models' fp32
        for theirs, target in (("hf_two_models", "vs_hf_two_models"), ("hf_pipelines", "vs_hf_pipelines")):
            ratios[f"{key}_vs_{theirs}_{stock}"] = ratio(inference, key, f"{theirs}_{stock}", TARGETS[target])
    return ratios


def padding_summary(inference: dict, training: dict) -> dict:
    """Computed / real tokens of the benchmark's batchings against padding every row to max_seq_length."""
    train_padding = next((r["padding"] for r in training.values() if "padding" in r), {})
    infer_ref = inference.get("hf_mtl_pipeline_fp32", {})
    return dict(inference_length_sorted_64=infer_ref.get("one_call_padding_ratio"),
                training_group_by_length_32=train_padding.get("group_by_length"),
                training_random_32=train_padding.get("random_batches"),
                pad_to_128=train_padding.get("pad_to_max_length"), target=TARGETS["padding"])


def bf16_accuracy(accuracy: dict) -> dict:
    """The torch pipeline's dev scores in bf16 against fp32, and whether they stay within the target."""
    if not accuracy:
        return dict(skipped="no --trained-model given")
    fp32, bf16 = accuracy.get("hf_mtl_pipeline_fp32_dev", {}), accuracy.get("hf_mtl_pipeline_bf16_dev", {})
    summary = dict(fp32=fp32, bf16=bf16, target_points=TARGETS["bf16_accuracy_points"])
    if "intent_accuracy" in fp32 and "intent_accuracy" in bf16:
        summary["intent_difference"] = bf16["intent_accuracy"] - fp32["intent_accuracy"]
        summary["slot_f1_difference"] = bf16["slot_f1"] - fp32["slot_f1"]
        summary["reached"] = max(abs(summary["intent_difference"]),
                                 abs(summary["slot_f1_difference"])) <= TARGETS["bf16_accuracy_points"]
    return summary


def backend_agreement(accuracy: dict) -> list:
    """
    Each accuracy job against torch fp32 on the same split: on test, how many sentences get other predictions (an
    fp32 export should have none); on dev, the change in points (int8 ≤ 0.3, bf16 ≤ 0.2). Drops the predictions.
    """
    rows = []
    for key, result in accuracy.items():
        split = result["job"]["split"]
        reference = accuracy.get(f"hf_mtl_pipeline_fp32_{split}", {})
        if key == f"hf_mtl_pipeline_fp32_{split}" or "error" in result or "predictions" not in reference:
            continue
        row = dict(method=key_of(result), split=split, sentences=result["sentences"],
                   intent_accuracy=result["intent_accuracy"], slot_f1=result["slot_f1"],
                   intent_difference=result["intent_accuracy"] - reference["intent_accuracy"],
                   slot_f1_difference=result["slot_f1"] - reference["slot_f1"],
                   sentences_predicted_differently=sum(ours != theirs for ours, theirs in
                                                       zip(result["predictions"], reference["predictions"])))
        if split == "test":
            row["target"], row["reached"] = "identical", row["sentences_predicted_differently"] == 0
        else:
            target = TARGETS["int8_accuracy_points" if result["precision"] == "int8" else "bf16_accuracy_points"]
            row["target"] = target
            row["reached"] = max(abs(row["intent_difference"]), abs(row["slot_f1_difference"])) <= target
        rows.append(row)
    for result in accuracy.values():
        result.pop("predictions", None)
    return rows


def command_line(args) -> str:
    parts = ["python bench/speed.py"]
    if args.smoke:
        parts.append("--smoke")
    if args.model != DEFAULT_ENCODER:
        parts.append(f"--model {args.model}")
    settings = (("--threads", args.threads, None), ("--trained-model", args.trained_model, None),
                ("--crf-model", args.crf_model, None))
    if not args.smoke:
        settings += (("--sentences", args.sentences, 5000), ("--repeats", args.repeats, 3),
                     ("--train-steps", args.train_steps, 30))
    for flag, value, default in settings:
        if isinstance(value, Path) and value.is_relative_to(ROOT):
            value = value.relative_to(ROOT)  # as run from the repository root, not this machine's checkout path
        if value != default:
            parts.append(f"{flag} {value}")
    if args.backends != installed_backends():
        parts.append(f"--backends {','.join(args.backends)}")
    if args.profile:
        parts.append("--profile")
    return " ".join(parts)


def num(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def percent(share):
    return num(None if share is None else 100 * share)


def table_row(*cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def not_measured_row(result: dict, columns: int) -> str:
    """A table row for a job that failed: its method, precision and error, the other columns empty."""
    return (f"| {result['job']['method']} | {result['job']['precision']} | not measured: {result['error'][:100]} |"
            + " |" * (columns - 3))


def first_call(row: dict) -> str:
    """First-call seconds; with a warm inductor cache too where the method compiles."""
    cold, warm = row.get("first_call_seconds"), row.get("first_call_seconds_warm_cache")
    return num(cold, 2) if warm is None else f"{num(cold, 2)} / {num(warm, 2)}"



def markdown(summary: dict) -> str:
    """The run's section of BENCHMARKS.md."""
    parts = [machine_lines(summary), inference_lines(summary), ratio_lines(summary), training_lines(summary),
             padding_lines(summary), accuracy_lines(summary), export_lines(summary)]
    return "\n".join(line for part in parts for line in part)


def machine_lines(summary: dict) -> list:
    env, bf16 = summary["environment"], summary["bf16"]
    lines = [
        f"Machine: {cpu_name(env)}, {env['cpu_count']} CPU cores, torch threads {env['torch_threads']}, "
        f"cpu_capability {env['cpu_capability']}, {bf16_tag(env)}; "
        f"Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}. "
        f"Run {env['date']} by `{summary['command']}`"
        + (" (smoke: tiny model, not a measurement)." if summary["smoke"] else "."),
        "",
    ]
    if bf16["emulated"]:
        lines += [f"bf16 is emulated on this CPU: bf16 rows use {bf16['inference_sentences']} sentences and "
                  f"{bf16['train_steps']} training steps only.", ""]
    lines += ["| peak | size | torch.matmul GFLOP/s | F.linear GFLOP/s |", "|---|---|---|---|"]
    lines += [f"| {p['precision']} | {p['size']} | {num(p['matmul_gflops'])} | {num(p['linear_gflops'])} |"
              for p in summary["peak"]]
    return lines


def inference_lines(summary: dict) -> list:
    lines = ["", "Inference on SNIPS test sentences (repeated); model FLOPs as a share of the peak (the better of "
             "matmul and linear) of the same precision. The methods take turns every "
             f"{BLOCK_SENTENCES} sentences (order rotating); median of the repeats; computed / real tokens of those "
             "blocks. Peak RSS, load and first call (one batch of 64): each method alone in a fresh process; "
             "torch.compile's first call with an emptied / a warm inductor cache. ONNX Runtime and OpenVINO rows run "
             "the `hf-mtl export-onnx` graph (FLOPs counted as the torch model's).", "",
             "| method | precision | settings | sentences | sentences/s | computed / real tokens | GFLOP/s | % of peak "
             "| peak RSS MiB | load s | first call s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["inference"].values():
        if "error" in r:
            lines.append(not_measured_row(r, 11))
            continue
        name = r["job"]["method"] + (" (defaults)" if r["job"]["precision"] == "default" else "")
        lines.append(table_row(name, r["precision"], r["settings"], r["sentences"], num(r["sentences_per_second"]),
                               num(r["padding_ratio"], 3), num(r["model_gflops"]), percent(r["share_of_peak"]),
                               num(r.get("peak_rss_mib"), 0), num(r.get("load_seconds"), 2), first_call(r)))
    return lines


def ratio_lines(summary: dict) -> list:
    lines = ["", "| ratio (sentences/s) | value | per repeat | target | |", "|---|---|---|---|---|"]
    for r in summary["ratios"].values():
        state = "not measured" if r["ratio"] is None else ("reached" if r["reached"] else "not reached")
        repeats = ", ".join(num(value, 2) for value in r.get("per_repeat", []))
        lines.append(f"| {r['ours']} / {r['theirs']} | {num(r['ratio'], 2)} | {repeats} | ≥ {r['target']} "
                     f"| {state} |")
    return lines


def training_lines(summary: dict) -> list:
    lines = ["", "Training (plain torch loop, AdamW, length-grouped batches of 32; the two stock models train one "
             "after the other on the same batches, their times added).", "",
             "| method | precision | steps | tokens/s | sentences/s | GFLOP/s | MFU % | peak RSS MiB | first step s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["training"].values():
        if "error" in r:
            lines.append(not_measured_row(r, 9))
            continue
        lines.append(table_row(r["job"]["method"], r["precision"], r["steps"], num(r["tokens_per_second"], 0),
                               num(r["sentences_per_second"]), num(r["model_gflops"]), num(100 * r["share_of_peak"]),
                               num(r["peak_rss_mib"], 0), num(r.get("first_step_seconds"), 2)))
    return lines


def padding_lines(summary: dict) -> list:
    p = summary["padding"]
    lines = ["", f"| padding (computed / real tokens) | ratio | target ≤ {p['target']} |", "|---|---|---|"]
    for label, value in ((f"inference, one call over {summary['settings']['sentences']:,} sentences, "
                          "length-sorted batches of 64", p["inference_length_sorted_64"]),
                         ("training, group_by_length, batch 32", p["training_group_by_length_32"]),
                         ("training, random batches of 32", p["training_random_32"]),
                         ("every row padded to 128", p["pad_to_128"])):
        state = "" if value is None else ("reached" if value <= p["target"] else "not reached")
        lines.append(f"| {label} | {num(value, 3)} | {state} |")
    return lines


def accuracy_lines(summary: dict) -> list:
    a = summary["bf16_accuracy"]
    if "skipped" in a:
        lines = ["", f"bf16 accuracy: skipped ({a['skipped']})."]
    elif "intent_difference" in a:
        fp32_row, bf16_row = a["fp32"], a["bf16"]
        lines = ["", f"bf16 accuracy on {fp32_row['sentences']} dev sentences: intent "
                 f"{num(fp32_row['intent_accuracy'], 2)} (fp32) vs {num(bf16_row['intent_accuracy'], 2)} (bf16), "
                 f"slot F1 {num(fp32_row['slot_f1'], 2)} vs {num(bf16_row['slot_f1'], 2)}; differences "
                 f"{a['intent_difference']:+.2f} / {a['slot_f1_difference']:+.2f} points (target ≤ "
                 f"{a['target_points']}: {'reached' if a['reached'] else 'not reached'})."]
    else:
        lines = ["", f"bf16 accuracy: not measured ({a['fp32'].get('error') or a['bf16'].get('error')})."]
    if not summary["backend_accuracy"]:
        return lines
    lines += ["", "Backends against torch fp32 on the same split (test: sentences whose intent or any slot tag "
              "differs; dev: change in points).", "",
              "| method | split | sentences | intent acc. | slot F1 | Δ intent | Δ slot F1 | sentences differing "
              "| target | |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["backend_accuracy"]:
        target = r["target"] if r["target"] == "identical" else f"≤ {r['target']} points"
        state = "reached" if r["reached"] else "not reached"
        lines.append(table_row(r["method"], r["split"], r["sentences"], num(r["intent_accuracy"], 2),
                               num(r["slot_f1"], 2), f"{r['intent_difference']:+.2f}",
                               f"{r['slot_f1_difference']:+.2f}", r["sentences_predicted_differently"], target, state))
    return lines


def export_lines(summary: dict) -> list:
    export = summary.get("export")
    if not export:
        return []
    if "error" in export:
        return ["", f"ONNX export failed: {export['error'][:200]}"]
    sizes = ", ".join(f"{name} {num(size, 0)} MiB" for name, size in sorted(export["file_mib"].items()))
    return ["", f"`hf-mtl export-onnx --quantize int8`: {num(export['seconds'], 1)} s ({sizes})."]


def write_markdown(path: Path, section: str) -> None:
    replace_section(path, MARK_BEGIN, MARK_END, section, heading="## Speed")


if __name__ == "__main__":
    module_help(__doc__, "bench/speed.py")
