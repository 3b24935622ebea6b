"""The fast path for training a convolutional network end to end on the CPU (MobileNetV2 in the controlled
grid): the same computation as eager PyTorch, arranged to cost less.

    path = fastpath.accelerate(model)     # before training; path.describe() goes into the run's metrics
    ...train...
    path.restore()                        # the model as it was

Measured by ``python -m benchmarks.bench_finetune`` (every way below timed against the shipped runs' step in one
process, interleaved; benchmarks/results/finetune-*.json). What the recipe's path does, and why:

- **Activations not in place.** torchvision's ``ReLU6(inplace=True)`` after a oneDNN BatchNorm output costs an
  extra copy per call on the CPU (``aten::copy_`` under ``hardtanh_`` in the profile); out of place it does not.
  The values are identical.
- **Contiguous (NCHW) tensors.** channels_last, the choice for frozen-feature extraction (bench_batch), made
  the fp32 training step no faster here: oneDNN's depthwise convolutions alone are 2-4x faster in it, but
  training-mode BatchNorm and its backward are slower, and they cancel out.
- The precision is the recipe's (``config.RECIPES["finetune"]["precision"]``, fp32 since the bf16 step measured
  1.2-1.4x slower on these CPUs without AMX): it changes results, so it is part of the run key. The two
  changes above do not change results, so they are not part of the key, and runs trained either way are found.

Measured and not used: ``compile=True`` fuses each BatchNorm2d with the ReLU6 after it into one
``torch.compile`` (inductor) region while training. It is 0.9-1.05x the eager fp32 step over repeated runs
here, so it is not worth 30-60 s of compiling and a C++ compiler. Compiling the whole network was slower than
eager (notes of 2026-12-06). Where compiling fails, the layer falls back to eager and says why once.
``describe()`` records which path ran.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# One compiled graph per BatchNorm layer shape: MobileNetV2 has 52 BatchNorm layers of ~35 distinct
# shapes. torch._dynamo's default of 8 recompilations per function would fall back to eager after 8.
_CACHE_LIMIT = 256


def _bn_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
            running_var: torch.Tensor, momentum: float, eps: float, relu6: bool) -> torch.Tensor:
    """Training-mode BatchNorm (batch statistics; running statistics updated in place), then ReLU6."""
    y = F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)
    return F.hardtanh(y, 0.0, 6.0) if relu6 else y


@functools.lru_cache(maxsize=1)
def _compiled_bn_act():
    import torch._dynamo  # noqa: F401  (imported here: importing it costs a second, and only training needs it)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, _CACHE_LIMIT)
    torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit,
                                                            4 * _CACHE_LIMIT)
    return torch.compile(_bn_act, dynamic=False)


@dataclass
class FastPath:
    """What ``accelerate`` changed on one model, and how to undo it."""
    model: nn.Module
    compile: bool
    channels_last: bool = False
    fused: int = 0                                   # BatchNorm layers running compiled while training
    fallback: str | None = None                      # why compiled regions fell back to eager, if they did
    _patched: list = field(default_factory=list)     # modules whose forward was replaced
    _inplace: list = field(default_factory=list)     # activations switched from in place to out of place

    def bn_act(self, bn: nn.BatchNorm2d, relu6: bool, x: torch.Tensor) -> torch.Tensor:
        args = (x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, relu6)
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)           # as nn.BatchNorm2d does (momentum is set, so it is a count only)
        if self.fallback is None:
            try:
                return _compiled_bn_act()(*args)
            except Exception as exc:                 # inductor needs a C++ compiler; eager computes the same
                self.fallback = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                print(f"fast path: torch.compile failed ({self.fallback}); BatchNorm + ReLU6 run eager", flush=True)
        return _bn_act(*args)

    def describe(self) -> dict:
        """The engine path, for the run's metrics (speed only: not part of any run key)."""
        return {"bn_act": ("eager (compile off)" if not self.compile else
                           f"eager (compile failed: {self.fallback})" if self.fallback else
                           f"compiled (torch.compile, inductor), {self.fused} BatchNorm layers"),
                "activations": "out of place", "memory_format": "channels_last" if self.channels_last else "contiguous"}

    def restore(self) -> None:
        for module in self._patched:
            module.__dict__.pop("forward", None)     # the class's forward again
        for module in self._inplace:
            module.inplace = True
        self._patched.clear()
        self._inplace.clear()


def _pairs(model: nn.Module):
    """(BatchNorm2d, the ReLU6 right after it in the same Sequential, or None) for every BatchNorm2d that
    sits in an nn.Sequential (torchvision's Conv2dNormActivation and MobileNetV2's projection convs)."""
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq.children())
            for i, bn in enumerate(kids):
                if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.momentum is not None:
                    nxt = kids[i + 1] if i + 1 < len(kids) else None
                    yield bn, nxt if isinstance(nxt, nn.ReLU6) else None


def accelerate(model: nn.Module, *, compile: bool = False, channels_last: bool = False) -> FastPath:
    """Put ``model`` on the fast training path (in place; ``restore()`` undoes it): activations out of place,
    weights in ``channels_last`` or contiguous memory, and, with ``compile``, each BatchNorm2d + following ReLU6
    one compiled region in training mode. Module names and the state dict are unchanged (checkpoints load
    either way)."""
    path = FastPath(model, compile, channels_last=channels_last)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for m in model.modules():
        if isinstance(m, nn.ReLU6) and m.inplace:
            m.inplace = False
            path._inplace.append(m)
    if not compile:
        return path
    for bn, act in _pairs(model):
        eager_bn = type(bn).forward.__get__(bn)

        def bn_forward(x, bn=bn, relu6=act is not None, eager=eager_bn):
            return path.bn_act(bn, relu6, x) if bn.training else eager(x)

        bn.forward = bn_forward
        path._patched.append(bn)
        if act is not None:  # applied inside the compiled region while training
            eager_act = type(act).forward.__get__(act)
            act.forward = lambda x, act=act, eager=eager_act: x if act.training else eager(x)
            path._patched.append(act)
        path.fused += 1
    return path
