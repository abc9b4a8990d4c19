"""Corpus programs held out from tuning: written apart from the detectors, only measured.
Each module defines ``PROGRAMS: list[Program]``."""
