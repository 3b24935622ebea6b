"""Accuracy of the deployed study models under CIFAR-10-C-style corruptions (studylib.data.corruptions).

    rows = deploy.load_all(profile)
    table = robustness.evaluate_all(rows, profile)   # one row per model x corruption x severity (+ clean)

Evaluation never trains. Each model's table is an artifact keyed by its training run, the test
subset, the grid and this module's version, so a re-run reuses it.
"""

from __future__ import annotations

import sys
import time

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import artifacts, config, data, runs, runtime
from ..data import corruptions
from ..recipes import engine, features

ROBUSTNESS_VERSION = 1
PRECISION = "bf16"   # autocast, as the study's feature extraction and training evaluation


def test_subset(profile: str, data_dir=None) -> data.CifarSplit:
    """The stratified test subset of the robustness grid (drawn from the profile's test split)."""
    g = config.grid("robustness", profile)
    _, test = data.load_profile_data(config.get_profile(profile), data_dir or None)
    per_class = min(g["test_per_class"], int(torch.bincount(test.labels).min()))
    return test.subset(data.stratified_subset(test.labels, per_class, g["seed"]))


def evaluate_model(name: str, model: nn.Module, run_id: str, subset: data.CifarSplit, profile: str, *,
                   device: str = "cpu", progress: bool | None = None) -> pd.DataFrame:
    """Accuracy of ``model`` on the clean subset and every (corruption, severity) of the grid."""
    g = config.grid("robustness", profile)
    key = {"model": name, "run": run_id, "version": ROBUSTNESS_VERSION, "precision": PRECISION,
           "images": artifacts.hash_tensor(subset.images), "labels": artifacts.hash_tensor(subset.labels),
           "corruptions": list(g["corruptions"]), "severities": list(g["severities"]), "seed": g["seed"],
           "params": {c: corruptions.PARAMS[c] for c in g["corruptions"]}}
    run = runs.Run("robustness", name, key, profile, marker="results.csv")

    def fit(run: runs.Run) -> None:
        conditions = [("clean", 0)] + [(c, s) for c in g["corruptions"] for s in g["severities"]]
        rows = []
        bar = progress if progress is not None else sys.stderr.isatty()
        for corruption, severity in tqdm(conditions, desc=f"{name} corruptions", leave=False, disable=not bar):
            x = subset.images if corruption == "clean" else corruptions.corrupt(subset.images, corruption, severity,
                                                                                g["seed"])
            t0 = time.perf_counter()
            logits = engine.batched_logits(model, x, device=device, precision=PRECISION, batch_size=features.model_batch(
                model, PRECISION, runtime.resolve_device(device)))
            rows.append({"model": name, "corruption": corruption, "severity": severity,
                         "acc": (logits.argmax(1) == subset.labels).float().mean().item(), "images": len(x),
                         "seconds": time.perf_counter() - t0})
        artifacts.write_json(run.folder / "meta.json", {"key": key, "device": str(runtime.resolve_device(device)),
                                                        "environment": runtime.environment()})
        run.write_marker(pd.DataFrame(rows).to_csv(index=False).encode())

    return pd.read_csv(run.ensure(fit).path("results.csv"))

def evaluate_all(deployed: dict, profile: str, *, data_dir=None, device: str = "cpu",
                 progress: bool | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every deployed model that is ok; the others come back as {name: status}."""
    subset = test_subset(profile, data_dir)
    tables, skipped = [], {}
    for name, row in deployed.items():
        if not row.ok:
            skipped[name] = row.status
            continue
        tables.append(evaluate_model(name, row.model, row.run.id, subset, profile, device=device, progress=progress))
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), skipped


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: clean accuracy, mean accuracy over every corruption and severity, and their ratio."""
    clean = table[table.corruption == "clean"].set_index("model").acc.rename("clean_acc")
    corrupted = table[table.corruption != "clean"].groupby("model").acc.mean().rename("mean_corrupted_acc")
    out = pd.concat([clean, corrupted], axis=1)
    out["relative"] = out.mean_corrupted_acc / out.clean_acc
    return out


def main(argv=None) -> None:
    """``python -m studylib.measure.robustness --profile full``: evaluate (or reuse) every deployed model."""
    from ..serve import deploy

    args = runs.parse_command(runs.command_parser(main.__doc__, argv), argv)
    table, skipped = evaluate_all(deploy.load_all(args.profile), args.profile, device=args.device)
    print(summarize(table))
    print("skipped:", skipped)


if __name__ == "__main__":
    main()
