"""INT8 quantization (studylib.measure.quantize) on tiny random networks: seconds, no data set, no weights.

Tolerances: relative L2 logit error < 0.05 and top-1 agreement >= 0.9 on 64 held-out inputs.
Measured over seeds 0-4 (torch 2.14.1, torchao 0.18.0): static INT8 0.010-0.016 relative error,
agreement 0.92-1.0 (seed 0, used here: 0.0115 / 1.0 plain, 0.0096 / 1.0 through the uint8
preprocess); dynamic INT8 of a Linear model 0.008-0.0095, agreement 0.97-1.0 (seed 0: 0.008 / 1.0).
So the bounds leave ~3x margin on the error; agreement is the noisy one (random logits have near
ties), hence 0.9, not 1.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from studylib.data.preprocess import Normalize
from studylib.measure import quantize

REL_TOL, AGREE_MIN = 0.05, 0.9


def _tiny_net() -> nn.Sequential:
    """Conv-BN-ReLU6 x2 (3 -> 8 -> 16 channels, the second stride 2), average pool, linear."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _with_bn_stats(net: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """BatchNorm running statistics of ``batches`` (train-mode passes, cumulative average), then eval."""
    net.train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        for b in batches:
            net(b)
    return net.eval()


class Deployed(nn.Module):
    """The deployed layout: ``preprocess`` -> ``net``."""

    def __init__(self, preprocess: nn.Module, net: nn.Module):
        super().__init__()
        self.preprocess, self.net = preprocess, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))


def _uint8(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8)


def test_static_int8_conv_bn_relu6_stays_close_to_float():
    torch.manual_seed(0)
    net = _with_bn_stats(_tiny_net(), [torch.randn(32, 3, 16, 16) for _ in range(4)])
    model = Deployed(nn.Identity(), net).eval()
    q = quantize.static_int8(model, torch.randn(64, 3, 16, 16), "net")
    err = quantize.quantization_error(model, q, torch.randn(64, 3, 16, 16))
    assert err["rel_error"] < REL_TOL and err["top1_agreement"] >= AGREE_MIN, err

    graph = q.net.graph_module.graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    assert not any("batch_norm" in t for t in targets)  # BN folded into the convolutions
    for node in graph.nodes:  # ReLU6 (hardtanh) fused with its conv: no quantize between them
        if node.op == "call_function" and "hardtanh" in str(node.target):
            assert "conv2d" in str(node.args[0].target)
    int8 = [t for t in q.net.state_dict().values() if t.dtype == torch.int8]
    assert len(int8) == 3  # two convolutions and the linear
    assert isinstance(model.net[0], nn.Conv2d) and model.net[0].weight.dtype == torch.float32  # original untouched


def test_static_int8_through_uint8_preprocess_keeps_it_float():
    torch.manual_seed(0)
    pre = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    net = _with_bn_stats(_tiny_net(), [pre(_uint8(32)) for _ in range(4)])
    model = Deployed(pre, net).eval()
    q = quantize.static_int8(model, _uint8(64), "net", batch_size=16)
    held = _uint8(64)
    err = quantize.quantization_error(model, q, held)
    assert err["rel_error"] < REL_TOL and err["top1_agreement"] >= AGREE_MIN, err

    assert isinstance(q.preprocess, Normalize)
    assert torch.equal(q.preprocess(held), pre(held)) and q.preprocess(held).dtype == torch.float32
    # exported at batch 2 with a dynamic batch dimension: batch 1 and odd sizes run
    assert q(held[:1]).shape == (1, 10) and q(held[:5]).shape == (5, 10)
    assert q.eval() is q and q.train() is q  # the exported graph does not break mode switches
    q.eval()


def test_static_int8_keep_float_leaves_named_modules_float():
    torch.manual_seed(0)
    net = _with_bn_stats(_tiny_net(), [torch.randn(32, 3, 16, 16) for _ in range(4)])
    model = Deployed(nn.Identity(), net).eval()
    q = quantize.static_int8(model, torch.randn(16, 3, 16, 16), "net", keep_float=("0", "1", "2"))
    int8 = [t for t in q.net.state_dict().values() if t.dtype == torch.int8]
    assert len(int8) == 2  # the first conv stayed float
    with pytest.raises(ValueError, match="keep_float"):
        quantize.static_int8(model, torch.randn(4, 3, 16, 16), "net", keep_float=("features.0",))


def test_dynamic_int8_linear_model_stays_close():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    q = quantize.dynamic_int8(model)
    err = quantize.quantization_error(model, q, torch.randn(64, 32))
    assert err["rel_error"] < 0.03 and err["top1_agreement"] >= AGREE_MIN, err  # measured 0.008 / 1.0
    assert type(q[0].weight).__name__ == "Int8Tensor" and type(model[0].weight) is nn.Parameter


def test_static_int8_without_calibration_images_is_a_clear_error():
    model = Deployed(nn.Identity(), _tiny_net().eval())
    with pytest.raises(ValueError, match="needs calibration images"):
        quantize.static_int8(model, torch.zeros(0, 3, 16, 16), "net")


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x  # a branch on values: torch.export cannot capture it


def test_static_int8_unexportable_body_points_to_dynamic():
    with pytest.raises(ValueError, match="dynamic_int8"):
        quantize.static_int8(Deployed(nn.Identity(), _DataDependent()), torch.randn(4, 3, 16, 16), "net")


def test_torchvision_quantizable_mobilenet_cross_check_is_int8_with_a_float_head():
    import warnings

    from torch.ao.nn.intrinsic import quantized as nniq

    from studylib.models.backbones import build_transfer

    torch.manual_seed(0)
    row = build_transfer("mobilenet_v2_float", init="random", size=32)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    _with_bn_stats(row.backbone, [row.preprocess(images)])
    row.eval()
    before = {k: v.clone() for k, v in row.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize.torchvision_mobilenet_int8(row, images)
    assert not [w for w in caught if "deprecated" in str(w.message) or "observer" in str(w.message)]
    convs = [m for m in q.backbone.modules() if isinstance(m, nniq.ConvReLU2d)]
    assert len(convs) >= 30  # every Conv-BN-ReLU of the 17 blocks and the stem, fused and int8
    assert not [m for m in q.backbone.modules() if isinstance(m, (nn.BatchNorm2d, nn.ReLU6))]  # folded; ReLU6 gone
    assert isinstance(q.head[-1], nn.Linear) and torch.equal(q.head[-1].weight, row.head[-1].weight)  # float head
    assert q(images[:1]).shape == (1, 10) and q(images).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in row.state_dict().items())  # the row itself is untouched


def test_torchvision_cross_check_rejects_other_backbones():
    from studylib.models.backbones import build_transfer

    row = build_transfer("efficientnet_lite0", init="random", size=32).eval()
    with pytest.raises(ValueError, match="not a MobileNetV2 transfer row"):
        quantize.torchvision_mobilenet_int8(row, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_onnx_static_int8_runs_the_deployed_interface_close_to_float():
    """ONNX Runtime's QDQ INT8 of a tiny network behind the uint8 preprocess: int8 convolutions (QLinearConv or
    QDQ pairs) in the graph, logits close to the float model's on held-out images."""
    import numpy as np

    from studylib import measure

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8, generator=g)
    net = nn.Sequential(Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 16), _tiny_net())
    _with_bn_stats(net, [images[i:i + 32] for i in range(0, 64, 32)])
    import onnx

    model_bytes = measure.onnx_static_int8_model(net, images[:64])
    ops = [n.op_type for n in onnx.load_from_string(model_bytes).graph.node]
    assert ops.count("Conv") == 2 and ops.count("DequantizeLinear") >= 4 and "QuantizeLinear" in ops
    session = measure.onnx_runtime_session(model_bytes, threads=1)
    held_out = images[64:]
    out = measure.onnx_run(session, held_out, batch_size=16)
    with torch.no_grad():
        ref = net(held_out)
    rel = ((out - ref).norm(dim=1) / ref.norm(dim=1)).mean().item()
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    assert out.shape == ref.shape and np.isfinite(out.numpy()).all()
    assert rel < REL_TOL and agree >= AGREE_MIN, (rel, agree)
    with pytest.raises(ValueError):
        measure.onnx_static_int8(net, images[:0])


