"""Benchmarks: per-step overhead and the fault zoo (diagnosis quality)."""
