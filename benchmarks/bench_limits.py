"""This machine's limits, and how close every stage of the study comes to them.

At start it measures the machine (benchmarks.timing.machine_limits): fp32, bf16 and int8 matmul
GFLOP/s (int8: torch._int_mm, where this torch build has a CPU kernel) and memory copy bandwidth.
Then, per stage, with the study's own code paths (studylib.recipes.engine, features, quantize):

  stage                        nb  how it runs
  custom_cnn train             02  engine.train_one_epoch with the study recipe's augmentation, bf16,
                                   channels_last, batch 128
  vit_small train              04  the same, contiguous (as the ViT's recipe)
  custom_cnn / vit_small eval  02  engine.batched_logits, bf16, batch 500 (the per-epoch test pass)
                               04
  extract <backbone> (224 px)  03  features.time_extraction: bf16, channels_last, batch features.batch_for
                                   (8); and the same with BatchNorm folded into the convolutions
                                   (measure.fold_batchnorm)
  reevaluate <backbone>        05  the deployed model (backbone + head) in fp32 as measure.reevaluate runs it on
                                   the CPU: ONNX Runtime (measure.onnx_logits), batch measure.onnx_batch (4 at 224 px);
                                   beside it PyTorch eager at batch features.batch_for (4), BatchNorm folded
                                   (the GPU path, and the CPU path before ONNX Runtime) and unfolded
  head train                   03  Dropout + Linear 1280->10 on random features, fp32, 1 thread, batch 128
  finetune mobilenet_v2_float  12  end-to-end bf16 training step at the controlled grid's size (64 px)
  int8 custom_cnn              05  quantize.static_int8 (PT2E), batch 1 and batch 64

For each it prints images/s, FLOPs per image (torch.utils.flop_counter.FlopCounterMode: forward for
inference stages, forward + backward for training stages), achieved GFLOP/s, the fraction of the
matching limit (bf16 stages: bf16 matmul; fp32: fp32; int8: int8), and the full-protocol minutes the
rate implies (images the full profile pushes through that stage, counted from studylib.config).
Extraction rows also get an activation-traffic estimate against the copy bandwidth (depthwise
convolutions are memory-bound). Last, the physical floor of notebooks 01-07's cold full protocol
(their stages' total FLOPs / the measured limits) beside the time the measured rates imply.

Inputs are random uint8 images (speed does not depend on pixel values), so no data is needed;
ImageNet weights are used where available, else the same architecture untrained.

    python -m benchmarks.bench_limits                 # ~2-4 min on 2 quiet cores
    python -m benchmarks.bench_limits --threads 1
    python -m benchmarks.bench_limits --smoke         # seconds: tiny batches, 1 step (checks the script,
                                                      # not the machine; written as limits_smoke-*.json)

Writes benchmarks/results/limits-<cpu>-<UTC date>.json ($BENCH_RESULTS_DIR overrides the folder).
"""

from __future__ import annotations

import argparse
import functools
import itertools
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from benchmarks import timing
from studylib import config, data, estimate, measure, runtime, weights
from studylib.data.augment import CropFlip, MixedBatch, ScratchAugment
from studylib.measure import quantize
from studylib.models import backbones
from studylib.recipes import engine, features, heads, scratch as scratch_recipe