@pytest.mark.parametrize("arch", ["mobilenet_v2_float", "efficientnet_lite0"])
def test_onnx_static_int8_keeps_the_named_first_blocks_float(arch):
    """quantize.keep_float's ONNX scopes name real nodes of the exported backbone; their convolutions keep float
    weights (no DequantizeLinear feeds them) and the later ones run int8."""
    import onnx

    from studylib import measure
    from studylib.models.backbones import build_transfer

    torch.manual_seed(0)
    row = build_transfer(arch, init="random", size=32).eval()
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    _, scopes = quantize.keep_float(arch)
    graph = onnx.load_from_string(measure.onnx_static_int8_model(row, images, keep_float_scopes=scopes)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    kept = [n for n in convs if any(s in n.name for s in scopes)]
    assert all(any(s in n.name for n in convs) for s in scopes), scopes  # every scope still names a node
    assert kept and all(n.input[1] not in dequantized for n in kept)
    assert all(n.input[1] in dequantized for n in convs if n not in kept)


def test_compiled_int8_computes_what_the_reference_int8_computes():
    """PT2E's int8 model under torch.compile (inductor lowers it to oneDNN int8 kernels): its logits match the
    uncompiled reference model's within the int8 tolerance, at two batch sizes; the reference stays uncompiled."""
    torch.manual_seed(0)
    net = _with_bn_stats(_tiny_net(), [torch.randn(32, 3, 16, 16) for _ in range(4)])
    model = Deployed(nn.Identity(), net).eval()
    q = quantize.static_int8(model, torch.randn(64, 3, 16, 16), "net")
    compiled = quantize.compiled_int8(q, "net")
    held = torch.randn(8, 3, 16, 16)
    for batch in (held, held[:1]):
        err = quantize.quantization_error(q, compiled, batch)
        assert err["rel_error"] < REL_TOL and err["top1_agreement"] == 1.0, err
    assert not isinstance(q.net.graph_module, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(compiled.net.graph_module, torch._dynamo.eval_frame.OptimizedModule)


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "entropy"])
def test_onnx_static_int8_calibration_methods(calibration):
    """Each calibration method builds an int8 graph whose logits stay close to the float model's; an unknown one
    is refused by name."""
    from studylib import measure

    torch.manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 16), _tiny_net())
    _with_bn_stats(net, [images[i:i + 32] for i in range(0, 64, 32)])
    session = measure.onnx_runtime_session(measure.onnx_static_int8_model(net, images[:64], calibration=calibration),
                                           threads=1)
    out = measure.onnx_run(session, images[64:], batch_size=16)
    with torch.no_grad():
        ref = net(images[64:])
    assert ((out - ref).norm(dim=1) / ref.norm(dim=1)).mean().item() < REL_TOL
    with pytest.raises(ValueError, match="'kl' is not one of"):
        measure.onnx_static_int8_model(net, images[:8], calibration="kl")
