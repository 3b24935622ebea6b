"""Batch size of the transfer networks' inference on this CPU: how many images per forward pass is fastest.

Depthwise networks are memory-bound on CPU (benchmarks.bench_limits: 12-19% of the matmul limit at 224 px),
so how much activation memory one pass touches matters: a batch whose activations stay in the caches can
beat a larger one. For each backbone (bench_limits.BACKBONES) and input size, the paths the study takes:

  extract           features.extract: bf16 autocast, channels_last, BatchNorm as trained (notebooks 03, 09, 10)
  reevaluate        the deployed model (backbone + linear head) in fp32 in ONNX Runtime, as
                    measure.reevaluate runs it on the CPU (notebook 05; measure.onnx_logits)
  reevaluate torch  the same in PyTorch eager with BatchNorm folded (measure.reevaluate on a GPU)

at every batch size in the sweep: images/s, speed-up over batch 64 (the default before this benchmark),
achieved GFLOP/s and its fraction of the matching matmul limit (measured at start), activation bytes
per pass, and the largest difference of the outputs from batch 64's (0 means the batch size changes
no number the study records). The last column marks the batch the study now uses,
features.batch_for(size, precision), or measure.onnx_batch for ONNX Runtime.

Inputs are random uint8 images (speed does not depend on pixel values); ImageNet weights where
available, else the same architecture untrained (bench_limits.transfer_model).

    python -m benchmarks.bench_batch            # ~4 min on 2 quiet cores
    python -m benchmarks.bench_batch --smoke    # seconds: checks the script, not the machine

Writes benchmarks/results/batch-<cpu>-<UTC date>.json ($BENCH_RESULTS_DIR overrides the folder).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks import timing
from benchmarks.bench_limits import BACKBONES, activation_bytes, limit_for, random_images, transfer_model
from studylib import measure, runtime
from studylib.recipes import engine, features

BASELINE = 64  # images per pass before this benchmark (feature extraction's and measure.reevaluate's default)
SWEEP = {224: (1, 2, 4, 8, 16, 32, 64), 64: (8, 16, 32, 64, 128, 256, 512)}
IMAGES = {224: 256, 64: 2048}  # images per timed pass over the sweep's batches
SMOKE_SWEEP, SMOKE_IMAGES = {64: (4, 64)}, {64: 64}
PATHS = ("extract", "reevaluate", "reevaluate torch")
PRECISION = {"extract": "bf16", "reevaluate": "fp32", "reevaluate torch": "fp32"}  # as the study runs each path


def run_path(path: str, model, x: torch.Tensor, batch: int) -> torch.Tensor:
    """The outputs of one pass of ``path`` over ``x`` in batches of ``batch`` (``model``: an ONNX Runtime
    session for "reevaluate")."""
    if path == "extract":
        return features.extract(model, x, precision=PRECISION[path], device="cpu", batch_size=batch,
                                progress=False).float()
    if path == "reevaluate":
        return measure.onnx_run(model, x, batch_size=batch)
    return engine.batched_logits(model, x, device="cpu", precision=PRECISION[path], batch_size=batch)


def sweep(name: str, size: int, path: str, batches: tuple[int, ...], n: int, limits: dict) -> list[dict]:
    model, init = transfer_model(name, size=size)
    x, _ = random_images(n)
    example = model.preprocess(x[:2])
    flops = timing.flops_per_example(model.backbone.eval(), example, backward=False)
    precision = PRECISION[path]
    act = activation_bytes(model.backbone, example, bytes_per_value=2 if precision == "bf16" else 4)
    chosen, by = ((measure.onnx_batch(model), "measure.onnx_batch") if path == "reevaluate" else
                  (features.batch_for(size, precision), "features.batch_for"))
    if path == "reevaluate torch":
        model, _ = measure.fold_batchnorm(model.use_channels_last(), x[:2])
    elif path == "reevaluate":
        model = measure.onnx_session(model, x[:2])  # ONNX Runtime folds BatchNorm itself
    _, limit = limit_for(precision, limits)
    reference = run_path(path, model, x, BASELINE)
    rows = []
    for b in batches:
        run_path(path, model, x[:b], b)  # warm-up: oneDNN primitives for this shape
        t0 = time.perf_counter()
        out = run_path(path, model, x, b)
        ips = n / (time.perf_counter() - t0)
        rep = timing.stage_report(f"{path} {name} {size}px", ips, flops, limit)
        rows.append({"stage": rep["stage"], "batch": b, "images_per_s": ips, "gflops": rep["gflops"],
                     "fraction_of_limit": rep["fraction_of_limit"], "activation_mb_per_pass": act * b / 1e6,
                     "max_abs_diff_vs_64": float((out - reference).abs().max()), "weights": init})
    base = next(r["images_per_s"] for r in rows if r["batch"] == BASELINE)
    for r in rows:
        r["speedup_vs_64"] = r["images_per_s"] / base
        r["default"] = f"<- {by}" if r["batch"] == chosen else ""
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script, not the machine")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_note = runtime.check_machine_load("bench_batch")
    limits = timing.machine_limits(quick=args.smoke)
    grid, images = (SMOKE_SWEEP, SMOKE_IMAGES) if args.smoke else (SWEEP, IMAGES)
    rows = [r for name in BACKBONES for size, batches in grid.items() for path in PATHS
            for r in sweep(name, size, path, batches, images[size], limits)]
    timing.print_table([{k: r[k] for k in ("stage", "batch", "images_per_s", "speedup_vs_64", "gflops",
                                           "fraction_of_limit", "activation_mb_per_pass", "max_abs_diff_vs_64",
                                           "default")} for r in rows])
    path = timing.write_results("batch_smoke" if args.smoke else "batch",
                                {"smoke": args.smoke, "threads": args.threads, "baseline_batch": BASELINE,
                                 "rows": rows, "machine_load_note": load_note, "environment": runtime.environment()},
                                limits=limits)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