CPU = torch.device("cpu")
# Alternatives measured beside the path the study takes (not extra work; the floor counts only the study's
# path): feature extraction keeps BatchNorm (cached features are keyed by the network as trained); notebook 05's
# re-evaluation runs in ONNX Runtime, which folds it (measure.reevaluate; predictions are checked against the
# recorded ones), and is also timed in PyTorch eager, BatchNorm folded and not.
FOLDED, UNFOLDED = ", BN folded", ", BN not folded"
TORCH_FOLDED, TORCH_UNFOLDED = ", torch" + FOLDED, ", torch" + UNFOLDED
REEVALUATE_VARIANTS = ("", TORCH_FOLDED, TORCH_UNFOLDED)
BACKBONES = ("mobilenet_v2_float", "efficientnet_lite0")  # one per probe architecture (config.PROBES)
EXTRACT_SIZE = 224  # px: the protocol's input size for every backbone
INT8_BATCH = config.PROTOCOL["evaluation"]["throughput_batch"]  # 64 images per call (notebook 05's throughput)


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does (images per step, timed steps or calls)."""
    batch: int            # training images per step (CNN, ViT, fine-tune, head)
    steps: int            # timed training steps, after one untimed warm-up step
    eval_images: int      # images per evaluation pass (in batches of eval_batch)
    eval_batch: int
    extract_images: int   # images per extraction timing (in batches of up to features.batch_for)
    head_steps: int       # timed head steps (each takes milliseconds)
    int8_calibration: int
    int8_calls: int       # timed calls per INT8 measurement
    quick_limits: bool    # timing.machine_limits(quick=True): tiny matmuls, not a real limit


FULL = Sizes(batch=128, steps=5, eval_images=1000, eval_batch=engine.EVAL_BATCH, extract_images=256,
             head_steps=200, int8_calibration=256, int8_calls=20, quick_limits=False)
SMOKE = Sizes(batch=8, steps=1, eval_images=16, eval_batch=8, extract_images=8, head_steps=2,
              int8_calibration=8, int8_calls=1, quick_limits=True)


# ---------------------------------------------------------------------------------------
# What the full profile processes per stage (images), from the configuration
# ---------------------------------------------------------------------------------------
def protocol_images(profile: str = "full") -> dict[str, float]:
    """Images the cold ``profile`` protocol pushes through each stage (training stages: images per epoch x
    epochs over every run; inference stages: images evaluated)."""
    cfg = config.get_profile(profile)
    n_train = data.NUM_CLASSES * (cfg["train_per_class"] or data.FULL_PER_CLASS["train"])
    n_test = data.NUM_CLASSES * (cfg["test_per_class"] or data.FULL_PER_CLASS["test"])

    def epoch_images(r: dict) -> int:  # drop_last trains on whole batches only
        return n_train - n_train % r["batch_size"] if r["drop_last"] else n_train

    scratch = [config.recipe(name, profile) for name in scratch_recipe.RECIPES]  # both recipes per model
    head_recipes = [config.recipe(name, profile) for name in ("head", "head_reference_code")]
    # Per probe backbone: training, test and (for the flip head) mirrored training images.
    per_backbone = 2 * n_train + n_test if any(r["hflip"] for r in head_recipes) else n_train + n_test
    ev = cfg["evaluation"]
    int8_test = data.NUM_CLASSES * ev["int8_test_per_class"] if ev["int8_test_per_class"] else n_test
    out = {
        "custom_cnn train": sum(r["epochs"] * epoch_images(r) for r in scratch),
        "vit_small train": sum(r["epochs"] * epoch_images(r) for r in scratch),
        "custom_cnn eval": sum(r["epochs"] * n_test for r in scratch),   # a test pass after every epoch
        "vit_small eval": sum(r["epochs"] * n_test for r in scratch),
        "head train": len(config.PROBES) * sum(r["epochs"] * epoch_images(r) for r in head_recipes),
        # notebook 05: both Custom CNN rows, static INT8 accuracy on the test images; batch-1 latency calls
        "int8 custom_cnn batch 1": len(scratch) * (ev["latency_warmup"] + ev["latency_runs"]),
        "int8 custom_cnn batch 64": len(scratch) * int8_test,
        # notebook 12 (not 01-07): training-equivalent images of the controlled grid (studylib.estimate)
        "finetune mobilenet_v2_float": next(w["images"] for w in estimate.work(profile) if w["kind"] == "finetune"),
    }
    for name in BACKBONES:  # every probe backbone of the same architecture runs at this one's speed
        same_arch = sum(weights.SPECS[p].arch == weights.SPECS[name].arch for p in config.PROBES)
        out[f"extract {name}"] = out[f"extract {name}{FOLDED}"] = same_arch * per_backbone
        # notebook 05 re-evaluates every deployed transfer row on the test images in fp32
        for v in REEVALUATE_VARIANTS:
            out[f"reevaluate {name}{v}"] = same_arch * n_test
    return out


NOTEBOOK = {"custom_cnn train": "02", "custom_cnn eval": "02", "vit_small train": "04", "vit_small eval": "04",
            "head train": "03", "int8 custom_cnn batch 1": "05", "int8 custom_cnn batch 64": "05",
            "finetune mobilenet_v2_float": "12", **{f"extract {b}{v}": "03" for b in BACKBONES for v in ("", FOLDED)},
            **{f"reevaluate {b}{v}": "05" for b in BACKBONES for v in REEVALUATE_VARIANTS}}
FLOOR_NOTEBOOKS = ("01", "02", "03", "04", "05", "06", "07")


# ---------------------------------------------------------------------------------------
# Timing with the engine
# ---------------------------------------------------------------------------------------
def random_images(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n uint8 images, n labels), seeded."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def train_images_per_s(model: nn.Module, batches: Callable[[int], Iterator[MixedBatch]], steps: int, *,
                       precision: str, channels_last: bool, lr: float = 1e-3) -> float:
    """Training images/s of ``model`` through engine.train_one_epoch on the CPU (augmentation, autocast,
    loss, Adam step): one untimed warm-up step, then ``steps`` timed. ``batches(epoch)`` yields batches.

    Not studylib.estimate._time_steps: that one resolves the device ("auto": CUDA when present) and feeds
    a ready float tensor, leaving out the augmentation and normalisation the real step pays for."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    seen: list[int] = []

    def plan(n: int) -> engine.Plan:
        def counted(epoch: int) -> Iterable[MixedBatch]:
            for b in itertools.islice(batches(epoch), n):
                seen.append(len(b.labels_a))
                yield b
        return engine.Plan(epochs=1, optimizer=opt, batches=counted, evaluate=lambda: torch.empty(0), steps_per_epoch=n)

    kw = dict(device=CPU, precision=precision, channels_last=channels_last)
    engine.train_one_epoch(model, plan(1), 0, **kw)  # warm-up: allocator, oneDNN primitive caches
    seen.clear()
    seconds = timing.time_call(lambda: engine.train_one_epoch(model, plan(steps), 1, **kw), warmup=0, repeats=1)
    return sum(seen) / seconds["total_s"]


