"""Benchmarks: throughput and accuracy of hashbridge beside Vowpal Wabbit, scikit-learn and River.

Run ``python -m benchmarks [part ...] [--quick]``; each part writes ``results/<name>.json`` and
``report.py`` turns them into ``RESULTS.md``. Kept out of test collection on purpose.
"""
