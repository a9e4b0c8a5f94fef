"""Helpers for tests of code that must run on accelerators (importable from tests and benchmarks)."""