def calls_per_s(fn: Callable[[], object], calls: int) -> float:
    """Calls per second of fn() (median of ``calls`` timed calls after one warm-up call)."""
    return 1.0 / timing.time_call(fn, warmup=1, repeats=calls)["median_s"]


def transfer_model(name: str, **kw) -> tuple[backbones.TransferNet, str]:
    """(model, init used): ImageNet weights where available, else the same architecture untrained."""
    try:
        return backbones.build_transfer(name, init="imagenet", **kw), "imagenet"
    except weights.WeightsUnavailable:
        torch.manual_seed(0)
        return backbones.build_transfer(name, init="random", **kw), "random (no ImageNet weights here)"


def activation_bytes(net: nn.Module, x: torch.Tensor, bytes_per_value: int = 2) -> float:
    """Bytes of activations per image: every leaf module's output written once and read once, at
    ``bytes_per_value`` (2: bf16). A lower bound (functional ops between modules are not seen)."""
    total = [0]
    hooks = [m.register_forward_hook(lambda _m, _i, out: total.__setitem__(0, total[0] + out.numel()))
             for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return 2 * bytes_per_value * total[0] / len(x)


# ---------------------------------------------------------------------------------------
# The stages: each returns {"images_per_s", "flops_per_image", "precision", "batch", ...}
# ---------------------------------------------------------------------------------------
def scratch_train(name: str, s: Sizes) -> dict:
    r = config.recipe("study")
    torch.manual_seed(0)
    model = scratch_recipe.build(name, r)
    net, norm = model.net, model.preprocess
    cl = scratch_recipe.use_channels_last(name, r["precision"])
    if cl:
        net.to(memory_format=torch.channels_last)
    aug = ScratchAugment(**r["augment"], normalize=norm)
    x, y = random_images(s.batch * s.steps)
    ips = train_images_per_s(net, lambda e: engine.shuffled_batches(x, y, seed=0, epoch=e, batch_size=s.batch,
                                                                    augment=aug), s.steps,
                             precision=r["precision"], channels_last=cl, lr=r["optimizer"]["lr"])
    flops = timing.flops_per_example(net, norm(x[:2]), backward=True)
    return {"images_per_s": ips, "flops_per_image": flops, "precision": r["precision"], "batch": s.batch,
            "note": f"study recipe, augmentation included, channels_last={cl}"}


def scratch_eval(name: str, s: Sizes) -> dict:
    r = config.recipe("study")
    torch.manual_seed(0)
    model = scratch_recipe.build(name, r)
    net, norm = model.net, model.preprocess
    cl = scratch_recipe.use_channels_last(name, r["precision"])
    if cl:
        net.to(memory_format=torch.channels_last)
    x, _ = random_images(s.eval_images)
    ips = len(x) * calls_per_s(lambda: engine.batched_logits(net, x, prepare=norm, device=CPU, precision=r["precision"],
                                                             channels_last=cl, batch_size=s.eval_batch), 2)
    flops = timing.flops_per_example(net.eval(), norm(x[:2]), backward=False)
    return {"images_per_s": ips, "flops_per_image": flops, "precision": r["precision"], "batch": s.eval_batch}


@functools.lru_cache(maxsize=None)
def backbone_cost(name: str) -> tuple[float, float]:
    """(FLOPs, activation bytes) per image of ``name``'s unfolded 224-px backbone: counted once per backbone,
    shared by its extraction and re-evaluation variants (pixel values change neither)."""
    model, _ = transfer_model(name, size=EXTRACT_SIZE)
    example = model.preprocess(random_images(2)[0])
    return (timing.flops_per_example(model.backbone.eval(), example, backward=False),
            activation_bytes(model.backbone, example))


def extraction(name: str, s: Sizes, bandwidth_gb_s: float, *, precision: str = "bf16", fold: bool = False,
               whole_model: bool = False, onnx: bool = False) -> dict:
    """``name``'s 224-px backbone as features.extract runs it (``whole_model``: the deployed model, backbone +
    head, as notebook 05's re-evaluation runs it: in ONNX Runtime with ``onnx``, else in PyTorch), optionally
    with BatchNorm folded into the convolutions (measure.fold_batchnorm)."""
    model, init = transfer_model(name, size=EXTRACT_SIZE)
    x, _ = random_images(s.extract_images)
    flops, traffic = backbone_cost(name)  # traffic: bytes per image of the unfolded network
    folded = 0
    if fold:
        model, folded = measure.fold_batchnorm(model, x[:2])
    batch = min(measure.onnx_batch(model) if onnx else features.batch_for(EXTRACT_SIZE, precision), len(x))
    if onnx:  # the export (and its check) is outside the timed calls, as the 10,000-image pass amortises it
        session = measure.onnx_session(model, x[:2])
        ips = len(x) * calls_per_s(lambda: measure.onnx_run(session, x, batch_size=batch), 1)
    elif whole_model:
        ips = len(x) * calls_per_s(lambda: engine.batched_logits(model, x, device=CPU, precision=precision,
                                                                 batch_size=batch), 1)
    else:
        ips = features.time_extraction(model, x, precision=precision, device="cpu", batch_size=batch)
    gb_s = traffic * ips / 1e9
    return {"images_per_s": ips, "flops_per_image": flops, "precision": precision, "batch": batch,
            "activation_mb_per_image": traffic / 1e6, "activation_gb_per_s": gb_s,
            "fraction_of_bandwidth": gb_s / bandwidth_gb_s if bandwidth_gb_s else None, "batchnorm_folded": folded,
            "engine": "onnxruntime" if onnx else "torch",
            "note": f"weights: {init}; {'ONNX Runtime (folds BatchNorm itself); ' if onnx else ''}"
                    f"{f'{folded} BatchNorms folded; ' if fold else ''}activations >= "
                    f"{traffic / 1e6:.0f} MB/img (unfolded) -> {gb_s:.1f} GB/s = {gb_s / bandwidth_gb_s:.2f} of copy "
                    "bandwidth"}


def head_images_per_s(backbone: str, batch: int, steps: int) -> tuple[float, float]:
    """(training images/s, FLOPs per image) of ``backbone``'s probe head as notebook 03 trains it: the head
    recipe (fp32, Adam) on cached features (random here), heads.HEAD_THREADS (1) thread."""
    r = config.recipe("head")
    torch.manual_seed(0)
    head = backbones.make_head(backbone)  # Dropout(0.2) + Linear(1280, 10) for MobileNetV2 / EfficientNets
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(batch * steps, backbones.arch_of(backbone).feature_dim, generator=g)
    y = torch.randint(0, 10, (batch * steps,), generator=g)
    with runtime.num_threads(heads.HEAD_THREADS):
        ips = train_images_per_s(head, lambda e: engine.shuffled_batches(feats, y, seed=0, epoch=e, batch_size=batch),
                                 steps, precision=r["precision"], channels_last=False, lr=r["optimizer"]["lr"])
    return ips, timing.flops_per_example(head, feats[:2], backward=True)


def head_train(s: Sizes) -> dict:
    ips, flops = head_images_per_s("mobilenet_v2_float", s.batch, s.head_steps)
    return {"images_per_s": ips, "flops_per_image": flops, "precision": config.recipe("head")["precision"],
            "batch": s.batch, "note": f"{heads.HEAD_THREADS} thread; fraction is of the all-thread fp32 limit"}


def finetune(s: Sizes) -> dict:
    r, size = config.recipe("finetune"), config.grid("controlled")["size"]
    model, init = transfer_model(config.grid("controlled")["backbone"], size=size, frozen=False)
    model.to(memory_format=torch.channels_last)
    crop_flip = CropFlip(r["augment"]["crop_padding"], r["augment"]["hflip_p"])
    x, y = random_images(s.batch * s.steps)
    ips = train_images_per_s(model, lambda e: engine.shuffled_batches(x, y, seed=0, epoch=e, batch_size=s.batch,
                                                                      augment=crop_flip), s.steps,
                             precision=r["precision"], channels_last=True, lr=r["optimizer"]["lr"])
    flops = timing.flops_per_example(model.train(), x[:2], backward=True)
    return {"images_per_s": ips, "flops_per_image": flops, "precision": r["precision"], "batch": s.batch,
            "note": f"{size} px, weights: {init}"}


def int8_cnn(s: Sizes) -> list[dict]:
    """Static INT8 Custom CNN (PT2E reference model, as notebook 05 builds it) at batch 1 and batch 64."""
    torch.manual_seed(0)
    model = scratch_recipe.build("custom_cnn", config.recipe("study")).eval()
    x, _ = random_images(max(s.int8_calibration, INT8_BATCH), seed=1)
    q = quantize.static_int8(model, x[:s.int8_calibration], "net")
    flops = timing.flops_per_example(model, x[:2], backward=False)  # the float network's count, same layers
    rows = []
    for batch in (1, INT8_BATCH):
        xb = x[:batch]

        def call():
            with torch.inference_mode():
                q(xb)
        rows.append({"images_per_s": batch * calls_per_s(call, s.int8_calls), "flops_per_image": flops,
                     "precision": "int8", "batch": batch,
                     "note": "PT2E reference model, not lowered: computes in float between (de)quantize ops"})
    return rows


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
LIMIT_OF = {"bf16": "bfloat16", "fp32": "float32", "int8": "int8"}


def limit_for(precision: str, limits: dict) -> tuple[str, float | None]:
    """(name, GFLOP/s) of the matmul limit a stage of ``precision`` is held against; int8 falls back to
    fp32 where this torch build has no int8 CPU matmul (the PT2E model then computes in float anyway)."""
    name = LIMIT_OF[precision]
    gflops = limits["matmul"][name]["gflops"]
    if gflops is None and name == "int8":
        name, gflops = "float32 (no int8 matmul kernel)", limits["matmul"]["float32"]["gflops"]
    return name, gflops


def row(stage: str, measured: dict, limits: dict, full_images: dict) -> dict:
    """One stage's report row: timing.stage_report plus what it was measured against."""
    limit_name, limit = limit_for(measured["precision"], limits)
    rep = timing.stage_report(stage, measured["images_per_s"], measured["flops_per_image"], limit, full_images.get(stage))
    # minutes at the limit = full_images x FLOPs per image / limit
    floor = rep["implied_minutes"] * rep["fraction_of_limit"] if rep["implied_minutes"] and rep["fraction_of_limit"] else None
    return {"stage": stage, "notebook": NOTEBOOK[stage], **{k: v for k, v in rep.items() if k != "stage"},
            "gflop_per_image": measured["flops_per_image"] / 1e9, "limit": limit_name, "limit_gflops": limit,
            "full_images": full_images.get(stage), "floor_minutes": floor,
            **{k: v for k, v in measured.items() if k not in ("images_per_s",)}}


def floor_summary(rows: list[dict]) -> dict:
    """Notebooks 01-07, cold full protocol: total FLOPs of the measured stages / the limits vs the measured rates."""
    chosen = [r for r in rows if r["notebook"] in FLOOR_NOTEBOOKS and r["implied_minutes"] is not None
              and not r["stage"].endswith((FOLDED, UNFOLDED))]
    floor = sum(r["floor_minutes"] or 0.0 for r in chosen)
    implied = sum(r["implied_minutes"] for r in chosen)
    return {"notebooks": list(FLOOR_NOTEBOOKS), "stages": [r["stage"] for r in chosen],
            "total_pflop": sum(r["full_images"] * r["flops_per_image"] for r in chosen) / 1e15,
            "floor_minutes": floor, "implied_minutes": implied, "implied_over_floor": implied / floor if floor else None,
            "not_covered": "notebook 05's re-evaluation of the scratch rows, INT8 accuracy and latency of the ViT and transfer rows; "
                           "fp32 test-feature extraction counted at the bf16 rate; head test passes; Grad-CAM (06); "
                           "the demo (07); data loading (01)"}


def print_report(limits: dict, rows: list[dict], floor: dict) -> None:
    mm, bw = limits["matmul"], limits["memory_bandwidth"]
    int8 = f"{mm['int8']['gflops']:.0f}" if mm["int8"]["gflops"] else f"n/a ({mm['int8'].get('reason')})"
    print(f"{limits['cpu_model']}, {limits['threads']} threads, torch {limits['torch']}, AMX-BF16 {limits['amx_bf16']}"
          f"{' (quick limits: not real)' if limits['quick'] else ''}")
    print(f"limits: fp32 {mm['float32']['gflops']:.0f} GFLOP/s, bf16 {mm['bfloat16']['gflops']:.0f} GFLOP/s, "
          f"int8 {int8} GOP/s, copy bandwidth {bw['gb_per_s']:.1f} GB/s\n")
    cols = ("stage", "notebook", "precision", "batch", "images_per_s", "gflop_per_image", "gflops", "limit",
            "fraction_of_limit", "implied_minutes", "floor_minutes")
    timing.print_table([{c: r.get(c) for c in cols} for r in rows])
    print()
    for r in rows:
        if r.get("note"):
            print(f"  {r['stage']}: {r['note']}")
    print(f"\nNotebooks 01-07, cold full protocol, measured stages ({floor['total_pflop']:.2f} PFLOP): physical floor "
          f"{floor['floor_minutes']:.1f} min at the limits; the measured rates imply {floor['implied_minutes']:.1f} min "
          f"({floor['implied_over_floor']:.1f}x the floor).\n  Not covered: {floor['not_covered']}.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 step: checks the script, not the machine")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for every stage but the head (1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = SMOKE if args.smoke else FULL
    load_note = runtime.check_machine_load("bench_limits")
    limits = timing.machine_limits(quick=s.quick_limits)
    full_images = protocol_images("full")
    measured = {
        "custom_cnn train": scratch_train("custom_cnn", s),
        "vit_small train": scratch_train("vit_small", s),
        "custom_cnn eval": scratch_eval("custom_cnn", s),
        "vit_small eval": scratch_eval("vit_small", s),
        **{f"extract {b}": extraction(b, s, limits["memory_bandwidth"]["gb_per_s"]) for b in BACKBONES},
        **{f"extract {b}{FOLDED}": extraction(b, s, limits["memory_bandwidth"]["gb_per_s"], fold=True)
           for b in BACKBONES},
        **{f"reevaluate {b}{v}": extraction(b, s, limits["memory_bandwidth"]["gb_per_s"], precision="fp32",
                                            fold=v == TORCH_FOLDED, whole_model=True, onnx=not v)
           for b in BACKBONES for v in REEVALUATE_VARIANTS},
        "head train": head_train(s),
        "finetune mobilenet_v2_float": finetune(s),
    }
    measured["int8 custom_cnn batch 1"], measured["int8 custom_cnn batch 64"] = int8_cnn(s)
    rows = [row(stage, m, limits, full_images) for stage, m in measured.items()]
    floor = floor_summary(rows)
    print_report(limits, rows, floor)
    path = timing.write_results("limits_smoke" if args.smoke else "limits",
                                {"smoke": args.smoke, "threads": args.threads, "sizes": asdict(s), "stages": rows,
                                 "floor_01_07": floor, "full_protocol_images": full_images,
                                 "machine_load_note": load_note, "environment": runtime.environment()},
                                limits=limits)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
