"""The reference study's from-scratch networks: its Custom CNN and its small ViT ("ViT-Small").

"ViT-Small" here is the reference's 3.2M-parameter ViT (width 256, depth 6), not ViT-S/16 (22M).
Architecture options that recipes differ in (linear init; the ViT's norm placement, dropout and
layer init) are keyword arguments; ``config.RECIPES`` holds their values per recipe.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import register

LINEAR_INITS = ("kaiming", "normal_0.01")


# =======================================================================================
# Custom CNN (reference: 2,462,282 parameters)
# =======================================================================================
def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CustomCNN(nn.Module):
    """Three [conv-BN-ReLU x2, maxpool, dropout2d] blocks at 64/128/256 channels, a 512-channel
    conv, global average pooling and a two-layer classifier, as in the reference code.

    Convolutions: Kaiming normal (fan_out, ReLU), bias 0, as the reference. ``linear_init``:
    "kaiming" (fan_in) or "normal_0.01" (N(0, 0.01), the reference's code), bias 0 either way.
    """

    def __init__(self, *, num_classes: int = 10, widths: tuple[int, ...] = (64, 128, 256), dropout2d: float = 0.25,
                 dropout: float = 0.5, linear_init: str = "kaiming"):
        super().__init__()
        if linear_init not in LINEAR_INITS:
            raise ValueError(f"linear_init must be one of {LINEAR_INITS}, got {linear_init!r}")
        layers, cin = [], 3
        for w in widths:
            layers += [*_conv_bn_relu(cin, w), *_conv_bn_relu(w, w), nn.MaxPool2d(2), nn.Dropout2d(dropout2d)]
            cin = w
        layers += _conv_bn_relu(cin, 512)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(512, 256), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(256, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                if linear_init == "kaiming":
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@register("custom_cnn")
def custom_cnn(*, num_classes: int = 10, linear_init: str = "kaiming") -> CustomCNN:
    return CustomCNN(num_classes=num_classes, linear_init=linear_init)


# =======================================================================================
# ViT-Small (the reference's "SimpleViT"; its code gives 3,195,146 parameters)
# =======================================================================================
LAYER_INITS = ("independent", "cloned")


class EncoderLayer(nn.Module):
    """A transformer encoder layer with the parameters and semantics of
    ``nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout, activation="gelu", batch_first=True,
    norm_first=norm_first)`` (tests/test_models_engine.py::test_encoder_layer_matches_torch_transformer_encoder_layer
    checks the outputs match with copied weights):

    - pre-norm (``norm_first``): x + drop(MHSA(LN(x))), then x + drop(MLP(LN(x)));
    - post-norm: LN(x + drop(MHSA(x))), then LN(x + drop(MLP(x)));
    - dropout on the attention weights, after the attention projection, after the MLP's activation
      and after the MLP (all ``dropout``; skipped entirely at 0).

    Attention is explicit matmuls + softmax: on CPU with 65 tokens and 32-dim heads this is about
    2x faster in training than the fused kernel (benchmarks/).
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, norm_first: bool = True):
        super().__init__()
        self.heads, self.norm_first = heads, norm_first
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim))
        self.drop = nn.Dropout(dropout)
        self.attn_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def reset_attention_like_torch(self) -> None:
        """nn.MultiheadAttention's initialisation: Xavier-uniform input projection, zero biases."""
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        out = (self.attn_drop(attn.softmax(dim=-1)) @ v).transpose(1, 2).reshape(b, n, d)
        return self.drop(self.proj(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attention(self.norm1(x))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.drop(self.mlp(x)))


class ViTSmall(nn.Module):
    """4x4 conv patch embedding, CLS token, learned position embedding, 6 encoder layers (width 256,
    8 heads, MLP 512, GELU), final LayerNorm, linear head on the CLS token.

    ``layer_init="cloned"`` gives every layer the same initial weights (nn.TransformerEncoder deep-copies
    one initialised layer, as the reference's code does) with nn.MultiheadAttention's initialisation;
    "independent" initialises each layer on its own (nn.Linear defaults).
    """

    def __init__(self, *, num_classes: int = 10, image_size: int = 32, patch: int = 4, dim: int = 256, depth: int = 6,
                 heads: int = 8, mlp_dim: int = 512, dropout: float = 0.0, norm_first: bool = True,
                 layer_init: str = "independent"):
        super().__init__()
        if layer_init not in LAYER_INITS:
            raise ValueError(f"layer_init must be one of {LAYER_INITS}, got {layer_init!r}")
        n_patches = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        if layer_init == "cloned":
            layer = EncoderLayer(dim, heads, mlp_dim, dropout, norm_first)
            layer.reset_attention_like_torch()
            self.blocks = nn.Sequential(*[copy.deepcopy(layer) for _ in range(depth)])
        else:
            self.blocks = nn.Sequential(*[EncoderLayer(dim, heads, mlp_dim, dropout, norm_first) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, 64, dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # shape[0], not len(): a trace keeps it free (ONNX export)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


@register("vit_small")
def vit_small(*, num_classes: int = 10, norm_first: bool = True, dropout: float = 0.0,
              layer_init: str = "independent") -> ViTSmall:
    return ViTSmall(num_classes=num_classes, norm_first=norm_first, dropout=dropout, layer_init=layer_init)
