"""lute-async's benchmark suite (issue 6): ``python -m benchmarks [--quick] [--json out.json]``.

Every scenario times its floor (the same work with no executor) and lute-async alternately in
one process, several rounds, and reports medians and the ratio between them.
"""
