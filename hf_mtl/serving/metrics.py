"""Prometheus metrics of one server process (`GET /metrics`): requests, errors, batches, queue and inference time."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    """A registry of its own per app, so that several apps in one process (tests) do not share counters."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("hf_mtl_request", "requests received", ["route"], registry=self.registry)
        self.errors = Counter(
            "hf_mtl_request_failure", "requests answered with an error", ["route", "error_type"], registry=self.registry
        )
        self.in_flight = Gauge("hf_mtl_requests_in_flight", "inference requests being answered", registry=self.registry)
        self.queue_size = Gauge("hf_mtl_queue_size", "requests waiting for a batch", registry=self.registry)
        self.batch_size = Histogram(
            "hf_mtl_batch_size", "rows per forward batch", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.batch_tokens = Histogram(
            "hf_mtl_batch_tokens", "padded tokens per forward batch", registry=self.registry,
            buckets=(64, 256, 1024, 4096, 16384, 65536),
        )
        self.queue_time = Histogram(
            "hf_mtl_queue_duration_seconds", "time a request waited for its batch", registry=self.registry,
            buckets=SECONDS,
        )
        self.inference_time = Histogram(
            "hf_mtl_inference_duration_seconds", "time of one batching round (all its forward passes)",
            registry=self.registry, buckets=SECONDS,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
