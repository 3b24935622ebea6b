"""INT8 post-training quantization of the deployed models (CPU, PyTorch's x86 backend).

    dynamic_int8(model)                        # nn.Linear weights int8, activations quantized on the fly
    static_int8(name, model, calib_images)     # convolutions + linears int8 via FX graph mode,
                                               # activation ranges observed on calibration images

Both return a new model with the same interface as the deployed one (uint8 32x32 images in,
logits out); preprocessing stays float. Static quantization needs a symbolically traceable
network: the Custom CNN and the torchvision backbones are. The ViT (``len`` of a proxy in its
attention reshapes) and EfficientNet-Lite0 (every convolution's TF-"SAME" padding branches on
the input shape) are not: they get dynamic quantization only.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping, quantize_dynamic
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from . import deploy

BACKEND = "x86"  # fbgemm + oneDNN kernels; the CPU engine of this machine class
STATIC_SUPPORTED = ("custom_cnn", "mobilenet_v2", "mobilenet_v2_float", "resnet18", "efficientnet_b0")


@contextlib.contextmanager
def _quiet():
    """torch.ao.quantization warns on every call that it is deprecated in favour of torchao (not
    installable offline here); the API works in the pinned torch, so the report is kept readable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*(quantized tensor creation|reduce_range will be deprecated)",
                                category=UserWarning)
        yield


def dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every nn.Linear dynamically quantized to int8 weights."""
    with _quiet():
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def _body_attr(name: str) -> str:
    """The float sub-network static quantization replaces inside a deployed model."""
    return "net" if name in deploy.SCRATCH else "backbone"


@torch.no_grad()
def static_int8(name: str, model: nn.Module, calib_images: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """A copy of deployed study model ``name`` whose network body is statically quantized to int8:
    observers inserted by FX graph mode, activation ranges calibrated on ``calib_images`` (uint8,
    training images: never the test set), then converted. The transfer head stays float."""
    if name not in STATIC_SUPPORTED:
        raise ValueError(f"static INT8 is not available for {name!r} (not FX-traceable); use dynamic_int8. "
                         f"Static works for {STATIC_SUPPORTED}.")
    if len(calib_images) == 0:
        raise ValueError("static_int8 needs calibration images (a few hundred training images)")
    torch.backends.quantized.engine = BACKEND
    q = copy.deepcopy(model).eval()
    attr = _body_attr(name)
    body = getattr(q, attr)
    example = q.preprocess(calib_images[:1])  # what the body sees: the model's own float preprocessing
    with _quiet():
        prepared = prepare_fx(body, get_default_qconfig_mapping(BACKEND), (example,))
        setattr(q, attr, prepared)
        for start in range(0, len(calib_images), batch_size):
            q(calib_images[start:start + batch_size])   # observers record activation ranges
        setattr(q, attr, convert_fx(prepared))
    return q.eval()
