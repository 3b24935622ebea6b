"""Shipping finished runs with the project: their small outputs copied into ``runs/`` with a sha256 manifest,
checked before a report is rendered from them. Only this module writes ``runs/``; ``studylib.runs`` finds them.

    python -m studylib.ship               # ship every finished full-profile run of the shipped kinds
    python -m studylib.ship verify        # check runs/ against runs/MANIFEST.json
    verify_manifest()                     # the same check, from code (run_all.py, notebook 05)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from . import artifacts, config, runs

MANIFEST = "MANIFEST.json"
# Never shipped: resumable state and large caches (weights only for the runs whose models are deployed).
NOT_SHIPPED = ("checkpoint.pt", "features.pt")
MAX_SHIPPED_FILE = 1_000_000  # bytes: a small output (metrics, history, predictions, measurement tables)
# What runs/ may hold in all (bytes of the shipped files; runs/README.md, "Size"). Issue 16 first set 60 MB for two
# deployed scratch rows (~23 MB of weights); the reference-code recipe's rows (issue 14) are deployed rows too and
# add 22.7 MB, so every deployed row's weights now take 62.5 MB on their own. The fair grid (issue 26) re-trains the
# ImageNet fine-tuning cell with today's recipe: its weights (9.2 MB) sit beside the first grid's, whose numbers stay
# checkable (and which git history keeps anyway): 85 MB. Its second random-init cell and the L-BFGS probes at every
# data size (predictions only) took it past that: 90 MB.
SHIPPED_BUDGET = 90_000_000


def manifest_path() -> Path:
    return runs.shipped_root() / MANIFEST


def read_manifest() -> dict[str, dict]:
    path = manifest_path()
    return artifacts.read_json(path)["files"] if path.exists() else {}


def shipped_bytes() -> int:
    """Bytes of everything in runs/ (the shipped files, the manifest and the README)."""
    return sum(p.stat().st_size for p in runs.shipped_root().rglob("*") if p.is_file())


def ship(run: runs.Run, weights: bool = False) -> list[Path]:
    """Copy a finished store run's small outputs (every file up to 1 MB but checkpoints and caches; with
    ``weights`` its model.pt too) into ``runs/`` and record their sha256 in the manifest. Returns the
    files written."""
    if not (run.folder / run.marker).exists():
        raise FileNotFoundError(f"{run.kind}/{run.id} is not a finished run in the store; nothing to ship")
    names = sorted(p.name for p in run.folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name not in NOT_SHIPPED and p.name != runs.WEIGHTS_FILE and p.stat().st_size <= MAX_SHIPPED_FILE)
    if weights:
        if not (run.folder / runs.WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"{run.id} has no {runs.WEIGHTS_FILE} to ship")
        names.append(runs.WEIGHTS_FILE)
    manifest, written = read_manifest(), []
    for n in names:
        written.append(_ship_bytes(manifest, run, n, (run.folder / n).read_bytes()))
    _write_manifest(manifest)
    return written


def ship_file(run: runs.Run, name: str, content: bytes) -> Path:
    """Write a file generated for a finished shipped run (its deployable description, ``deploy.DESCRIPTION_FILE``)
    into its folder in ``runs/`` and record its sha256 in the manifest."""
    if not run.has_shipped_copy:
        raise FileNotFoundError(f"{run.kind}/{run.id} is not a shipped run; ship it first (python -m studylib.ship)")
    manifest = read_manifest()
    path = _ship_bytes(manifest, run, name, content)
    _write_manifest(manifest)
    return path


def _ship_bytes(manifest: dict, run: runs.Run, name: str, content: bytes) -> Path:
    dst = run.shipped_folder / name
    artifacts.write_bytes(dst, content)
    manifest[dst.relative_to(runs.shipped_root()).as_posix()] = {"sha256": artifacts.hash_file(dst),
                                                                 "bytes": dst.stat().st_size}
    return dst


def _write_manifest(manifest: dict) -> None:
    artifacts.write_json(manifest_path(), {"about": "sha256 of every shipped file (runs/README.md)",
                                           "files": dict(sorted(manifest.items()))})


class ShippedRunError(RuntimeError):
    """A shipped file differs from the manifest, or is missing."""


def verify_manifest() -> int:
    """Check every shipped file against ``runs/MANIFEST.json``; raises ``ShippedRunError`` naming the
    first file that is missing or whose sha256 differs. Returns the number of files checked."""
    files = read_manifest()
    for rel, rec in files.items():
        path = runs.shipped_root() / rel
        if not path.exists():
            raise ShippedRunError(f"shipped file runs/{rel} is missing (listed in runs/{MANIFEST}); restore it with "
                                  "git checkout -- runs/")
        digest = artifacts.hash_file(path)
        if digest != rec["sha256"]:
            raise ShippedRunError(f"shipped file runs/{rel} has sha256 {digest[:16]}…, the manifest records "
                                  f"{rec['sha256'][:16]}…: it was altered. Restore it (git checkout -- runs/) or "
                                  "retrain (python run_all.py --retrain).")
    unlisted = [p for p in runs.shipped_root().glob("*/*/*/*") if p.is_file()
                and p.relative_to(runs.shipped_root()).as_posix() not in files]
    if unlisted:
        print(f"note: {len(unlisted)} file(s) in runs/ are not in the manifest, e.g. {unlisted[0]}", file=sys.stderr)
    return len(files)


# Kinds of runs whose outputs are shipped (machine-specific measurements and caches are not).
# "timings" and "int8_latency" are measurements keyed by the machine (CPU model, threads, torch): a clone on a machine
# of the kind the report was published on reads them instead of timing every model again; another machine re-times.
SHIPPED_KINDS = ("scratch", "head", "calibration", "controlled_probe", "lbfgs_probe", "finetune", "strong", "robustness",
                 "int8", "timings", "int8_latency")


def carries_weights(run: runs.Run) -> bool:
    """Whether a finished run's model weights are shipped: the deployed rows (both scratch recipes at their
    recipe's seed, the transfer heads), one seed of each headline extra model (strong recipe, ImageNet
    fine-tuning: the grid's 15-epoch cell) and the grid's L-BFGS probes — all on the full training set. Everything else
    ships metrics and predictions only."""
    m, key = run.metrics, run.key
    whole = not (key.get("subset") or {}).get("per_class") and not (key.get("subset") or {}).get("val_fraction")
    if not whole or run.kind not in ("scratch", "head", "strong", "finetune", "lbfgs_probe"):
        return False
    if run.kind == "lbfgs_probe":  # 52 KB: every full-data probe of the grid, so each row can be checked
        return True
    recipe = config.RECIPES.get(m.get("recipe", ""), {})
    if run.kind == "scratch":
        return m.get("seed") == recipe.get("seed")
    if run.kind == "head":  # the transfer rows (probe seeds, flip heads, subsets: predictions only)
        return m.get("recipe") == "head" and m.get("seed") == recipe.get("seed")
    if run.kind == "strong":
        return m.get("seed") == config.grid("strong")["seeds"][0]
    # the grid's cell, not its training-budget points (the same init and seed at other epoch counts)
    return (m.get("init") == "imagenet" and m.get("seed") == config.grid("controlled")["seeds"][0]
            and (key.get("recipe") or {}).get("epochs") == config.RECIPES["finetune"]["epochs"])


def _stored(folder: Path) -> tuple[str, Any] | None:
    """(marker, key) of a finished run folder of any kind (metrics.json, a measurement's result.json, or a
    table with its meta.json), or None while unfinished."""
    for marker, holder in ((runs.MARKER, runs.MARKER), ("result.json", "result.json"), ("results.csv", "meta.json")):
        if (folder / marker).exists():
            return marker, artifacts.read_json(folder / holder)["key"]
    return None


def ship_all(profile: str = "full", kinds: tuple[str, ...] = SHIPPED_KINDS) -> list[Path]:
    """Ship every finished store run of ``kinds`` under ``profile`` (``carries_weights`` decides the weights)."""
    written = []
    for kind in kinds:
        root = config.artifacts_dir() / profile / kind
        for folder in sorted(root.iterdir()) if root.exists() else []:
            found = _stored(folder)
            if found is None:
                continue
            run = runs.Run(kind, folder.name.rpartition("-")[0], found[1], profile, marker=found[0])
            if run.folder != folder:  # its key no longer hashes to its name: never shipped under a wrong name
                print(f"skipped {kind}/{folder.name}: its key does not match its folder", file=sys.stderr)
                continue
            written += ship(run, weights=found[0] == runs.MARKER and carries_weights(run))
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m studylib.ship`` copies finished full-profile runs' small outputs into runs/ (with a sha256
    manifest); ``python -m studylib.ship verify`` checks runs/ against its manifest."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("action", nargs="?", choices=("ship", "verify"), default="ship")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--kinds", nargs="*", default=list(SHIPPED_KINDS))
    args = ap.parse_args(argv)
    if args.action == "verify":
        print(f"{verify_manifest()} shipped files match runs/{MANIFEST}")
        return
    written = ship_all(args.profile, tuple(args.kinds))
    total = shipped_bytes()
    print(f"shipped {len(written)} files; runs/ now holds {total / 1e6:.1f} MB of its {SHIPPED_BUDGET / 1e6:.0f} MB budget")
    if total > SHIPPED_BUDGET:
        print(f"warning: runs/ is over its budget by {(total - SHIPPED_BUDGET) / 1e6:.1f} MB: ship metrics and "
              "predictions only for the runs that added it (ship.carries_weights), or raise ship.SHIPPED_BUDGET "
              "with the reason in runs/README.md", file=sys.stderr)


if __name__ == "__main__":
    main()
