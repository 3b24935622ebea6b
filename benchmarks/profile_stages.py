"""Where the time goes: the top operators of the study's main stages, and torch.compile against eager.

    python -m benchmarks.profile_stages [--threads 2] [--steps 4] [--no-compile] [--smoke]

For each stage (Custom CNN and ViT training steps at batch 128, bf16; MobileNetV2 224-px feature
extraction at batch 64, bf16; the Custom CNN at batch 1 in fp32 and as the static-INT8 PT2E reference model
that notebook 05 times) it prints the ten operators with the most self CPU time (torch.profiler)
and their share of the step, then images/s eager and with ``torch.compile`` (inductor, default mode),
the compile time counted separately and the steps needed to pay it back. Everything runs in one
process, one stage after another, with random inputs (no data needed). Results also go to
``benchmarks/results/profile-<cpu>-<date>.json``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from studylib import models, runtime
from studylib.data.augment import MixedBatch
from studylib.models import backbones
from studylib.recipes import engine
from . import timing


def train_step_fn(model: nn.Module, batch: int, channels_last: bool):
    """One engine training step (bf16 autocast, Adam) on a fixed random batch, as a callable."""
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    dev = torch.device("cpu")

    def step():
        plan = engine.Plan(1, opt, lambda e: iter([MixedBatch(x, y, y, 1.0)]), lambda: torch.empty(0), 1)
        engine.train_one_epoch(model, plan, 0, device=dev, precision="bf16", channels_last=channels_last)
    return step


def extract_fn(backbone: nn.Module, batch: int, size: int = 224):
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    backbone.eval().to(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode(), runtime.autocast(torch.device("cpu"), "bf16"):
            backbone(x)
    return step


def int8_batch1_fn(which: str):
    """Batch-1 inference of the Custom CNN (untrained; speed does not depend on the weights) as notebook 05
    times it: fp32, or static INT8 (quantize.static_int8: the PT2E reference model), calibrated on random
    images. Returns (step, deployed model)."""
    from studylib import config
    from studylib.measure import quantize
    from studylib.recipes import scratch

    torch.manual_seed(0)
    model = scratch.build("custom_cnn", config.recipe("study")).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g)
    net = model if which == "fp32" else quantize.static_int8(model, x, "net")

    def step():
        with torch.inference_mode():
            net(x[:1])
    return step, net


def top_operators(step, n: int = 10) -> list[dict]:
    step()  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:n]]


def rate(step, images: int, steps: int) -> float:
    steps = steps if images > 1 else 50 * steps  # batch-1 calls take milliseconds: time more of them
    return timing.rate(step, images, warmup=1, repeats=steps)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny batches, one step: checks the script runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    b, steps = (8, 1) if args.smoke else (128, args.steps)
    stages = {
        "custom_cnn train (bf16, channels_last)": lambda: (train_step_fn(models.build_model("custom_cnn"), b, True), b),
        "vit_small train (bf16)": lambda: (train_step_fn(models.build_model("vit_small"), b, False), b),
        "mobilenet_v2 224-px extraction (bf16)": lambda: (
            extract_fn(backbones.build_transfer("mobilenet_v2_float", init=None).backbone, b // 2), b // 2),
        # notebook 05's batch-1 latency: why static INT8 is not faster than fp32 here
        "custom_cnn batch 1 (fp32)": lambda: (int8_batch1_fn("fp32")[0], 1),
        "custom_cnn batch 1 (static int8, PT2E reference model)": lambda: (int8_batch1_fn("int8")[0], 1),
    }
    out = {}
    for name, make in stages.items():
        step, images = make()
        ops = top_operators(step)
        eager = rate(step, images, steps)
        rec = {"top_operators": ops, "eager_images_per_s": eager}
        print(f"\n== {name}: {eager:.1f} images/s eager")
        timing.print_table([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in o.items()} for o in ops])
        if not args.no_compile:
            torch._dynamo.reset()
            t0 = time.perf_counter()
            compiled = compile_step(name, b)
            compiled()  # the first call compiles
            compile_s = time.perf_counter() - t0
            comp = rate(compiled, images, steps)
            gain = 1 / eager - 1 / comp  # seconds saved per image
            rec.update(compiled_images_per_s=comp, compile_seconds=compile_s,
                       payback_images=compile_s / gain if gain > 0 else None)
            print(f"   torch.compile: {comp:.1f} images/s ({comp / eager:.2f}x eager) after {compile_s:.0f} s of "
                  f"compilation" + (f"; pays back after {compile_s / gain:,.0f} images" if gain > 0 else
                                    "; never pays back"))
        out[name] = rec
    path = timing.write_results("profile_smoke" if args.smoke else "profile", {"threads": args.threads, "stages": out})
    print(f"\nwrote {path}")


def compile_step(name: str, batch: int):
    if "batch 1" in name:  # inductor lowers the PT2E reference model's (de)quantize + float op patterns to int8 kernels
        step, model = int8_batch1_fn("int8" if "int8" in name else "fp32")
        model.net = torch.compile(model.net)
        return step
    if name.startswith("custom_cnn"):
        return train_step_fn(torch.compile(models.build_model("custom_cnn")), batch, True)
    if name.startswith("vit_small"):
        return train_step_fn(torch.compile(models.build_model("vit_small")), batch, False)
    return extract_fn(torch.compile(backbones.build_transfer("mobilenet_v2_float", init=None).backbone), batch // 2)


if __name__ == "__main__":
    main()
