"""Evaluation harness: retrieval metrics, answer metrics, RAGAS, and performance benchmarks."""
