"""studylib.recipes.fastpath: the fine-tuning step's fast path computes what eager PyTorch computes (forward, gradients,
BatchNorm's running statistics), keeps the state dict, and undoes itself."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from studylib.recipes import fastpath

# compiled (inductor) vs eager fp32: the same operations, reassociated; measured differences are ~1e-6 relative
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def tiny_net() -> nn.Module:
    """Conv-BN-ReLU6 blocks as torchvision's Conv2dNormActivation, a projection BN without activation, a head."""
    torch.manual_seed(0)
    block = lambda i, o, act: nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),  # noqa: E731
                                            *([nn.ReLU6(inplace=True)] if act else []))
    return nn.Sequential(block(3, 8, True), block(8, 8, False), block(8, 16, True), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 10))


def step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    net.train()
    logits = net(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


@pytest.mark.parametrize("compile", [False, True])
def test_fast_path_trains_as_eager(compile):
    x, y = torch.randn(6, 3, 8, 8), torch.arange(6) % 10
    eager, fast = tiny_net(), tiny_net()
    path = fastpath.accelerate(fast, compile=compile)
    assert path.fused == (3 if compile else 0)
    assert not any(m.inplace for m in fast.modules() if isinstance(m, nn.ReLU6))
    for _ in range(2):  # two steps: the second uses the running statistics the first updated
        (le, ge), (lf, gf) = step(eager, x, y), step(fast, x, y)
        torch.testing.assert_close(lf, le, **TOLERANCE)
        for k in ge:
            torch.testing.assert_close(gf[k], ge[k], **TOLERANCE)
    se, sf = eager.state_dict(), fast.state_dict()
    assert list(se) == list(sf)  # names unchanged: checkpoints load either way
    for k in se:
        torch.testing.assert_close(sf[k].float(), se[k].float(), **TOLERANCE)
    eager.eval(), fast.eval()
    torch.testing.assert_close(fast(x), eager(x), **TOLERANCE)
    described = path.describe()
    assert described["activations"] == "out of place" and described["memory_format"] == "contiguous"
    assert described["bn_act"].startswith("compiled" if compile else "eager (compile off)")
    path.restore()
    assert all(m.inplace for m in fast.modules() if isinstance(m, nn.ReLU6))
    assert not any("forward" in m.__dict__ for m in fast.modules())


def test_a_failing_compile_falls_back_to_eager_and_says_so(monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("no C++ compiler found\nlong details")

    monkeypatch.setattr(fastpath, "_compiled_bn_act", lambda: broken)
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    eager, fast = tiny_net(), tiny_net()
    path = fastpath.accelerate(fast, compile=True)
    (le, _), (lf, _) = step(eager, x, y), step(fast, x, y)
    torch.testing.assert_close(lf, le, **TOLERANCE)
    assert "torch.compile failed (RuntimeError: no C++ compiler found)" in capsys.readouterr().out
    assert path.describe()["bn_act"] == "eager (compile failed: RuntimeError: no C++ compiler found)"
    copy.deepcopy(path.describe())  # JSON-able for the run's metrics


def test_denormals_are_flushed_inside_the_block_only_and_nesting_keeps_it_on():
    from studylib import runtime

    tiny = torch.full((4,), 1e-39)  # a denormal: below torch.finfo(torch.float32).tiny
    assert (tiny * 1.0 != 0).all()
    with runtime.flush_denormals() as on:
        if not on:
            pytest.skip("this CPU cannot flush denormals")
        assert (tiny * 1.0 == 0).all()
        with runtime.flush_denormals():
            pass
        assert (tiny * 1.0 == 0).all()  # the inner block's end leaves the outer one's setting
    assert (tiny * 1.0 != 0).all()
