"""The sections of ``scripts/benchmark.py`` (issue #7), one module each, and what they share (``common``)."""
