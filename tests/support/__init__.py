"""Helpers shared by tests and benchmarks that run jobgate as real processes."""
