"""The reference study's published figures (``reference.json``): one data file, read-only.

    ref = load_reference()
    ref["models"]["mobilenet_v2"]["test_acc_pct"]   # 86.91, the reference's number, not ours
    reference_table()                               # a DataFrame for showing beside our results

These numbers were typed from the reference's results table; every number this project
reports itself is read from a run's artifacts.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

REFERENCE_FILE = Path(__file__).with_name("reference.json")


@lru_cache(maxsize=1)
def _raw() -> dict:
    return json.loads(REFERENCE_FILE.read_text())


def load_reference() -> dict:
    """``{"models": {key: row}, "confusion_pairs": [rows], "source": ...}`` (a fresh copy each call)."""
    raw = json.loads(json.dumps(_raw()))
    return {"source": raw["source"], "test_set": raw["test_set"], "repository": raw["repository"],
            "commit": raw["commit"], "models": {row["key"]: row for row in raw["models"]},
            "confusion_pairs": raw["confusion_pairs"]["rows"], "confusion_pairs_about": raw["confusion_pairs"]["_about"]}


def reference_table():
    """The reference's model rows as a DataFrame, columns labelled as the reference's."""
    import pandas as pd

    rows = [{"model": r["key"], "reference model": r["label"], "reference strategy": r["strategy"],
             "reference test acc (%)": r["test_acc_pct"], "reference trainable params": r["params_trainable"],
             "reference total params": r["params_total"], "where the figure comes from": r["provenance"]}
            for r in _raw()["models"]]
    return pd.DataFrame(rows).set_index("model")
