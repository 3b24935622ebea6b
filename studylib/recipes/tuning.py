"""One rule for every hyper-parameter the study chooses (a learning rate, a probe's L2 strength): a log grid
on the half-decade ladder (1, 3, 10, 30, ... x 10^k), extended past whichever edge holds the best value
until the best has a measured, worse neighbour on each side, scored on a validation split held out of the
training images, never the test set. Both sides of a comparison are tuned by the same rule, so neither gets
an edge-of-grid value the other does not.

    table = extend_until_interior((3e-4, 1e-3, 3e-3), measure, column="lr", max_extensions=3)
    choice(table, "lr")   # {"lr": 1e-3, "interior": True, "edge": None}
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import pandas as pd

SCORE = "val_acc"  # validation accuracy: higher is better


def next_value(v: float, *, up: bool) -> float:
    """The neighbour of ``v`` on the half-decade ladder 1, 3, 10, 30, ... x 10^k (a log grid of step ~3.16)."""
    k = math.floor(math.log10(v) + 1e-9)
    ladder = [float(f"{m}e{e}") for e in (k - 1, k, k + 1) for m in (1, 3)]  # exact decimals: 3e-1, not 0.30000000000000004
    return min(x for x in ladder if x > v * 1.5) if up else max(x for x in ladder if x < v / 1.5)


def choice(table: pd.DataFrame, column: str, score: str = SCORE) -> dict:
    """The best ``score`` of a search table (the smaller value on a tie) and where it sits:
    {column: value, "interior": both neighbours measured and worse, "edge": "top" | "bottom" | None}."""
    if table.empty:
        return {column: None, "interior": False, "edge": None}
    t, best = _best(table, column, score)
    edge = "bottom" if best == 0 else "top" if best == len(t) - 1 else None
    interior = edge is None and t[score][best - 1] < t[score][best] and t[score][best + 1] < t[score][best]
    return {column: float(t[column][best]), "interior": bool(interior), "edge": edge}


def plateau_edge(table: pd.DataFrame, column: str, score: str = SCORE) -> str | None:
    """The grid edge ("top" | "bottom") that the values tying the best reach, or None: a best that ties its
    neighbour is not interior, and where its plateau reaches an edge the search could still move past it."""
    if table.empty:
        return None
    t, best = _best(table, column, score)
    lo = hi = best
    while lo > 0 and t[score][lo - 1] == t[score][best]:
        lo -= 1
    while hi < len(t) - 1 and t[score][hi + 1] == t[score][best]:
        hi += 1
    return "bottom" if lo == 0 else "top" if hi == len(t) - 1 else None


def _best(table: pd.DataFrame, column: str, score: str) -> tuple[pd.DataFrame, int]:
    t = table.sort_values(column, ignore_index=True)
    return t, int(t.sort_values([score, column], ascending=[False, True]).index[0])


def extend_until_interior(start: Sequence[float], measure: Callable[[float], dict | None], *, column: str,
                          max_extensions: int, score: str = SCORE) -> pd.DataFrame:
    """``measure(value)`` (a row with ``score``; None when that value has not been measured and may not be
    now) for each value of ``start``, then one half-decade past the edge that the best (or a value tying it) sits
    at, one at a time, until the best is interior, its tie is inside the grid, or ``max_extensions`` values were
    added. Where a round has a None, the search stops after that round (every value of the round is still asked
    for, so a planner sees them all): the table is the search as far as it has run, and ``table.attrs["complete"]``
    is False (``complete``). Rows sorted by ``column``."""
    grid, rows, tried = sorted(start), [], set()
    while True:
        missing = False
        for v in [v for v in grid if v not in tried]:
            tried.add(v)
            row = measure(v)
            if row is None:
                missing = True
                continue
            rows.append({column: v, **row})
        if missing:
            return _table(rows, column, complete=False)
        table = pd.DataFrame(rows)
        c = choice(table, column, score)
        edge = c["edge"] or plateau_edge(table, column, score)  # the best, or a value tying it
        if c["interior"] or edge is None or len(grid) - len(start) >= max_extensions:
            return _table(rows, column, complete=True)
        grid = sorted([*grid, next_value(max(grid) if edge == "top" else min(grid), up=edge == "top")])


def _table(rows: list[dict], column: str, *, complete: bool) -> pd.DataFrame:
    t = pd.DataFrame(rows)
    t = t.sort_values(column, ignore_index=True) if rows else t
    t.attrs["complete"] = complete
    return t


def complete(table: pd.DataFrame) -> bool:
    """Whether a search of ``extend_until_interior`` has finished by its rule (a table from elsewhere, e.g. read
    back from a results file, counts as finished): only then is its choice the choice; a search still running
    may yet move it, so nothing may be trained at its provisional best."""
    return bool(table.attrs.get("complete", True))
