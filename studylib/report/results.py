"""The one writer (and reader) of the report's machine-readable results: ``<reports>/results/<profile>/``, so a
quick run never touches the full profile's files. Every write is atomic (temp file + rename).

    out = results_dir("full")                          # <project>/reports/results/full
    out = results_dir("quick", "../reports/published/results/quick")   # a folder run_all.py passes
    write_csv(out, "strong", table)                    # <out>/strong.csv
    write_json(out, "bottom_line", {"lines": [...]})   # <out>/bottom_line.json
    read_csv(out, "benchmark")                         # a DataFrame, or None when that notebook has not run
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .. import artifacts, config

RESULTS_DIR = config.REPORTS_DIR / "results"


def results_dir(profile: str, path: str | Path = "") -> Path:
    """``path`` when given (run_all.py passes ``<report>/results/<profile>``), else ``reports/results/<profile>``."""
    config.get_profile(profile)  # an unknown profile is an error here, not a new folder
    return Path(path) if str(path) else RESULTS_DIR / profile


def write_csv(out_dir: str | Path, name: str, table: pd.DataFrame, index: bool = False) -> None:
    """``<out_dir>/<name>.csv``, written atomically (returns nothing: a notebook cell ending with it shows no path)."""
    artifacts.write_bytes(Path(out_dir) / f"{name}.csv", table.to_csv(index=index).encode())


def write_json(out_dir: str | Path, name: str, obj: Any) -> None:
    """``<out_dir>/<name>.json``, written atomically (``name`` may hold a sub-folder: ``models/custom_cnn``)."""
    artifacts.write_json(Path(out_dir) / f"{name}.json", obj)


def read_csv(out_dir: str | Path, name: str) -> pd.DataFrame | None:
    """``<out_dir>/<name>.csv`` as written by ``write_csv``, or None when it does not exist."""
    path = Path(out_dir) / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def read_all(out_dir: str | Path, names) -> dict[str, pd.DataFrame | None]:
    """``{name: read_csv(out_dir, name)}`` for each of ``names`` (e.g. ``report.RECONCILED``)."""
    return {name: read_csv(out_dir, name) for name in names}


def save_predictions(out_dir: str | Path, name: str, finished_runs) -> None:
    """Every run's per-example test predictions in one compressed file ``<out_dir>/<name>.npz``: arrays
    ``<run id>/<field>``."""
    from .. import runs

    arrays = {f"{r.id}/{k}": v for r in finished_runs for k, v in r.predictions().items()}
    runs.save_predictions(Path(out_dir) / f"{name}.npz", **arrays)


def write_evaluation_results(out_dir: str | Path, bench: pd.DataFrame, per_class: pd.DataFrame, int8: pd.DataFrame,
                             findings: list[str], recheck: pd.DataFrame, rows: dict, profile: str, hw: dict,
                             ev: dict) -> None:
    """Notebook 05's machine-readable results: benchmark.csv/.json, per_class.csv, int8.csv,
    reevaluation.csv and models/<row>.json (provenance of the run behind each row)."""
    from .. import runtime

    env = {**hw, "threads": ev["threads"], "profile": profile, "evaluation": ev,
           "ci_method": "Wilson score interval, 95%", "size_unit": "MB = 1e6 bytes of torch.save(state_dict)"}
    write_csv(out_dir, "benchmark", bench, index=True)
    write_json(out_dir, "benchmark", {"environment": env, "rows": bench.reset_index().to_dict("records"),
                                      "findings": findings})
    write_csv(out_dir, "per_class", per_class)
    write_csv(out_dir, "int8", int8)
    write_csv(out_dir, "reevaluation", recheck, index=True)
    for label, row in bench.iterrows():
        key = row["key"]
        payload = {"model": key, "label": label, **row.drop("key").to_dict(), "environment": env}
        d = rows[key]
        if d.ok:
            payload.update(run=d.run.id, weights=d.weights, training_environment=d.metrics.get("environment"),
                           trained_on=runtime.device_label(d.metrics))
        write_json(out_dir, f"models/{key}", payload)
