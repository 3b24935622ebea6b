"""The fine-tuning step on this CPU: the controlled grid's end-to-end MobileNetV2 step as the shipped fine-tune
runs trained it (the baseline) against faster ways to compute it, all in one process.

Variants (64 px; each a full step as studylib.recipes.engine.train_one_epoch runs it: crop + flip on the 32-px images,
upscale, forward, backward, Adam over every layer, BatchNorm in training mode):

  baseline                 bf16 autocast, channels_last, ReLU6 in place, batch 128: the shipped fine-tune runs' step
  fp32, channels_last, batch 128       the same without autocast
  fp32, batch 128          contiguous tensors, ReLU6 out of place (studylib.recipes.fastpath.accelerate())
  fp32                     the same at the recipe's batch (64): the recipe's step now
  fp32 + compiled BN       ... and BatchNorm + ReLU6 one torch.compile region (accelerate(compile=True))
  fp32 + compiled BN, channels_last    the same in channels_last (oneDNN's depthwise convolutions alone are
                                       2-4x faster in it)
  bf16                     the recipe's step under bf16 autocast
  fp32, batch 32 / 256
  fp32, compiled model     (--compile-model) torch.compile of the whole network (about 70 s to compile)

Every variant is timed in ``--rounds`` interleaved rounds of ``--steps`` steps (after warm-up steps that also
compile), so that a machine whose speed drifts (these shared VMs do, by +-30% over minutes) treats all
alike; the median round counts. Printed per variant: images/s, the ratio to the baseline, the fraction of
the matmul limit of its precision (FLOPs per training image from FlopCounterMode) and of the
memory-traffic bound (activation bytes per training image, estimated, against the measured copy
bandwidth). A torch.profiler table of the chosen path says what is left.

``--check-steps N`` (numerics): from the same initial weights and the same batches of real CIFAR-10
training images, the losses of the first N steps of the baseline and of the fast path, beside the
baseline on another seed's batches (the seed-to-seed spread the fast path must stay within).

    python -m benchmarks.bench_finetune                        # ~8 min on 2 cores
    python -m benchmarks.bench_finetune --check-steps 300      # + ~8 min: the numerics check (needs CIFAR-10)
    python -m benchmarks.bench_finetune --smoke                # seconds: 32 px, batch 8 (checks the script)
    python -m benchmarks.bench_finetune --allocator --steps 40 --rounds 3   # glibc's allocator, default vs tuned
    python -m benchmarks.bench_finetune --denormals --steps 6 --rounds 3    # denormal weights, kept vs flushed

``--allocator``: the baseline and the recipe's step each under glibc's default allocator and the tuned one
(runtime.ALLOCATOR_TUNABLES), one fresh process per measurement (glibc reads its tunables at start), interleaved.
``--denormals``: the recipe's step on weights holding the denormal share measured in the random-init run at epoch
10 (results/denormals-random-init-epoch10-2026-12-07.json), with denormals kept and flushed to zero
(runtime.flush_denormals), beside fresh weights. Both are settings of the process, not of the recipe: same values.

Writes benchmarks/results/finetune-<cpu>-<UTC date>.json ($BENCH_RESULTS_DIR overrides the folder).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks import timing
from benchmarks.bench_limits import activation_bytes, limit_for, random_images, transfer_model
from studylib import config, data, runtime
from studylib.data.augment import CropFlip
from studylib.recipes import engine, fastpath

CPU = torch.device("cpu")
BASELINE = "baseline"
CHOSEN = "fp32"  # the recipe's step: its precision and batch, on studylib.recipes.fastpath.accelerate's default path
BASELINE_BATCH = 128  # the batch of the shipped fine-tune runs (bf16, channels_last)


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str = "fp32"
    channels_last: bool = False
    fast: bool = True               # fastpath.accelerate: out-of-place activations, contiguous
    compile_bn: bool = True         # ... and BatchNorm + ReLU6 compiled
    compile_model: bool = False
    batch: int = 128


def variants(batch: int, compile_model: bool) -> list[Variant]:
    """The baseline at the shipped runs' batch, then the fast path's variants at ``batch`` (the recipe's)."""
    out = [Variant(BASELINE, precision="bf16", channels_last=True, fast=False, compile_bn=False, batch=BASELINE_BATCH),
           Variant(f"fp32, channels_last, batch {BASELINE_BATCH}", channels_last=True, fast=False, compile_bn=False,
                   batch=BASELINE_BATCH),
           Variant(f"fp32, batch {BASELINE_BATCH}", compile_bn=False, batch=BASELINE_BATCH),
           Variant(CHOSEN, compile_bn=False, batch=batch),
           Variant("fp32 + compiled BN", batch=batch),
           Variant("fp32 + compiled BN, channels_last", channels_last=True, batch=batch),
           Variant("bf16", precision="bf16", compile_bn=False, batch=batch),
           Variant(f"fp32, batch {batch // 2}", compile_bn=False, batch=batch // 2),
           Variant(f"fp32, batch {batch * 4}", compile_bn=False, batch=batch * 4)]
    if compile_model:
        out.append(Variant("fp32, compiled model", compile_bn=False, compile_model=True, batch=batch))
    return out


class Stepper:
    """One variant's model, optimiser and batches; ``run(n)`` takes n training steps through the engine."""

    def __init__(self, v: Variant, model_name: str, size: int, images: torch.Tensor, labels: torch.Tensor,
                 seed: int = 0):
        r = config.recipe("finetune")
        torch.manual_seed(0)  # the same initial head for every variant
        self.v, self.model = v, transfer_model(model_name, size=size, frozen=False)[0]
        self.path = (fastpath.accelerate(self.model, compile=v.compile_bn, channels_last=v.channels_last)
                     if v.fast else None)
        if v.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if v.compile_model else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, weight_decay=r["optimizer"]["weight_decay"])
        crop_flip = CropFlip(r["augment"]["crop_padding"], r["augment"]["hflip_p"])
        self.batches = lambda epoch: engine.shuffled_batches(images, labels, seed=seed, epoch=epoch,
                                                             batch_size=v.batch, augment=crop_flip)
        self.epoch, self.losses = 0, []

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps (batches drawn afresh each call)."""
        losses = self.losses

        def counted(epoch: int):
            for b in itertools.islice(self.batches(epoch), steps):
                yield b

        plan = engine.Plan(epochs=1, optimizer=self.opt, batches=counted, evaluate=lambda: torch.empty(0),
                           steps_per_epoch=steps, loss=lambda logits, b: _logged(losses, logits, b))
        t0 = time.perf_counter()
        engine.train_one_epoch(self.net, plan, self.epoch, device=CPU, precision=self.v.precision,
                               channels_last=self.v.channels_last)
        self.epoch += 1
        return time.perf_counter() - t0


def _logged(losses: list, logits: torch.Tensor, batch) -> torch.Tensor:
    loss = engine.mixed_cross_entropy(logits, batch)
    losses.append(loss.item())
    return loss


def speed(args, limits: dict, size: int) -> list[dict]:
    images, labels = random_images(max(args.batch * 4, BASELINE_BATCH) * 2 * max(args.steps, 2))
    steppers = [Stepper(v, args.model, size, images, labels) for v in variants(args.batch, args.compile_model)]
    for s in steppers:  # warm-up: oneDNN primitive caches, allocator, and compilation
        t0 = time.perf_counter()
        s.run(2)
        s.warmup_s = time.perf_counter() - t0
    rates = {s.v.name: [] for s in steppers}
    for _ in range(args.rounds):
        for s in steppers:
            rates[s.v.name].append(args.steps * s.v.batch / s.run(args.steps))
    flops = timing.flops_per_example(steppers[0].model.train(), images[:2], backward=True)
    # bytes a training step moves per image, estimated: every activation written and read once forward,
    # read again backward with its gradient written and read (3x the forward traffic), at fp32
    traffic = 3 * activation_bytes(steppers[0].model.eval(), images[:8], bytes_per_value=4)
    bound = limits["memory_bandwidth"]["gb_per_s"] * 1e9 / traffic
    base = statistics.median(rates[BASELINE])
    rows = []
    for s in steppers:
        ips = statistics.median(rates[s.v.name])
        limit_name, limit = limit_for(s.v.precision, limits)
        rows.append({"variant": s.v.name, "batch": s.v.batch, "precision": s.v.precision,
                     "images_per_s": ips, "ratio_to_baseline": ips / base,
                     "fraction_of_matmul_limit": ips * flops / 1e9 / limit if limit else None,
                     "matmul_limit": limit_name, "fraction_of_memory_bound": ips / bound,
                     "rounds_images_per_s": [round(r, 1) for r in rates[s.v.name]],
                     "warmup_s": round(s.warmup_s, 1),
                     "engine_path": s.path.describe() if s.path else "eager as recorded in the shipped runs"})
    print(f"{flops / 1e9:.3f} GFLOP per training image (fwd + bwd); memory-traffic bound {bound:,.0f} images/s "
          f"({traffic / 1e6:.1f} MB per image at {limits['memory_bandwidth']['gb_per_s']:.1f} GB/s)")
    timing.print_table([{k: r[k] for k in ("variant", "images_per_s", "ratio_to_baseline", "fraction_of_matmul_limit",
                                           "fraction_of_memory_bound", "warmup_s")} for r in rows])
    return rows, {"gflop_per_image": flops / 1e9, "traffic_mb_per_image": traffic / 1e6, "memory_bound_images_per_s": bound}


def profile_of(args, size: int) -> list[dict]:
    """Self CPU time per op of the chosen path over a few steps: what the step still spends its time on."""
    images, labels = random_images(args.batch * 4)
    s = Stepper(Variant(CHOSEN, compile_bn=False, batch=args.batch), args.model, size, images, labels)
    s.run(2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        s.run(min(args.steps, 3))
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:12]]
    timing.print_table(rows)
    return rows


def check_numerics(args, size: int) -> dict:
    """Losses of the first ``args.check_steps`` steps on real training images, all at the baseline's batch: baseline
    (seed 0), the fast path's step in fp32 (seed 0: same initial weights, same batches) and the baseline with seed 1's
    batches (the spread). The recipe's batch and learning rate are recipe choices (searched), not the step's
    numerics, so they are held at the baseline's here."""
    train, _ = data.load_profile_data(config.get_profile("full"), args.data_dir)
    n = args.check_steps * BASELINE_BATCH
    base = Variant(BASELINE, precision="bf16", channels_last=True, fast=False, compile_bn=False, batch=BASELINE_BATCH)
    runs_ = {"baseline seed 0": (base, 0), "baseline seed 1": (base, 1),  # the same batches: only the step differs
             "fast path seed 0": (Variant(CHOSEN, compile_bn=False, batch=BASELINE_BATCH), 0)}
    curves = {}
    for name, (v, seed) in runs_.items():
        s = Stepper(v, args.model, size, train.images[:n], train.labels[:n], seed=seed)
        s.run(args.check_steps)
        curves[name] = s.losses
        print(f"{name}: mean loss of the last 50 steps {np.mean(s.losses[-50:]):.4f}", flush=True)

    def window(c):  # mean loss per 25-step window
        return [float(np.mean(c[i:i + 25])) for i in range(0, len(c), 25)]

    w = {k: window(c) for k, c in curves.items()}
    fast_gap = max(abs(a - b) for a, b in zip(w["fast path seed 0"], w["baseline seed 0"]))
    seed_gap = max(abs(a - b) for a, b in zip(w["baseline seed 1"], w["baseline seed 0"]))
    verdict = "within" if fast_gap <= seed_gap else "outside"
    print(f"largest 25-step mean-loss gap: fast path vs baseline {fast_gap:.4f}; seed 1 vs seed 0 {seed_gap:.4f}: "
          f"the fast path is {verdict} the seed-to-seed spread", flush=True)
    return {"steps": args.check_steps, "batch": BASELINE_BATCH, "window_means": w, "fast_vs_baseline_max_gap": fast_gap,
            "seed_spread_max_gap": seed_gap, "within_seed_spread": fast_gap <= seed_gap}


ALLOCATORS = ("default", "tuned")  # glibc's defaults; runtime.ALLOCATOR_TUNABLES (what the study's commands use)


def child_rate(args, size: int) -> dict:
    """``--child VARIANT``: that variant's images/s over ``--steps`` steps after 2 warm-up steps, in this process
    (whose allocator its parent chose), with the page faults the timed steps took."""
    import resource

    v = next(v for v in variants(args.batch, False) if v.name == args.child)
    images, labels = random_images(v.batch * (args.steps + 2))
    s = Stepper(v, args.model, size, images, labels)
    s.run(2)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = s.run(args.steps)
    return {"images_per_s": args.steps * v.batch / seconds,
            "page_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps}


def allocator_rounds(args, size: int) -> dict:
    """The baseline and the recipe's step, each under glibc's default allocator and the tuned one: one fresh process
    per measurement (glibc reads its tunables at start), interleaved over ``--rounds`` rounds so that drift treats
    all alike; the median counts. Ratios against the baseline under the default allocator (today's step)."""
    configs = [(name, alloc) for name in (BASELINE, CHOSEN) for alloc in ALLOCATORS]
    got = {c: [] for c in configs}
    base_env = {k: v for k, v in os.environ.items() if k != runtime.ALLOCATOR_ENV}
    for r in range(args.rounds):
        for name, alloc in configs:
            env = {**base_env, **({runtime.ALLOCATOR_ENV: runtime.ALLOCATOR_TUNABLES} if alloc == "tuned" else {})}
            argv = [sys.executable, "-m", "benchmarks.bench_finetune", "--child", name, "--model", args.model,
                    "--size", str(size), "--batch", str(args.batch), "--steps", str(args.steps),
                    "--threads", str(args.threads)]
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd=config.PROJ_ROOT)
            got[(name, alloc)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {name}, {alloc} allocator: {got[(name, alloc)][-1]['images_per_s']:.0f} images/s",
                  flush=True)
    base = statistics.median(m["images_per_s"] for m in got[(BASELINE, "default")])
    rows = [{"variant": name, "allocator": alloc,
             "images_per_s": statistics.median(m["images_per_s"] for m in got[(name, alloc)]),
             "page_faults_per_step": statistics.median(m["page_faults_per_step"] for m in got[(name, alloc)]),
             "rounds_images_per_s": [round(m["images_per_s"], 1) for m in got[(name, alloc)]]}
            for name, alloc in configs]
    for row in rows:
        row["ratio_to_baseline"] = row["images_per_s"] / base
    timing.print_table([{k: r[k] for k in ("variant", "allocator", "images_per_s", "ratio_to_baseline",
                                           "page_faults_per_step")} for r in rows])
    return {"tunables": runtime.ALLOCATOR_TUNABLES, "steps_per_process": args.steps, "rounds": args.rounds,
            "rows": rows}


DENORMALS_FILE = Path(__file__).parent / "results" / "denormals-random-init-epoch10-2026-12-07.json"


@torch.no_grad()
def inject_denormals(model: torch.nn.Module, opt: torch.optim.Optimizer, spec: dict) -> int:
    """Give ``model`` the denormal share measured in the random-init run (``spec``: tensor name -> [denormals,
    size]): in each listed tensor, that many of its smallest-magnitude entries become denormals of the same sign,
    and so do Adam's first moments at the same places (a dead weight's moment decays with it). Returns how many."""
    state = dict(model.state_dict(keep_vars=True))
    gen = torch.Generator().manual_seed(0)
    total = 0
    for name, (count, size) in spec.items():
        t = state.get(name)
        if t is None or t.numel() != size:
            raise SystemExit(f"{DENORMALS_FILE.name}: {name} of size {size} is not in this model; it describes "
                             f"the controlled grid's MobileNetV2 (--model mobilenet_v2_float)")
        flat = t.detach().view(-1)
        idx = flat.abs().argsort()[:count]
        tiny = torch.finfo(torch.float32).tiny * torch.empty(count).uniform_(0.05, 0.95, generator=gen)
        flat[idx] = torch.where(flat[idx] < 0, -tiny, tiny)
        moment = opt.state.get(t, {}).get("exp_avg") if isinstance(t, torch.nn.Parameter) else None
        if moment is not None:
            moment.view(-1)[idx] = tiny
        total += count
    return total


def denormal_rounds(args, size: int) -> dict:
    """The recipe's step on weights holding the denormal share of the random-init run at epoch 10, with denormals
    kept (what it trained with) and flushed to zero (runtime.flush_denormals), beside the same step on fresh weights;
    interleaved rounds, the denormals put back before each."""
    spec = json.loads(DENORMALS_FILE.read_text())["model_tensors"]
    images, labels = random_images(args.batch * 2 * max(args.steps, 2))
    fresh = Stepper(Variant(CHOSEN, compile_bn=False, batch=args.batch), args.model, size, images, labels)
    aged = Stepper(Variant(CHOSEN, compile_bn=False, batch=args.batch), args.model, size, images, labels)
    for s in (fresh, aged):
        s.run(2)  # warm-up; Adam's moments exist
    rates = {"fresh weights": [], "denormals kept": [], "denormals flushed": []}
    injected = 0
    for _ in range(args.rounds):
        rates["fresh weights"].append(args.steps * args.batch / fresh.run(args.steps))
        for label, flush in (("denormals kept", False), ("denormals flushed", True)):
            injected = inject_denormals(aged.model, aged.opt, spec)
            with runtime.flush_denormals() if flush else contextlib.nullcontext():
                rates[label].append(args.steps * args.batch / aged.run(args.steps))
    rows = [{"state": k, "images_per_s": statistics.median(v), "rounds_images_per_s": [round(x, 1) for x in v]}
            for k, v in rates.items()]
    kept = rows[1]["images_per_s"]
    for r in rows:
        r["ratio_to_denormals_kept"] = r["images_per_s"] / kept
    timing.print_table([{k: r[k] for k in ("state", "images_per_s", "ratio_to_denormals_kept")} for r in rows])
    return {"source": DENORMALS_FILE.name, "denormals_injected": injected, "steps_per_round": args.steps,
            "rounds": args.rounds, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    g = config.grid("controlled")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=g["backbone"])
    ap.add_argument("--size", type=int, default=g["size"], help="input size, px")
    ap.add_argument("--batch", type=int, default=config.recipe("finetune")["batch_size"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median counts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile-model", action="store_true", help="also time torch.compile of the whole network")
    ap.add_argument("--check-steps", type=int, default=0, help="numerics check over this many steps (0: skip)")
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 for --check-steps (default: $CIFAR10_DIR, data/)")
    ap.add_argument("--smoke", action="store_true", help="32 px, batch 8, 1 step, 1 round: checks the script only")
    ap.add_argument("--allocator", action="store_true",
                    help="only the allocator comparison: the baseline and the recipe's step under glibc's default "
                         "and the tuned allocator, a fresh process each (use --steps 40 --rounds 3)")
    ap.add_argument("--denormals", action="store_true",
                    help="only the denormal comparison: the recipe's step on weights with the random-init run's "
                         "denormals, kept and flushed to zero, beside fresh weights (use --steps 6 --rounds 3)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one variant's rate, as JSON (--allocator)
    args = ap.parse_args(argv)
    size = args.size
    if args.smoke:
        size, args.batch, args.steps, args.rounds = 32, 8, 1, 1
        args.check_steps = min(args.check_steps, 2)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_rate(args, size)))
        return
    if args.denormals:
        payload = {"smoke": args.smoke, "model": args.model, "size": size, "batch": args.batch, "threads": args.threads,
                   "machine_load_note": runtime.check_machine_load("bench_finetune --denormals"),
                   "denormals": denormal_rounds(args, size), "environment": runtime.environment()}
        path = timing.write_results("finetune_denormals_smoke" if args.smoke else "finetune_denormals", payload,
                                    limits={} if args.smoke else None)
        print(f"\nwrote {path}")
        return
    if args.allocator:
        limits = {} if args.smoke else None
        payload = {"smoke": args.smoke, "model": args.model, "size": size, "batch": args.batch, "threads": args.threads,
                   "machine_load_note": runtime.check_machine_load("bench_finetune --allocator"),
                   "allocator": allocator_rounds(args, size), "environment": runtime.environment()}
        path = timing.write_results("finetune_allocator_smoke" if args.smoke else "finetune_allocator", payload,
                                    limits=limits)
        print(f"\nwrote {path}")
        return
    load_note = runtime.check_machine_load("bench_finetune")
    limits = timing.machine_limits(quick=args.smoke)
    print(f"{args.model} at {size} px, batch {args.batch}, {args.threads} threads, {runtime.environment()['cpu']}",
          flush=True)
    rows, work = speed(args, limits, size)
    chosen = next(r for r in rows if r["variant"] == CHOSEN)
    print(f"\n{CHOSEN}: {chosen['ratio_to_baseline']:.2f}x the baseline. Where its step spends its time:")
    prof = profile_of(args, size)
    payload = {"smoke": args.smoke, "model": args.model, "size": size, "batch": args.batch, "threads": args.threads,
               "steps_per_round": args.steps, "rounds": args.rounds, "chosen": CHOSEN, "variants": rows, "work": work,
               "profile_of_chosen": prof, "machine_load_note": load_note, "environment": runtime.environment()}
    if args.check_steps:
        payload["numerics"] = check_numerics(args, size)
    path = timing.write_results("finetune_smoke" if args.smoke else "finetune", payload, limits=limits)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
