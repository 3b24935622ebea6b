"""The strong recipe's CPU target, measured directly: one whole run, timed from the data to the test accuracy.

``--full-run`` trains studylib.recipes.strong once (seed 0; the full profile: 10 epochs over the 50,000
training images, bf16 autocast, then the 10,000 test images without and with TTA) on this machine's CPU
with ``--threads`` torch threads, and times it end to end: loading the CIFAR-10 files, whitening
initialisation, training, evaluation. It runs in a throw-away artifact store ($STUDY_ARTIFACTS pointed
at a fresh temporary folder and shipped runs ignored, both restored afterwards, the folder deleted):
nothing is reused, nothing is left behind, and it never stands in for the runs notebook 08 reports.

Writes benchmarks/results/strong_full_run-<cpu>-<UTC date>.json ($BENCH_RESULTS_DIR overrides the
folder) with test_acc (WITHOUT TTA, the study's number), test_acc_tta, wall_seconds, train_seconds,
images_per_s, the target (config.grid("strong"): cpu_target_acc, cpu_target_minutes) and target_met;
notebook 08 reads it with studylib.report.benchmarks_results.latest("strong_full_run"). Another profile
(``--profile quick``: a check of the script, seconds) is written as strong_<profile>_run-*.json, so
notebook 08 never takes it for the full run, and its target_met is null (the target is the full run's).

    python -m benchmarks.bench_strong --full-run                        # ~15-20 min on 2 quiet cores
    python -m benchmarks.bench_strong --full-run --profile quick --threads 1

(The old step-rate comparison with the Custom CNN is gone: benchmarks.bench_limits measures every
training stage against the machine's limits, and studylib.estimate times the strong step.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

from benchmarks import timing
from studylib import config, runs, runtime
from studylib.recipes import strong


@contextlib.contextmanager
def throwaway_store() -> Iterator[Path]:
    """For the block: $STUDY_ARTIFACTS = a fresh temporary folder and shipped runs ignored (a shipped run with the
    same key must not be "reused"); afterwards the variable and the mode restored and the folder deleted."""
    saved = os.environ.get(config.ARTIFACTS_DIR_ENV)
    with tempfile.TemporaryDirectory(prefix="strong-full-run-") as store, runs.mode(use_shipped=False):
        os.environ[config.ARTIFACTS_DIR_ENV] = store
        try:
            yield Path(store)
        finally:
            if saved is None:
                os.environ.pop(config.ARTIFACTS_DIR_ENV, None)
            else:
                os.environ[config.ARTIFACTS_DIR_ENV] = saved


def timed_run(profile: str, seed: int) -> tuple[dict, float]:
    """(metrics of one fresh strong run, wall seconds from loading the data to the finished run)."""
    with throwaway_store():
        t0 = time.perf_counter()
        run = strong.job(profile, seed=seed, device="cpu", progress=False).ensure(train=True)  # job() loads the data
        wall = time.perf_counter() - t0
        return dict(run.metrics), wall  # read before the store is deleted


def full_run(profile: str, seed: int, threads: int) -> dict:
    """Train, time, and describe one run (the payload written to the results file)."""
    h = config.recipe("strong", profile, seed=seed)
    g = config.grid("strong")  # the target is stated for the full profile
    load_note = runtime.check_machine_load("bench_strong --full-run")
    m, wall = timed_run(profile, seed)
    batch = min(h["batch_size"], m["train_n"])  # the recipe's step size (smaller only for tiny subsets)
    met = None
    if profile == "full":
        met = bool(m["test_acc"] >= g["cpu_target_acc"] and wall <= 60 * g["cpu_target_minutes"])
    return {"profile": profile, "seed": seed, "threads": threads,
            "test_acc": m["test_acc"], "test_acc_tta": m["test_acc_tta"], "tta_level": m["tta_level"],
            "wall_seconds": wall, "train_seconds": m["train_seconds"],
            "images_per_s": m["steps"] * batch / m["train_seconds"],  # training images per second
            "train_n": m["train_n"], "test_n": m["test_n"], "epochs": m["epochs"], "steps": m["steps"],
            "target": {"cpu_target_acc": g["cpu_target_acc"], "cpu_target_minutes": g["cpu_target_minutes"]},
            "target_met": met, "machine_load_note": load_note, "environment": m["environment"],
            "recipe": {k: v for k, v in h.items() if k != "label"}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full-run", action="store_true", required=True, help="train and time one whole run")
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the study's CPU target: 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = full_run(args.profile, args.seed, args.threads)
    t = result["target"]
    verdict = ("met" if result["target_met"] else "NOT met") if result["target_met"] is not None else \
        "not judged (the target is the full profile's)"
    print(f"strong recipe, {args.profile} profile, seed {args.seed}, CPU {args.threads} threads: "
          f"{100 * result['test_acc']:.2f}% without TTA ({100 * result['test_acc_tta']:.2f}% with) in "
          f"{result['wall_seconds'] / 60:.1f} min wall ({result['train_seconds'] / 60:.1f} min training at "
          f"{result['images_per_s']:.0f} images/s); target >= {100 * t['cpu_target_acc']:.0f}% in <= "
          f"{t['cpu_target_minutes']} min: {verdict}")
    # Limits measured after the run, at the run's thread count (quick ones for a non-full check).
    limits = timing.machine_limits(quick=args.profile != "full")
    name = "strong_full_run" if args.profile == "full" else f"strong_{args.profile}_run"
    print(f"wrote {timing.write_results(name, result, limits=limits)}")


if __name__ == "__main__":
    main()
