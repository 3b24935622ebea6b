"""The study's deployed models: every row of the study, loaded from the artifacts its training
notebook wrote, as one uniform thing evaluation, Grad-CAM and the demo can use.

    rows = load_all("full")                      # {name: Deployed}, in report order
    rows["mobilenet_v2"].model(images_uint8)     # (N, 3, 32, 32) uint8 -> (N, 10) logits
    rows["resnet18"].status                      # "not run: no pretrained weights"

Every deployed model takes CIFAR-sized uint8 RGB images and does its own preprocessing
(normalisation for the scratch models; upscale + the backbone's normalisation for transfer
models), exactly as it was trained. Loading never trains: a missing run gives a status that
names the notebook to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import artifacts, config, models, reference, weights

# Report order: the reference's rows, then the extra weight file and EfficientNet-Lite0.
STUDY_MODELS = ("custom_cnn", "vit_small", "mobilenet_v2", "mobilenet_v2_float", "resnet18", "efficientnet_b0",
                "efficientnet_lite0")
SCRATCH = ("custom_cnn", "vit_small")
NOTEBOOK = {"custom_cnn": "02_scratch_cnn", "vit_small": "04_vit"}  # the rest: 03_transfer
LABELS = {"custom_cnn": "Custom CNN", "vit_small": "ViT-Small", "mobilenet_v2": "MobileNetV2",
          "mobilenet_v2_float": "MobileNetV2 (float weights)", "resnet18": "ResNet-18",
          "efficientnet_b0": "EfficientNet-B0", "efficientnet_lite0": "EfficientNet-Lite0"}
OK = "ok"
NO_WEIGHTS = "not run: no pretrained weights"


def notebook_of(name: str) -> str:
    return NOTEBOOK.get(name, "03_transfer")


class Normalized(nn.Module):
    """A scratch model behind its input normalisation: uint8 (or 0-1 float) images in, logits out."""

    def __init__(self, net: nn.Module, mean=config.CIFAR10_MEAN, std=config.CIFAR10_STD):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the network's normalised input (named like TransferNet.preprocess)."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))


@dataclass
class Deployed:
    name: str
    status: str                        # OK, NO_WEIGHTS, or "missing: ..." naming the notebook to run
    model: nn.Module | None = None     # eval mode, CPU, uint8 32x32 images -> logits
    run_dir: Path | None = None
    metrics: dict = field(default_factory=dict)
    weights: dict | None = None        # transfer rows: provenance of the ImageNet weights file found

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def strategy(self) -> str:
        return "from scratch" if self.name in SCRATCH else "frozen ImageNet backbone + linear head"

    @property
    def notebook(self) -> str:
        return notebook_of(self.name)

    def test_logits(self) -> torch.Tensor:
        """The run's saved test-set logits (float32, in the profile's test order)."""
        return torch.load(self.run_dir / "test_logits.pt", map_location="cpu")


def find_run(profile: str, name: str, seed: int | None = None) -> Path:
    """The newest finished training run of ``name`` under ``profile`` with the protocol's settings
    (seed, epochs and data sizes of the profile; ``seed`` overrides the profile's)."""
    cfg = config.get_profile(profile, **({} if seed is None else {"seed": seed}))
    root = config.artifacts_dir() / profile / "train"
    wanted = {k: cfg[k] for k in ("seed", "epochs", "train_per_class", "test_per_class")}
    matches = []
    for marker in root.glob(f"{name}-*/metrics.json"):
        key = artifacts.read_json(marker).get("key", {})
        if all(key.get(k) == v for k, v in wanted.items()):
            matches.append(marker)
    if not matches:
        raise FileNotFoundError(
            f"no finished run of {name!r} for profile {profile!r} ({wanted}) under {root}; run notebook "
            f"{notebook_of(name)} first (python run_all.py --profile {profile} --only {notebook_of(name)[:2]}).")
    return max(matches, key=lambda p: p.stat().st_mtime).parent


def load(name: str, profile: str = "full", *, seed: int | None = None, weights_dir=None) -> Deployed:
    """Deployed model ``name`` from its finished run, or a Deployed whose status says why not."""
    if name not in STUDY_MODELS:
        raise KeyError(f"unknown study model {name!r}; choose one of {STUDY_MODELS}")
    model = provenance = None
    if name not in SCRATCH:
        from . import transfer

        try:
            model = transfer.build_transfer(name, weights_dir=weights_dir)  # resolves the weights once
        except weights.WeightsUnavailable:
            return Deployed(name, NO_WEIGHTS)
        provenance = model.provenance
    try:
        run = find_run(profile, name, seed)
    except FileNotFoundError as exc:
        return Deployed(name, f"missing: run notebook {notebook_of(name)} ({exc})", weights=provenance)
    metrics = artifacts.read_json(run / "metrics.json")
    if name in SCRATCH:
        net = models.build_model(name)
        net.load_state_dict(torch.load(run / "model.pt", map_location="cpu"))
        model = Normalized(net)
    else:
        used = metrics["weights"]["sha256"]
        if provenance["sha256"] != used:
            return Deployed(name, f"missing: run notebook 03_transfer (the run in {run} used weights "
                                  f"{used[:12]}, the file found now is {provenance['sha256'][:12]})", weights=provenance)
        model.head.load_state_dict(torch.load(run / "model.pt", map_location="cpu"))
    return Deployed(name, OK, model.eval(), run, metrics, weights=provenance)


_CACHE: dict[tuple, Deployed] = {}


def load_all(profile: str = "full", *, seed: int | None = None, weights_dir=None,
             names: tuple[str, ...] = STUDY_MODELS, cached: bool = True) -> dict[str, Deployed]:
    """Every study model, in report order (loaded once per process when ``cached``)."""
    out = {}
    for name in names:
        key = (name, profile, seed, str(weights_dir), str(config.artifacts_dir()))
        # "missing" rows are looked up again (the training notebook may have run since); rows without
        # weights are not: resolving them again can mean a download attempt per call.
        if not cached or key not in _CACHE or _CACHE[key].status.startswith("missing"):
            _CACHE[key] = load(name, profile, seed=seed, weights_dir=weights_dir)
        out[name] = _CACHE[key]
    return out


def reference_row(name: str) -> dict | None:
    """The reference's published row for ``name`` (None for rows the reference did not have)."""
    return reference.load_reference()["models"].get(name)
