"""Evaluation harness: retrieval metrics, answer metrics, RAGAS, and performance benchmarks."""

import assistant  # noqa: F401  (applies the offline environment first)
