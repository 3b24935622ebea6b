"""INT8 against fp32 for every deployed row, on this CPU: ONNX Runtime's static QDQ INT8
(studylib.measure.onnx_static_int8, int8 convolutions with VNNI) and PyTorch's PT2E static INT8
(studylib.measure.quantize.static_int8, as notebook 05's int8.csv builds it; with --pt2e-compiled also under
torch.compile, where inductor lowers it to oneDNN's int8 kernels), each timed against the fp32 paths the benchmark
table uses (PyTorch eager; and ONNX Runtime fp32, the same engine as the INT8 one), in one process.

Per row: latency at batch 1 and batch 64 (median of timed calls after warm-up calls), the speed-up over
PyTorch fp32 and over ONNX Runtime fp32, and accuracy on ``--test-images`` test images (all 10,000 by
default; a stratified subset with --test-per-class) beside the fp32 accuracy on the same images.
Calibration: ``--calibration`` training images (never test images), drawn by the protocol's subset_seed.

    python -m benchmarks.bench_int8                          # ~10 min on 2 cores (full test set)
    python -m benchmarks.bench_int8 --test-per-class 100 --rows custom_cnn mobilenet_v2_float
    python -m benchmarks.bench_int8 --smoke                  # seconds: one row, tiny sizes (checks the script)
    python -m benchmarks.bench_int8 --rows mobilenet_v2_float --test-per-class 10 --pt2e-compiled --profile-batch1

``--profile-batch1``: where a batch-1 call of PyTorch's fp32 path and of the compiled PT2E INT8 path spends its time
(the preprocess's share, timed alone, and the operators with the most self CPU time over 20 calls): why an INT8 path
is not faster still.

Needs the shipped runs (runs/) and CIFAR-10. Writes benchmarks/results/int8-<cpu>-<UTC date>.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks import profile_stages, timing
from studylib import config, data, measure, runtime
from studylib.measure import quantize
from studylib.serve import deploy


def latency_ms(call, batch: torch.Tensor, *, warmup: int, runs: int) -> float:
    return 1000 * timing.time_call(lambda: call(batch), warmup=warmup, repeats=runs)["median_s"]


def row_results(d, x, y, calib, args) -> list[dict]:
    """fp32 (PyTorch, ONNX Runtime) and INT8 (ONNX Runtime QDQ, PT2E) of one deployed row."""
    model = d.model.eval()
    keep, onnx_keep = quantize.keep_float(d.row.model)
    t0 = time.perf_counter()
    paths = {"fp32 torch": lambda b: model(b),
             "fp32 onnxruntime": measure.onnx_session(model, x[:2], check=x[:3], threads=args.threads)}
    paths["int8 onnxruntime (QDQ)"] = measure.onnx_static_int8(model, calib, threads=args.threads,
                                                               keep_float_scopes=onnx_keep)
    build_s = time.perf_counter() - t0
    if not args.skip_pt2e and not d.row.best:  # PT2E's x86 quantizer refuses the strong network (quantize.py)
        body = "net" if d.row.scratch else "backbone"
        int8 = quantize.static_int8(model, calib, body, keep_float=keep)
        paths["int8 torch (PT2E)"] = lambda b: int8(b)
        if args.pt2e_compiled:  # inductor lowers the QDQ graph to oneDNN int8 kernels (one compile per batch size)
            compiled = quantize.compiled_int8(int8, body)
            paths["int8 torch (PT2E, torch.compile)"] = lambda b: compiled(b)
    out = []
    profiled = ("fp32 torch", "int8 torch (PT2E, torch.compile)") if args.profile_batch1 else ()
    for name, path in paths.items():
        call = (lambda b, s=path: measure.onnx_run(s, b, batch_size=len(b))) if not callable(path) else path
        with torch.no_grad(), runtime.flush_denormals():  # as notebook 05's measure_latency times every path
            lat = {bs: latency_ms(call, x[:bs], warmup=args.warmup, runs=args.runs) for bs in (1, 64)}
            pad = -len(x) % 64  # whole batches of 64 (a compiled path compiles once per batch size)
            xp = torch.cat([x, x[:pad]])
            pred = torch.cat([call(xp[i:i + 64]).argmax(1) for i in range(0, len(xp), 64)]).numpy()[:len(x)]
        out.append({"row": d.row.key, "label": d.label, "path": name, "latency_ms_batch1": lat[1],
                    "latency_ms_batch64": lat[64], "accuracy": float((pred == y).mean()), "test_images": len(y),
                    "pred": pred})
        if name in profiled:
            out[-1]["batch1_profile"] = batch1_profile(model, call, x[:1], args)
    base_torch, base_ort = out[0], out[1]
    for r in out:
        r["speedup_vs_torch_fp32_b1"] = base_torch["latency_ms_batch1"] / r["latency_ms_batch1"]
        r["speedup_vs_torch_fp32_b64"] = base_torch["latency_ms_batch64"] / r["latency_ms_batch64"]
        r["speedup_vs_ort_fp32_b1"] = base_ort["latency_ms_batch1"] / r["latency_ms_batch1"]
        r["speedup_vs_ort_fp32_b64"] = base_ort["latency_ms_batch64"] / r["latency_ms_batch64"]
        r["delta_points_vs_fp32"] = 100 * (r["accuracy"] - base_torch["accuracy"])
        r["agreement_with_fp32"] = float((r.pop("pred") == base_torch["pred"]).mean()) if r is not base_torch else 1.0
    base_torch.pop("pred", None)
    out[0]["build_s_onnx"] = build_s
    return out


def batch1_profile(model, call, x1: torch.Tensor, args, calls: int = 20) -> dict:
    """Where a batch-1 call spends its time: the deployed model's float preprocess (uint8 -> resized, normalised
    float) timed alone, its share of the call, and the operators with the most self CPU time over ``calls`` calls."""
    with torch.no_grad(), runtime.flush_denormals():
        pre = latency_ms(model.preprocess, x1, warmup=args.warmup, runs=args.runs)
        total = latency_ms(call, x1, warmup=args.warmup, runs=args.runs)
        ops = profile_stages.top_operators(lambda: [call(x1) for _ in range(calls)], n=12)
    print(f"  batch-1 profile: preprocess {pre:.2f} of {total:.2f} ms ({pre / total:.0%})", flush=True)
    timing.print_table([{k: r[k] for k in ("op", "share", "calls")} for r in ops])
    return {"preprocess_ms": pre, "call_ms": total, "preprocess_share": pre / total, "top_ops": ops,
            "profiled_calls": calls}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", nargs="*", default=None, help="deployed row keys (default: every ok row)")
    ap.add_argument("--test-per-class", type=int, default=None, help="stratified test subset (default: all)")
    ap.add_argument("--calibration", type=int, default=512, help="training images for the INT8 scales")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--skip-pt2e", action="store_true", help="leave out PyTorch's PT2E INT8 (slow to build)")
    ap.add_argument("--pt2e-compiled", action="store_true",
                    help="also PT2E INT8 under torch.compile (inductor, oneDNN int8 kernels; ~1 min to compile per "
                         "batch size and row at 224 px on 2 cores; needs a C++ compiler)")
    ap.add_argument("--profile-batch1", action="store_true",
                    help="also profile batch-1 calls of PyTorch fp32 and (with --pt2e-compiled) the compiled INT8 path")
    ap.add_argument("--smoke", action="store_true", help="the Custom CNN row only, 10 test images per class, 64 "
                                                          "calibration images: checks the script, not the machine")
    args = ap.parse_args(argv)
    profile = "full"  # the shipped runs: the deployed rows of the report
    if args.smoke:
        args.test_per_class, args.calibration, args.warmup, args.runs = 10, 64, 1, 2
        args.rows = args.rows or ["custom_cnn"]
    torch.set_num_threads(args.threads)
    load_note = runtime.check_machine_load("bench_int8")
    limits = timing.machine_limits(quick=args.smoke)
    cfg = config.get_profile(profile)
    train, test = data.load_profile_data(cfg)
    idx = np.arange(len(test)) if args.test_per_class is None else \
        data.stratified_subset(test.labels, args.test_per_class, cfg["subset_seed"])
    x, y = test.images[idx], test.labels[idx].numpy()
    cal = np.sort(np.random.default_rng(cfg["subset_seed"]).permutation(len(train))[:args.calibration])
    calib = train.images[cal]
    rows = []
    for key, d in deploy.load_all(profile, keys=tuple(args.rows) if args.rows else None).items():
        if not d.ok:
            continue
        print(f"{d.label} ...", flush=True)
        rows += row_results(d, x, y, calib, args)
    timing.print_table([{k: r[k] for k in ("label", "path", "latency_ms_batch1", "latency_ms_batch64",
                                           "speedup_vs_torch_fp32_b1", "speedup_vs_torch_fp32_b64",
                                           "speedup_vs_ort_fp32_b1", "delta_points_vs_fp32")} for r in rows])
    path = timing.write_results("int8_smoke" if args.smoke else "int8",
                                {"smoke": args.smoke, "threads": args.threads, "calibration_images": args.calibration,
                                 "test_images": len(y), "rows": rows, "machine_load_note": load_note,
                                 "environment": runtime.environment()}, limits=limits)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
