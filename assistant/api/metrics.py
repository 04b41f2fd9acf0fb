"""Prometheus metrics, one registry per app (so several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from assistant.schemas import AskResponse

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "scholia_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "scholia_http_request_duration_seconds",
            "Time from request to the last byte of the response (whole stream for SSE).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "scholia_http_requests_in_flight", "Requests being served now.", registry=registry
        )
        self.retrieval = Histogram(
            "scholia_retrieval_seconds",
            "Hybrid retrieval time per answered question.",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.generation = Histogram(
            "scholia_generation_seconds",
            "LLM generation time per answered question (0-time declines excluded).",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.verification = Histogram(
            "scholia_verification_seconds",
            "Answer verification time per answered question.",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "scholia_llm_tokens",
            "LLM tokens used, by kind (prompt or completion).",
            ["kind"],
            registry=registry,
        )
        self.answers = Counter(
            "scholia_answers",
            "Questions answered, by channel (ask, stream, openai, ui) and outcome.",
            ["channel", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "scholia_errors",
            "Errors by kind (llm_unavailable, llm_timeout, store_unavailable, validation, "
            "unauthorized, rate_limited, body_too_large, internal, ...).",
            ["kind"],
            registry=registry,
        )

    def observe_answer(self, response: AskResponse, channel: str) -> None:
        timings = response.timings_ms
        self.retrieval.observe(timings.retrieve / 1000)
        if timings.generate:
            self.generation.observe(timings.generate / 1000)
        self.verification.observe(timings.verify / 1000)
        self.tokens.labels("prompt").inc(response.usage.prompt_tokens)
        self.tokens.labels("completion").inc(response.usage.completion_tokens)
        self.answers.labels(channel, "declined" if response.declined else "answered").inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()
