"""Hypothesis profiles for the unit tests; pick one with HYPOTHESIS_PROFILE (default ``dev``).

    dev   quick, for every local run and CI (the default)
    ci    more examples, still minutes
    long  the fuzzing run of docs/fuzzing.md: many examples, no deadline

Tests marked ``slow`` scale their example count from the active profile (see test_frames_fuzz.py).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
