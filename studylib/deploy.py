"""The study's deployed models: every row of the benchmark table, loaded from its finished run (in
the artifact store or shipped in ``runs/``), as one uniform thing evaluation, Grad-CAM, the demo
and the command line use.

    rows = load_all("full")                      # {row key: Deployed}, in report order
    rows["mobilenet_v2"].model(images_uint8)     # (N, 3, 32, 32) uint8 -> (N, 10) logits
    rows["resnet18"].status                      # "not run: no pretrained weights"

Every deployed model takes CIFAR-sized uint8 RGB images and does its own preprocessing
(normalisation for the scratch models; upscale + the backbone's normalisation for transfer
models), exactly as it was trained. Loading never trains: a missing run gives a status that
names the command that computes it.

A run's folder is named by a hash of its key, and the keys hash the training images: to find a row's
run without CIFAR-10 (``python -m studylib.predict`` on a machine without the dataset), the index
``runs/DEPLOYED.json`` names each row's shipped run ({profile: {row: {kind, name, id}}}); it is written
by ``python -m studylib.deploy index`` on a machine with the dataset.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from . import artifacts, config, models, reference, runs, weights
from .models import backbones
from .recipes import heads, scratch

OK = "ok"
NO_WEIGHTS = "not run: no pretrained weights"


@dataclass(frozen=True)
class Row:
    """One row of the benchmark table: a model trained with a recipe."""
    key: str          # row id in results files
    model: str        # registered model name
    recipe: str       # config.RECIPES entry
    label: str
    notebook: str     # the notebook that trains it

    @property
    def scratch(self) -> bool:
        return self.model in ("custom_cnn", "vit_small")

    @property
    def strategy(self) -> str:
        return "from scratch" if self.scratch else "frozen ImageNet backbone + linear head"

    @property
    def reference_key(self) -> str | None:
        """The reference's published row this row is compared with (study and reference-code rows alike)."""
        return self.model if self.model in reference.load_reference()["models"] else None


ROWS: tuple[Row, ...] = (
    Row("custom_cnn", "custom_cnn", "study", "Custom CNN (study recipe)", "02_scratch_cnn"),
    Row("custom_cnn_refcode", "custom_cnn", "reference_code", "Custom CNN (reference code)", "02_scratch_cnn"),
    Row("vit_small", "vit_small", "study", "ViT-Small (study recipe)", "04_vit"),
    Row("vit_small_refcode", "vit_small", "reference_code", "ViT-Small (reference code)", "04_vit"),
    Row("mobilenet_v2", "mobilenet_v2", "head", "MobileNetV2", "03_transfer"),
    Row("mobilenet_v2_float", "mobilenet_v2_float", "head", "MobileNetV2 (float weights)", "03_transfer"),
    Row("resnet18", "resnet18", "head", "ResNet-18", "03_transfer"),
    Row("efficientnet_b0", "efficientnet_b0", "head", "EfficientNet-B0", "03_transfer"),
    Row("efficientnet_lite0", "efficientnet_lite0", "head", "EfficientNet-Lite0", "03_transfer"),
)
ROW = {r.key: r for r in ROWS}
LABELS = {r.key: r.label for r in ROWS}


@dataclass
class Deployed:
    row: Row
    status: str                        # OK, NO_WEIGHTS, or "missing: ..." naming the command to run
    model: nn.Module | None = None     # eval mode, CPU, uint8 32x32 images -> logits
    run: runs.Run | None = None
    weights: dict | None = None        # transfer rows: provenance of the ImageNet weights file found
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.row.key

    @property
    def label(self) -> str:
        return self.row.label

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def metrics(self) -> dict:
        return self.run.metrics if self.run is not None and self.run.done else {}

    @property
    def strategy(self) -> str:
        return self.row.strategy


def job(row: Row, profile: str, *, data_dir=None, device: str = "auto", weights_dir=None) -> runs.Job:
    """The training job of ``row`` (raises WeightsUnavailable for a transfer row without weights)."""
    if row.scratch:
        return scratch.job(row.model, row.recipe, profile, data_dir=data_dir, device=device)
    return heads.row_job(row.model, profile, row.recipe, data_dir=data_dir, device=device, weights_dir=weights_dir)


# ---------------------------------------------------------------------------------------
# The index of deployed runs (row -> run id): loading without the dataset
# ---------------------------------------------------------------------------------------
INDEX_FILE = "DEPLOYED.json"


def index_path() -> Path:
    return runs.shipped_root() / INDEX_FILE


def read_index(profile: str) -> dict[str, dict]:
    path = index_path()
    return artifacts.read_json(path).get(profile, {}) if path.is_file() else {}


