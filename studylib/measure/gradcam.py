"""Grad-CAM (Selvaraju et al. 2017) with forward hooks: which parts of the image drove a class score.

    cam = GradCAM(model, layer)                 # any module whose output is (N, C, H, W)
    maps, logits = cam(images)                  # maps (N, H_in, W_in) in [0, 1], for the predicted class
    maps = for_model("mobilenet_v2", deployed_model, images_uint8)

The map is ReLU(sum_c w_c A_c) with w_c the spatial mean of d score / d A_c, upsampled
(bilinear) to the input image's size and scaled to [0, 1] per image. Frozen backbones work:
the hooked activation is re-entered into the graph as a leaf that requires grad, so no
parameter gradient is needed. Token models pass ``reshape`` to turn (N, tokens, D) into
(N, D, h, w).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class GradCAM:
    def __init__(self, model: nn.Module, layer: nn.Module,
                 reshape: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model, self.layer, self.reshape = model, layer, reshape
        self._act: torch.Tensor | None = None

    def _hook(self, module, inputs, output):
        act = output.detach().requires_grad_(True)  # a leaf: gradients reach it even with frozen weights
        self._act = act
        return act

    def __call__(self, images: torch.Tensor, class_idx: torch.Tensor | int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (N, H_in, W_in) in [0, 1] for ``class_idx`` (default: each image's predicted class)
        and the logits (N, classes). The model runs in eval mode, fp32."""
        was_training = self.model.training
        self.model.eval()
        handle = self.layer.register_forward_hook(self._hook)
        try:
            with torch.enable_grad():
                logits = self.model(images)
                if self._act is None:
                    raise RuntimeError("Grad-CAM: the target layer never ran in the forward pass; "
                                       "pick a module that is part of the model's forward().")
                target = (logits.argmax(1) if class_idx is None
                          else torch.as_tensor(class_idx).reshape(-1).expand(len(images)))
                score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
                (grad,) = torch.autograd.grad(score, self._act)
        finally:
            handle.remove()
            self.model.train(was_training)
        act, grad = self._act.detach(), grad.detach()
        self._act = None
        if self.reshape is not None:
            act, grad = self.reshape(act), self.reshape(grad)
        if act.dim() != 4:
            raise ValueError(f"Grad-CAM needs a (N, C, H, W) activation, got shape {tuple(act.shape)}; "
                             "pass reshape= for token models.")
        weights = grad.float().mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * act.float()).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
        flat = cam.flatten(1)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        cam = ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(cam)
        return cam, logits.detach().float()


def vit_tokens_to_grid(x: torch.Tensor) -> torch.Tensor:
    """(N, 1 + h*w, D) with a leading class token -> (N, D, h, w)."""
    tokens = x[:, 1:]
    side = int(round(tokens.shape[1] ** 0.5))
    if side * side != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} patch tokens do not form a square grid")
    return tokens.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


def target_layer(model: nn.Module) -> tuple[nn.Module, Callable | None]:
    """The layer Grad-CAM looks at in a deployed study model (studylib.serve.deploy): the last
    convolutional block, or for the ViT the last encoder's first LayerNorm (its patch tokens still
    carry gradient: the block's output tokens other than the class token do not)."""
    from ..models import backbones, scratch, strong

    net = getattr(model, "net", None)
    if isinstance(net, scratch.CustomCNN):
        relus = [m for m in net.features if isinstance(m, nn.ReLU)]
        return relus[-1], None                         # the 512-channel conv-BN-ReLU, 4x4
    if isinstance(net, scratch.ViTSmall):
        return net.blocks[-1].norm1, vit_tokens_to_grid   # 8x8 patch grid
    if isinstance(net, strong.StrongCNN):
        return net[4], None                            # the last conv group (256 channels, 3x3)
    if isinstance(model, backbones.TransferNet):
        return model.backbone.get_submodule(backbones.arch_of(model.name).gradcam_layer), None  # 7x7 at 224 px
    raise KeyError(f"no Grad-CAM layer defined for {type(model).__name__} ({type(net).__name__})")


def for_model(model: nn.Module, images: torch.Tensor, class_idx=None) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] of a deployed study model on uint8 images, on the input
    image's own pixel grid (32x32 for CIFAR images)."""
    layer, reshape = target_layer(model)
    maps, _ = GradCAM(model, layer, reshape)(images, class_idx)
    return maps
