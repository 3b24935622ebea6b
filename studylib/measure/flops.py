"""FLOPs per example of a model's forward (and backward) pass, counted by torch.utils.flop_counter with
grouped-convolution backward counted right. Used by the benchmarks (fractions of the machine's limits) and by
the report (training compute of a run in GFLOP).

Units: FLOPs as torch counts them (a multiply-add = 2); elementwise ops (activations, norms) are not counted.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape, **_kwargs) -> int:
    """aten.convolution_backward counted right for grouped convolutions. torch's own formula (torch 2.14)
    counts the weight gradient of a grouped convolution as if it were dense, `groups` times too many: a
    depthwise 3x3 over 32 channels 32x, which made MobileNetV2's backward ~20x its forward. The weight
    gradient takes exactly the forward's multiply-adds; the input gradient is torch's count (correct)."""
    flops = 0
    if output_mask[0]:  # grad_input: the (transposed) convolution of grad_out with the weight
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:  # grad_weight: one multiply-add per multiply-add of the forward
        flops += conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return flops


def flops_per_example(model: torch.nn.Module, example_input: torch.Tensor, *, backward: bool) -> float:
    """FLOPs per example (FlopCounterMode) of one forward, or forward + backward when backward=True.

    Backward counts what autograd actually runs: weight gradients always, input gradients only where
    something upstream requires grad (example_input.requires_grad or an earlier trainable layer).
    Existing .grad values are restored afterwards; a model in train mode still updates BatchNorm stats.
    Convolution backward uses _conv_backward_flops (grouped convolutions counted right).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops}) as counter:
        if backward:
            model(example_input).float().sum().backward()
        else:
            with torch.no_grad():
                model(example_input)
    for p, g in zip(params, saved):
        p.grad = g
    return counter.get_total_flops() / example_input.shape[0]
