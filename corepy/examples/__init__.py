"""Runnable examples shipped with their compiled BPF objects (``python -m corepy.examples.<name>``).

- :mod:`corepy.examples.bootstrap`: exec/exit process tracer over a ring buffer.
"""
