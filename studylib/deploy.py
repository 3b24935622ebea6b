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
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from . import config, models, reference, runs, weights
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


def load(key: str, profile: str = "full", *, data_dir=None, weights_dir=None) -> Deployed:
    """Deployed row ``key`` from its finished run, or a Deployed whose status says why not."""
    if key not in ROW:
        raise KeyError(f"unknown study row {key!r}; choose one of {list(ROW)}")
    row = ROW[key]
    try:
        j = job(row, profile, data_dir=data_dir, weights_dir=weights_dir)
    except weights.WeightsUnavailable:
        return Deployed(row, NO_WEIGHTS)
    if not j.run.done:
        return Deployed(row, f"missing: run notebook {row.notebook} or `{j.command}`", run=j.run)
    if row.scratch:
        return Deployed(row, OK, scratch.load(j.run), j.run)
    model = heads.load(j.run, weights_dir=weights_dir)
    return Deployed(row, OK, model, j.run, weights=model.provenance)


_CACHE: dict[tuple, Deployed] = {}


def load_all(profile: str = "full", *, data_dir=None, weights_dir=None, keys: tuple[str, ...] | None = None,
             cached: bool = True) -> dict[str, Deployed]:
    """Every study row, in report order (loaded once per process when ``cached``)."""
    out = {}
    for key in keys or tuple(ROW):
        ck = (key, profile, str(data_dir), str(weights_dir), str(config.artifacts_dir()), runs.use_shipped())
        # "missing" rows are looked up again (the training notebook may have run since); rows without
        # weights are not: resolving them again can mean a download attempt per call.
        if not cached or ck not in _CACHE or _CACHE[ck].status.startswith("missing"):
            _CACHE[ck] = load(key, profile, data_dir=data_dir, weights_dir=weights_dir)
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
