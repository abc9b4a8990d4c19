"""Corpus programs the detectors may be tuned on. Each module defines ``PROGRAMS: list[Program]``."""
