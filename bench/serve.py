"""Serving benchmark of `hf-mtl serve`: real HTTP clients on loopback against the in-process pipeline, same run.

    python bench/serve.py                                    # the full run on bench/runs/snips_recipe_crf (a quiet machine)
    python bench/serve.py --smoke --out /tmp/serve.json      # seconds: a few requests per row, to check the script
    python bench/serve.py --rows torch-fp32,onnx-fp32        # only these rows

Run from the repository root. For each row (backend and precision: torch fp32 / bf16, ONNX Runtime fp32 / int8,
OpenVINO; the exported graphs are written once into bench/runs/serve_export by `hf-mtl export-onnx --quantize int8`)
an `hf-mtl serve` process serves the trained SNIPS model, and 1 / 8 / 32 / 128 concurrent aiohttp clients each send
one SNIPS test sentence per request to /predict_all until `--requests` are answered: requests/s, sentences/s, p50 /
p95 / p99 latency and errors. Then, at 32 clients: /heads/intent/predict against /predict_all (one encoder pass
serves every head), and the server's RSS before and after `--rss-requests` more requests. The in-process pipeline
of the same backend and precision gives the yardsticks: sentences/s at batch 64, and the p50 latency of a
one-sentence call. Clients and server share the machine's cores (the ratios are of the same run, so the machine's
speed cancels out). Writes `--out` (default bench/results/serve.json) and prints a markdown table.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ROOT, cpu_name, environment, read_snips  # bench/ is on sys.path when a script of it runs

MODEL = ROOT / "bench" / "runs" / "snips_recipe_crf"
EXPORT = ROOT / "bench" / "runs" / "serve_export"
# name -> (backend, bf16, graph file)
ROWS = {
    "torch-fp32": ("torch", False, None), "torch-bf16": ("torch", True, None),
    "onnx-fp32": ("onnx", False, "model.onnx"), "onnx-int8": ("onnx", False, "model_int8.onnx"),
    "openvino": ("openvino", None, "model.onnx"),
}
CONCURRENCY = (1, 8, 32, 128)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model, backend, bf16, graph):
    import requests

    port = free_port()
    command = [sys.executable, "-m", "hf_mtl.cli", "serve", "--model", str(model), "--port", str(port),
               "--backend", backend, "--log-level", "warning", "--max-client-batch-size", "64"]
    command += [] if bf16 is None else ["--bf16" if bf16 else "--no-bf16"]
    command += ["--onnx-file", graph] if graph else []
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the server of {command} did not start")
        time.sleep(0.2)


async def load(url, route, texts, clients, requests_total):
    """`clients` concurrent clients, one sentence per request, until `requests_total` are answered."""
    import aiohttp

    latencies, errors, sent = [], 0, 0

    async def client(session):
        nonlocal errors, sent
        while sent < requests_total:
            text = texts[sent % len(texts)]
            sent += 1
            start = time.perf_counter()
            async with session.post(url + route, json={"inputs": text}) as response:
                await response.read()
                errors += response.status != 200
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"clients": clients, "route": route, "requests": len(latencies), "errors": errors,
            "requests_per_s": len(latencies) / seconds, "sentences_per_s": len(latencies) / seconds,
            "p50_ms": 1000 * quantiles[49], "p95_ms": 1000 * quantiles[94], "p99_ms": 1000 * quantiles[98]}


def in_process(model, backend, bf16, graph, texts, single_calls):
    """The pipeline in this process: sentences/s at batch 64, and the p50 latency of a one-sentence call."""
    from hf_mtl import MultiTaskPipeline
    from hf_mtl.loading import load_model_folder

    if backend == "torch":
        weights, tokenizer = load_model_folder(str(model))
        pipe = MultiTaskPipeline(weights, tokenizer=tokenizer, bf16=bf16)
    else:
        pipe = MultiTaskPipeline(str(model), backend=backend, file_name=graph, bf16=bf16)
    pipe(texts[:64], batch_size=64)  # warm up both kinds of call
    for text in texts[:5]:
        pipe(text)
    start = time.perf_counter()
    pipe(texts, batch_size=64)
    batch_rate = len(texts) / (time.perf_counter() - start)
    single = []
    for text in texts[:single_calls]:
        start = time.perf_counter()
        pipe(text)
        single.append(time.perf_counter() - start)
    return {"batch64_sentences_per_s": batch_rate, "single_p50_ms": 1000 * statistics.median(single)}


def bench_row(name, args, texts):
    backend, bf16, graph = ROWS[name]
    model = MODEL if backend == "torch" else EXPORT
    baseline = in_process(model, backend, bf16, graph, texts[: args.requests], args.single_calls)
    process, url = start_server(model, backend, bf16, graph)
    try:
        asyncio.run(load(url, "/predict_all", texts, 8, min(64, args.requests)))  # warm up
        levels = [asyncio.run(load(url, "/predict_all", texts, clients, args.requests)) for clients in CONCURRENCY]
        one_head = asyncio.run(load(url, "/heads/intent/predict", texts, 32, args.requests))
        all_heads = asyncio.run(load(url, "/predict_all", texts, 32, args.requests))
        rss_before = rss_mib(process.pid)
        memory_run = asyncio.run(load(url, "/predict_all", texts, 32, args.rss_requests))
        rss_after = rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    at = {level["clients"]: level for level in levels}
    return {
        "row": name, "backend": backend, "bf16": bf16, "graph": graph, "in_process": baseline, "levels": levels,
        "one_head": one_head, "all_heads": all_heads, "rss_mib_before": rss_before, "rss_mib_after": rss_after,
        "rss_requests": memory_run["requests"], "rss_run_errors": memory_run["errors"],
        "ratio_32_clients_to_batch64": at[32]["sentences_per_s"] / baseline["batch64_sentences_per_s"],
        "ratio_1_client_p50_to_single_call": at[1]["p50_ms"] / baseline["single_p50_ms"],
        "ratio_predict_all_to_one_head": one_head["sentences_per_s"] / all_heads["sentences_per_s"],
    }


def export_graphs():
    if not (EXPORT / "model_int8.onnx").is_file():
        subprocess.run([sys.executable, "-m", "hf_mtl.cli", "export-onnx", "--model", str(MODEL), "--output",
                        str(EXPORT), "--quantize", "int8"], check=True)


def markdown(results) -> str:
    env = results["environment"]
    lines = [f"CPU: {cpu_name(env)}, {env['cpu_count']} cores, bf16 flags: {env['cpu_bf16_flags'] or 'none'}; "
             f"clients and server on the same machine; {results['settings']['requests']} requests per level.", "",
             "| row | clients | req/s | sentences/s | p50 ms | p95 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        for level in row["levels"]:
            lines.append(f"| {row['row']} | {level['clients']} | {level['requests_per_s']:.1f} | "
                         f"{level['sentences_per_s']:.1f} | {level['p50_ms']:.1f} | {level['p95_ms']:.1f} | "
                         f"{level['p99_ms']:.1f} | {level['errors']} |")
    lines += ["", "| row | in-process batch 64 sent/s | single call p50 ms | 32 clients / batch 64 (≥ 0.7) | "
              "1 client p50 / single call (≤ 1.5) | /predict_all cost / one head (≤ 1.15) | RSS MiB before → after |",
              "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        base = row["in_process"]
        lines.append(f"| {row['row']} | {base['batch64_sentences_per_s']:.1f} | {base['single_p50_ms']:.1f} | "
                     f"{row['ratio_32_clients_to_batch64']:.2f} | {row['ratio_1_client_p50_to_single_call']:.2f} | "
                     f"{row['ratio_predict_all_to_one_head']:.2f} | {row['rss_mib_before']:.0f} → "
                     f"{row['rss_mib_after']:.0f} ({row['rss_requests']:,} requests) |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {list(ROWS)}")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--rss-requests", type=int, default=10_000, help="requests between the two RSS readings")
    parser.add_argument("--single-calls", type=int, default=200, help="one-sentence in-process calls timed")
    parser.add_argument("--smoke", action="store_true", help="a few requests per row: checks the script, no figures")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.rss_requests, args.single_calls = 40, 40, 5
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown {unknown}; choose from {list(ROWS)}")
    texts = [" ".join(row["words"]) for row in read_snips("test")]
    if any(ROWS[row][0] != "torch" for row in rows):
        export_graphs()
    results = {"environment": environment(), "settings": {"requests": args.requests, "smoke": args.smoke,
                                                          "model": str(MODEL.relative_to(ROOT))}, "rows": []}
    for row in rows:
        print(f"{row} ...", file=sys.stderr, flush=True)
        results["rows"].append(bench_row(row, args, texts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
