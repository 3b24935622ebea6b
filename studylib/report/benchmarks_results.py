"""The committed benchmark results (``benchmarks/results/*.json``, written by ``python -m benchmarks.…``)
as the report reads them."""

from __future__ import annotations

import json

from .. import config

RESULTS_DIR = config.PROJ_ROOT / "benchmarks" / "results"


def latest(name: str) -> dict | None:
    """The most recently written result of benchmark ``name`` on any machine, or None."""
    found = sorted(RESULTS_DIR.glob(f"{name}-*.json"), key=lambda p: json.loads(p.read_text()).get("written_utc", ""))
    return json.loads(found[-1].read_text()) if found else None


def all_of(name: str) -> list[dict]:
    """Every machine's result of benchmark ``name`` (e.g. both machine kinds side by side)."""
    return [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob(f"{name}-*.json"))]
