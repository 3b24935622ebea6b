"""Model registry: every architecture of the study, registered when this package is imported.

    build_model("custom_cnn")                                  # keyword-only builders behind one registry
    build_model("vit_small", norm_first=False, dropout=0.1)    # a recipe's architecture settings
    build_model("mobilenet_v2")                                # genuine ImageNet weights or WeightsUnavailable

Scratch models (``scratch``), ImageNet backbones with their heads (``backbones``) and the strong
recipe's network (``strong``) all register here on import; there is no lazy registration.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn: Callable[..., nn.Module]):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = fn
        return fn
    return deco


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def count_params(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


class Normalized(nn.Module):
    """A network behind its input normalisation: uint8 32x32 images in, logits out (scratch and strong
    models; transfer models are ``backbones.TransferNet``)."""

    def __init__(self, net: nn.Module, preprocess: nn.Module):
        super().__init__()
        self.net, self.preprocess = net, preprocess

    def forward(self, x):
        return self.net(self.preprocess(x))


from . import backbones, scratch, strong  # noqa: E402,F401  (registers every builder)