def indexed_run(key: str, profile: str) -> runs.Run | None:
    """The finished run the index names for row ``key``, rebuilt from the key stored in its folder (no
    dataset needed); None when the row is not indexed or its run is not here."""
    entry = read_index(profile).get(key)
    if not entry:
        return None
    folders = [config.artifacts_dir() / profile / entry["kind"] / entry["id"]]
    if runs.use_shipped():
        folders.append(runs.shipped_root() / profile / entry["kind"] / entry["id"])
    for folder in folders:
        if (folder / runs.MARKER).is_file():
            run = runs.Run(entry["kind"], entry["name"], artifacts.read_json(folder / runs.MARKER)["key"], profile)
            if run.id == entry["id"] and run.done:
                return run
    return None


def write_index(profile: str = "full", *, data_dir=None, weights_dir=None) -> Path:
    """Record each row's shipped run in ``runs/DEPLOYED.json`` (keys computed from the dataset, so this needs
    CIFAR-10); a row whose run cannot be keyed here (no weights) keeps its previous entry."""
    path = index_path()
    index = artifacts.read_json(path) if path.is_file() else {}
    entries = index.setdefault(profile, {})
    for row in ROWS:
        try:
            run = job(row, profile, data_dir=data_dir, weights_dir=weights_dir).run
        except weights.WeightsUnavailable:
            continue
        if run.done and run.shipped:
            entries[row.key] = {"kind": run.kind, "name": run.name, "id": run.id}
        else:
            entries.pop(row.key, None)
    return artifacts.write_json(path, index)


def load(key: str, profile: str = "full", *, data_dir=None, weights_dir=None, indexed: bool = False) -> Deployed:
    """Deployed row ``key`` from its finished run, or a Deployed whose status says why not. ``indexed``:
    the run named by ``runs/DEPLOYED.json`` when it lists the row (no dataset needed); otherwise the run is
    found by its key, which needs CIFAR-10 (``data.DataError`` without it)."""
    if key not in ROW:
        raise KeyError(f"unknown study row {key!r}; choose one of {list(ROW)}")
    row = ROW[key]
    run = indexed_run(key, profile) if indexed else None
    if run is None:
        try:
            j = job(row, profile, data_dir=data_dir, weights_dir=weights_dir)
        except weights.WeightsUnavailable:
            return Deployed(row, NO_WEIGHTS)
        if not j.run.done:
            return Deployed(row, f"missing: run notebook {row.notebook} or `{j.command}`", run=j.run)
        run = j.run
    if row.scratch:
        return Deployed(row, OK, scratch.load(run), run)
    try:
        model = heads.load(run, weights_dir=weights_dir)
    except weights.WeightsUnavailable:
        return Deployed(row, NO_WEIGHTS, run=run)
    return Deployed(row, OK, model, run, weights=model.provenance)


_CACHE: dict[tuple, Deployed] = {}


def load_all(profile: str = "full", *, data_dir=None, weights_dir=None, keys: tuple[str, ...] | None = None,
             cached: bool = True, indexed: bool = False) -> dict[str, Deployed]:
    """Every study row, in report order (loaded once per process when ``cached``); ``indexed`` as for ``load``."""
    out = {}
    for key in keys or tuple(ROW):
        ck = (key, profile, str(data_dir), str(weights_dir), str(config.artifacts_dir()), runs.use_shipped(), indexed)
        # "missing" rows are looked up again (the training notebook may have run since); rows without
        # weights are not: resolving them again can mean a download attempt per call.
        if not cached or ck not in _CACHE or _CACHE[ck].status.startswith("missing"):
            _CACHE[ck] = load(key, profile, data_dir=data_dir, weights_dir=weights_dir, indexed=indexed)
        out[key] = _CACHE[ck]
    return out


def reference_row(key: str) -> dict | None:
    """The reference's published row that study row ``key`` is compared with (None: no such row)."""
    ref = ROW[key].reference_key
    return reference.load_reference()["models"].get(ref) if ref else None


def architecture_counts(key: str) -> dict:
    """Trainable / total parameters of row ``key``'s architecture (no weights needed)."""
    row = ROW[key]
    if row.scratch:
        return models.count_params(scratch.build(row.model, config.recipe(row.recipe)))
    return models.count_params(backbones.build_transfer(row.model, init=None))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.deploy", description="The index of deployed runs.")
    sub = ap.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help=f"write runs/{INDEX_FILE}: each row's shipped run (needs CIFAR-10)")
    ix.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ix.add_argument("--data-dir", default=None)
    ix.add_argument("--weights-dir", default=None)
    args = ap.parse_args(argv)
    path = write_index(args.profile, data_dir=args.data_dir, weights_dir=args.weights_dir)
    rows = read_index(args.profile)
    print(f"{config.display_path(path)}: {len(rows)} of {len(ROWS)} rows for profile {args.profile!r} "
          f"({', '.join(rows)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
