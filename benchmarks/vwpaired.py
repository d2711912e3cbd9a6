"""Vowpal Wabbit's fastest passes, run inside another part's repetitions so its ratio is paired.

Why: on this shared 2-core host the same VW pass ran 0.48-0.86 M records/s minutes apart (CPU
seconds moving with it), so a hashbridge figure divided by the head-to-head's VW median, measured
minutes earlier, mixes the two runs' luck. Running VW's binary-cache passes (its fastest input,
built once untimed) in the same repetition as the hashbridge runs, and dividing rep by rep, gives
the ratio issue 6 asks for: "measured in the same repetition".
"""
from __future__ import annotations

from typing import Any

from benchmarks.contenders import build_vw_cache, run_child, vw_cache_path

JOBS = ("vw-cache-sgd", "vw-cache")  # the cache passes: VW's best figure in every head-to-head run


class VwPaired:
    """One VW measurement per call, over the synthetic set of ``n_rows`` rows at ``bits`` bits."""

    def __init__(self, n_rows: int, bits: int) -> None:
        cache = vw_cache_path(n_rows, bits)
        self.cfg: dict[str, Any] = {"n_rows": n_rows, "seed": 0, "bits": bits, "evaluate": False,
                                    "vw_cache": str(cache)}
        build_vw_cache(self.cfg, cache)  # rewritten each run: never a cache of older data
        self.reps: list[dict[str, float]] = []

    def measure(self) -> dict[str, float]:
        """Each cache pass once (fresh child processes, as in the head-to-head); ``best`` is the
        faster. Raises when no pass gave a rate."""
        rates: dict[str, float] = {}
        for job in JOBS:
            for row in run_child({**self.cfg, "job": job}):
                if row.get("rate"):
                    rates[row["contender"]] = float(row["rate"])
        if not rates:
            raise RuntimeError("no Vowpal Wabbit pass gave a rate")
        rates["best"] = max(rates.values())
        self.reps.append(rates)
        return rates


def paired_ratios(runs: list[dict[str, Any]]) -> list[float]:
    """Each run's rate over VW's best of the same repetition (runs carry ``vw_best_same_rep``)."""
    return [r["rate"] / r["vw_best_same_rep"] for r in runs if r.get("vw_best_same_rep")]
