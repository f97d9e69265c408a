"""Runnable benchmarks: each part prints a table and writes JSON under ``benchmarks/results/``.

``python -m benchmarks`` runs every available part; ``python -m benchmarks.replay``
runs one.  All take ``--quick`` (tiny sizes, a second or so) and ``--results-dir``.
A part is a module ``benchmarks.<name>`` with ``main(argv) -> int``, listed in
``benchmarks.__main__.PARTS``.
"""
