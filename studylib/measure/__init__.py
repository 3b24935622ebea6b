"""Measurements of deployable models: latency, throughput and size on this machine; the same model in ONNX
Runtime and with its BatchNorms folded; notebook 05's re-evaluation of every shipped model, its benchmark table
and its INT8 table. Every measurement is keyed (``runs.measured``) so a machine measures it once.

    measure_latency(model, image_batch_of_1)         # median / p90 ms at a fixed thread count
    onnx_logits(model, images)                       # the same function in ONNX Runtime (checked on 3 images)
    table, preds = reevaluate(rows, test, 0.05, check_per_class=100)  # every deployed model against its record
"""

from __future__ import annotations

import copy
import functools
import io
import os
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import config, runtime, timing
from ..report import WEIGHTS_NOTES, stats

# ---------------------------------------------------------------------------------------
# Latency, throughput, size
# ---------------------------------------------------------------------------------------
num_threads = runtime.num_threads


def _precision_context(precision: str):
    return runtime.autocast(torch.device("cpu"), precision)


@torch.inference_mode()
def measure_latency(model: nn.Module, example: torch.Tensor, *, threads: int = 2, warmup: int = 10, runs: int = 50,
                    precision: str = "fp32") -> dict:
    """Wall time of ``model(example)`` on the CPU: ``warmup`` untimed calls, then ``runs`` timed
    ones at ``threads`` threads. Returns median / p90 / mean / min in milliseconds."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    model.eval()
    with num_threads(threads), _precision_context(precision), runtime.flush_denormals():
        t = 1000 * np.asarray(timing.time_call(lambda: model(example), warmup=warmup, repeats=runs)["all_s"])
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(t.mean()),
            "min_ms": float(t.min()), "runs": runs, "warmup": warmup, "threads": threads,
            "batch": int(example.shape[0]), "precision": precision}


@torch.inference_mode()
def measure_throughput(model: nn.Module, batch: torch.Tensor, *, threads: int = 2, runs: int = 3,
                       precision: str = "fp32") -> dict:
    """Images per second of ``model`` on ``batch`` (one untimed warm-up call, then ``runs`` timed)."""
    model.eval()
    with num_threads(threads), _precision_context(precision), runtime.flush_denormals():
        images_per_s = timing.rate(lambda: model(batch), len(batch), warmup=1, repeats=runs)
    return {"images_per_s": images_per_s, "batch": len(batch), "runs": runs, "threads": threads,
            "precision": precision}


def state_dict_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())``: what a deployment ships (buffers included)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def cpu_info() -> dict:
    """The CPU facts every timing is reported with."""
    env = runtime.environment()
    return {"cpu": env["cpu"], "torch": env["torch"], "cpu_capability": env["cpu_capability"], "amx": env["amx"],
            "logical_cpus": os.cpu_count()}


def timings(model: nn.Module, images: torch.Tensor, ev: dict, *, key, force: bool = False) -> dict:
    """Batch-1 latency (median, p90) and throughput of a deployable model in fp32 and bf16 autocast,
    measured once per machine, settings and ``key`` (e.g. the run), then read back."""
    from .. import runs

    env = cpu_info()
    machine = {"cpu": env["cpu"], "threads": ev["threads"], "torch": env["torch"], "evaluation": ev, "key": key,
               "flush_denormal": True}  # denormal weights (the fine-tuned rows hold thousands) take a slow path

    def measure() -> dict:
        out = {}
        for prec in ("fp32", "bf16"):
            lat = measure_latency(model, images[:1], threads=ev["threads"], warmup=ev["latency_warmup"],
                                  runs=ev["latency_runs"], precision=prec)
            thr = measure_throughput(model, images[:ev["throughput_batch"]], threads=ev["threads"],
                                     runs=ev["throughput_runs"], precision=prec)
            out.update({f"CPU Latency {prec} (ms)": lat["median_ms"], f"Latency p90 {prec} (ms)": lat["p90_ms"],
                        f"Throughput {prec} (img/s)": thr["images_per_s"]})
        return out

    return runs.measured(str(key[0]), "timings", str(key[-1]), machine, measure, force=force)


# ---------------------------------------------------------------------------------------
# BatchNorm folding (the PyTorch path of the re-evaluation on a GPU)
# ---------------------------------------------------------------------------------------
def _max_diff_if_not_close(out: torch.Tensor, reference: torch.Tensor, tolerance: float) -> str | None:
    """None when ``out`` matches ``reference`` within ``tolerance`` times its largest magnitude; else what differs
    (the largest difference, or the shape) and the scale, for an error message."""
    scale = float(reference.abs().max().clamp_min(1e-12))
    if out.shape != reference.shape:
        return f"shape {tuple(out.shape)} instead of {tuple(reference.shape)}"
    if torch.allclose(out, reference, rtol=0, atol=tolerance * scale):
        return None
    return f"{float((out - reference).abs().max()):.3g} (scale {scale:.3g})"


class FoldError(RuntimeError):
    """Folding BatchNorm into the convolutions changed a model's outputs (it must not)."""


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor, *, tolerance: float = 1e-3) -> tuple[nn.Module, int]:
    """An inference copy of ``model`` (eval mode) in which every BatchNorm2d that reads a Conv2d's output
    directly is folded into that convolution (``w' = w * g / sqrt(var + eps)``, ``b' = (b - mean) * g /
    sqrt(var + eps) + beta``) and replaced by Identity; ``model`` itself is left untouched.

    Eval-mode BatchNorm is an affine map per channel, so the folded network computes the same function
    with one memory pass less per layer (depthwise networks are memory-bound on CPU: BatchNorm was 34-36%
    of MobileNetV2's 224-px time). The pairs are found by running ``example`` once with hooks (a
    BatchNorm whose input tensor is a convolution's output; each module called once), so no tracing is
    needed. Raises ``FoldError`` if the folded copy's outputs on ``example`` differ from the original's by
    more than ``tolerance`` times their largest magnitude. Returns (folded copy, number of BatchNorms folded)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    names = {m: n for n, m in folded.named_modules()}
    calls, produced, pairs, keep = {}, {}, [], []

    def on_conv(mod, _inp, out):
        calls[mod] = calls.get(mod, 0) + 1
        produced[id(out)] = mod
        keep.append(out)  # ids stay unique while the pass runs

    def on_bn(mod, inp, _out):
        calls[mod] = calls.get(mod, 0) + 1
        if id(inp[0]) in produced:
            pairs.append((produced[id(inp[0])], mod))

    hooks = [m.register_forward_hook(on_conv if isinstance(m, nn.Conv2d) else on_bn)
             for m in folded.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        reference = folded(example)
    finally:
        for h in hooks:
            h.remove()
    used = [c for c, _ in pairs]
    pairs = [(c, b) for c, b in pairs if calls[c] == 1 and calls[b] == 1 and used.count(c) == 1]
    for conv, bn in pairs:
        fused = fuse_conv_bn_eval(conv, bn)
        for target, replacement in ((conv, fused), (bn, nn.Identity())):
            parent, _, attr = names[target].rpartition(".")
            setattr(folded.get_submodule(parent) if parent else folded, attr, replacement)
    diff = _max_diff_if_not_close(folded(example), reference, tolerance)
    if diff:
        raise FoldError(f"folding {len(pairs)} BatchNorm layers of {type(model).__name__} changed its outputs by {diff}")
    return folded, len(pairs)


# ---------------------------------------------------------------------------------------
# The same model in ONNX Runtime (the re-evaluation's CPU path)
# ---------------------------------------------------------------------------------------
class OnnxExportError(RuntimeError):
    """ONNX Runtime's copy of a model computes something other than the model (it must not)."""


# Images per ONNX Runtime call in notebook 05's fp32 re-evaluation, by the model's input size (onnx_batch). Measured by
# benchmarks/bench_batch.py ("reevaluate"; AMD EPYC, 2 threads, 2026-12-03): at 224 px 4 images per call were the
# fastest or within 4% of it (MobileNetV2 240 images/s against 218 at 16; EfficientNet-Lite0 125 against 97 at 16);
# at 64 px 16 was within 22% of the best for both backbones. Sizes not swept (the scratch models' 32 px): ONNX_BATCH.
ONNX_BATCH = 16
ONNX_BATCH_BY_SIZE = {224: 4}


@torch.no_grad()
def onnx_session(model: nn.Module, example: torch.Tensor, *, check: torch.Tensor | None = None,
                 threads: int | None = None, tolerance: float = 1e-3):
    """``model`` (eval mode, fp32, its preprocessing included) traced on ``example``, exported to ONNX in
    memory and loaded into an ONNX Runtime CPU session with ``threads`` intra-op threads (None: torch's
    current count), batch size free. ONNX Runtime folds BatchNorm and fuses activations itself.

    Raises ``OnnxExportError`` if the session's logits on ``check`` (default ``example``; give a batch of
    another size, so that a trace that fixed the batch size is caught) differ from the model's by more than
    ``tolerance`` times their largest magnitude (as fold_batchnorm checks its copy)."""
    check = example if check is None else check
    model_bytes = onnx_export_bytes(model, example)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(check).float()
    finally:
        model.train(was_training)
    session = onnx_runtime_session(model_bytes, threads=threads)
    try:
        out = onnx_run(session, check, batch_size=len(check))
    except Exception as e:  # onnxruntime's own error types: a shape fixed by the trace, an unsupported op
        raise OnnxExportError(f"ONNX Runtime could not run its copy of {type(model).__name__} on "
                              f"{tuple(check.shape)}: {e}") from e
    diff = _max_diff_if_not_close(out, reference, tolerance)
    if diff:
        raise OnnxExportError(f"ONNX Runtime's copy of {type(model).__name__} differs from it: {diff}")
    return session


def onnx_export_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """``model`` (in eval mode, fp32) traced on ``example`` and exported to ONNX (opset 17, batch size free)."""
    import warnings

    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=17, input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}})
    finally:
        model.train(was_training)
    return buf.getvalue()


def onnx_runtime_session(model_bytes: bytes, *, threads: int | None = None):
    """An ONNX Runtime CPU session of a serialised ONNX model with ``threads`` intra-op threads (None: torch's
    current count) and one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no graph-optimizer notes on stderr
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def onnx_run(session, images: torch.Tensor, *, batch_size: int = ONNX_BATCH, progress: bool = False,
             desc: str = "evaluate") -> torch.Tensor:
    """float32 outputs of an onnx_session on ``images``, ``batch_size`` images per call."""
    from tqdm.auto import tqdm

    out = [session.run(None, {"images": images[i:i + batch_size].numpy()})[0]
           for i in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=not progress)]
    return torch.from_numpy(np.concatenate(out))


def onnx_batch(model: nn.Module) -> int:
    """Images per ONNX Runtime call for ``model``: ONNX_BATCH_BY_SIZE at the input size its preprocessing produces,
    else ONNX_BATCH."""
    return ONNX_BATCH_BY_SIZE.get(getattr(getattr(model, "preprocess", None), "size", None), ONNX_BATCH)


def onnx_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int | None = None, threads: int | None = None,
                progress: bool = False, desc: str = "evaluate") -> torch.Tensor:
    """float32 logits (N, classes) of ``model`` in fp32 on ``images`` (as the model takes them, e.g. uint8),
    computed by ONNX Runtime on the CPU (onnx_session: traced on 2 images, checked on 3), ``batch_size``
    images per call (None: onnx_batch): the same function as engine.batched_logits in fp32, by another engine."""
    if not len(images):
        return torch.empty(0)
    session = onnx_session(model, images[:2], check=images[:3], threads=threads)
    return onnx_run(session, images, batch_size=batch_size or onnx_batch(model), progress=progress, desc=desc)


# ---------------------------------------------------------------------------------------
# ONNX Runtime static INT8 (QDQ): the path that runs int8 convolutions with VNNI on these CPUs
# ---------------------------------------------------------------------------------------
def onnx_static_int8(model: nn.Module, calib_images: torch.Tensor, *, threads: int | None = None, **kw):
    """An ONNX Runtime session (``threads`` intra-op threads) of ``onnx_static_int8_model(model, calib_images, **kw)``."""
    return onnx_runtime_session(onnx_static_int8_model(model, calib_images, **kw), threads=threads)


def onnx_static_int8_model(model: nn.Module, calib_images: torch.Tensor, *, batch_size: int = 32,
                           keep_float_scopes: Sequence[str] = (), calibration: str = "minmax") -> bytes:
    """The serialised ONNX model of ``model`` (the deployed interface: uint8 images in, logits out) whose
    convolutions and matmuls run in int8: exported in fp32 (``onnx_session``'s exporter, checked
    against PyTorch), then ``onnxruntime.quantization.quantize_static`` in QDQ format: unsigned 8-bit
    activations and signed 8-bit per-channel weights (the U8S8 form that VNNI's dot products take), activation
    ranges from ``calib_images`` (training images, never test images) by ``calibration``: "minmax", "percentile"
    (99.999th percentile of |x|) or "entropy" (KL-divergence clipping, as TensorRT). Preprocessing (cast, resize,
    normalise) stays float, and so do the nodes whose names contain one of ``keep_float_scopes`` (module scopes
    such as ``"/features/features.0/"``: quantize.keep_float).

    PyTorch's PT2E path (``quantize.static_int8``) keeps the accuracy but runs slower than fp32 in eager mode here;
    ONNX Runtime fuses the QDQ pairs into QLinearConv kernels."""
    import os
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    from . import quantize

    quantize.require_calibration(calib_images, "onnx_static_int8")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if calibration not in methods:
        raise ValueError(f"onnx_static_int8: calibration {calibration!r} is not one of {sorted(methods)}")
    example = calib_images[:2]
    onnx_session(model, example, check=calib_images[:3])  # the fp32 export is faithful (or it raises)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": calib_images[i:i + batch_size].numpy()}
                                 for i in range(0, len(calib_images), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="int8_") as tmp:
        fp32, prep, int8 = (os.path.join(tmp, f) for f in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        with open(fp32, "wb") as f:
            f.write(onnx_export_bytes(model, example))
        quant_pre_process(fp32, prep, skip_symbolic_shape=True)  # shape inference + graph cleanup, as ORT advises
        nodes = [n.name for n in onnx.load(prep).graph.node]
        quantize_static(prep, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=[n for n in nodes if any(scope in n for scope in keep_float_scopes)],
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                        calibrate_method=methods[calibration],
                        # histogram calibrators merge every 4 batches instead of holding all activations at once
                        extra_options={} if calibration == "minmax" else {"CalibMaxIntermediateOutputs": 4})
        with open(int8, "rb") as f:
            return f.read()


class OnnxModel(nn.Module):
    """An ONNX Runtime model with the deployed interface (uint8 images in, float32 logits out), so the table's
    accuracy and latency code runs it as it runs a PyTorch model. ``size_bytes``: the serialised model."""

    def __init__(self, model_bytes: bytes, *, threads: int | None = None):
        super().__init__()
        self.session, self.size_bytes = onnx_runtime_session(model_bytes, threads=threads), len(model_bytes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onnx_run(self.session, x, batch_size=len(x))


# ---------------------------------------------------------------------------------------
# Notebook 05: re-evaluation and the benchmark table
# ---------------------------------------------------------------------------------------
class ReevaluationError(RuntimeError):
    """A deployed model does not reproduce its recorded test predictions."""


# Recorded probabilities are stored as float16 (runs.predictions_from_logits), which rounds a probability by up to
# 2.44e-4; recomputed in ONNX Runtime, all 9 deployed rows reproduce them within 2.44e-4 (200 test images each, AMD
# EPYC). A larger change means another model: tests/test_report.py alters one weight.
P_TOLERANCE = 1e-3


def reevaluate(rows: dict, test, tolerance_pts: float, *, check_per_class: int | None = None, seed: int = 0,
               device: str = "cpu", batch_size: int | None = None, progress: bool = False
               ) -> tuple[pd.DataFrame, dict]:
    """Run every deployed (ok) model on test images now, in fp32, and compare it with what its run recorded.

    ``check_per_class`` None: every test image; the recomputed accuracy must be within ``tolerance_pts`` points of
    the recorded one. ``check_per_class`` n: a fixed stratified sample of n images per class (data.stratified_subset
    with ``seed``), where every prediction must equal the recorded one and every recorded probability of the
    predicted class must be reproduced within P_TOLERANCE; the other images keep their recorded predictions.

    On the CPU the model runs in ONNX Runtime (onnx_logits, exported from the shipped weights and checked against
    PyTorch on three images; ``batch_size`` images per call, None: onnx_batch, by input size); on a GPU in PyTorch
    with its BatchNorms folded into the convolutions (fold_batchnorm; None: features.model_batch). Raises
    ReevaluationError naming each failing row and both figures. Returns (table, {row: predicted class of every test
    image})."""
    from .. import data
    from ..recipes import engine, features

    dev = runtime.resolve_device(device)
    idx = np.arange(len(test))
    if check_per_class is not None:
        idx = data.stratified_subset(test.labels, min(check_per_class, int(test.labels.bincount().min())), seed)
    images, labels = test.images[idx], test.labels[idx].numpy()
    recs, preds, failures = [], {}, []
    for key, d in rows.items():
        if not d.ok:
            continue
        if dev.type == "cpu":
            # The same function by another engine, faster on the CPU: on fresh clones on the 2-core AMD EPYC this
            # cell took 316 s for the 7 rows on the whole test set, against about 580 s in PyTorch eager with
            # BatchNorm folded; benchmarks.bench_limits times both per backbone.
            import onnxruntime

            lg = onnx_logits(d.model, images, batch_size=batch_size, progress=progress, desc=d.label)
            engine_used = f"onnxruntime {onnxruntime.__version__}"
        else:
            model, folded = fold_batchnorm(d.model, images[:2])
            batch = batch_size or features.model_batch(model, "fp32", dev)
            lg = engine.batched_logits(model, images, device=dev, precision="fp32", batch_size=batch,
                                       progress=progress, desc=d.label)
            engine_used = f"torch {torch.__version__} ({folded} BatchNorms folded)"
        prob = torch.softmax(lg.float(), 1)
        pred = prob.argmax(1).numpy()
        saved = d.run.predictions()
        same = pred == saved["pred"][idx]
        p_diff = float(np.abs(prob.max(1).values.numpy() - saved["p_pred"][idx].astype(np.float32)).max())
        full = np.asarray(saved["pred"]).copy()
        full[idx] = pred
        preds[key] = full
        recorded = float((saved["pred"][idx] == labels).mean())
        acc = float((pred == labels).mean())
        rec = {"model": d.label, "images checked": len(idx), "recorded (%)": 100 * recorded,
               "recomputed (%)": 100 * acc, "difference (points)": 100 * (acc - recorded),
               "same prediction as recorded (%)": 100 * float(same.mean()),
               "max |Δ probability|": p_diff, "engine": engine_used,
               "source": "shipped (runs/)" if d.run.shipped else "artifact store", "run": d.run.id}
        recs.append(rec)
        where = f"(run {d.run.id}, {rec['source']})"
        if check_per_class is None and abs(rec["difference (points)"]) > tolerance_pts:
            failures.append(f"{d.label}: recorded {rec['recorded (%)']:.2f}%, recomputed {acc * 100:.2f}% on all "
                            f"{len(idx):,} test images {where}")
        elif check_per_class is not None and (not same.all() or p_diff > P_TOLERANCE):
            failures.append(f"{d.label}: {int((~same).sum())} of the {len(idx):,} checked predictions differ from the "
                            f"recorded ones, probabilities by up to {p_diff:.2g} (tolerance {P_TOLERANCE:g}) {where}")
    if failures:
        what = (f"its recorded accuracy within {tolerance_pts} points" if check_per_class is None else
                "its recorded predictions and probabilities on the fixed sample")
        raise ReevaluationError(f"a deployed model does not reproduce {what}: " + "; ".join(failures)
                                + ". Restore the shipped files (git checkout runs/) or retrain the row.")
    table = pd.DataFrame(recs).set_index("model") if recs else pd.DataFrame()
    return table, preds


def benchmark_table(rows: dict, preds: dict, test_labels, timings: dict) -> pd.DataFrame:
    """The benchmark table: one row per study row (ok or not), accuracy with its Wilson interval from the
    re-evaluated predictions (reevaluate), parameters, size, latency/throughput (``timings[row]``), reference figures."""
    from .. import models
    from . import evaluate

    recs = []
    for key, d in rows.items():
        ref = d.row.reference
        rec = {"key": key, "Model": d.label, "Recipe": config.RECIPES[d.row.recipe]["label"], "Strategy": d.strategy,
               "Status": d.status}
        if d.ok:
            acc = evaluate.accuracy_with_ci(preds[key], test_labels)
            counts = models.count_params(d.model)
            m = d.metrics
            rec.update({"Accuracy (%)": 100 * acc["acc"], "CI low (%)": 100 * acc["ci_low"],
                        "CI high (%)": 100 * acc["ci_high"], "Test images": acc["n"],
                        "Trainable Params": counts["trainable"], "Total Params": counts["total"],
                        "Size (MB)": state_dict_bytes(d.model) / 1e6, **timings.get(key, {}),
                        "Trained on": runtime.device_label(m), "Train precision": m.get("precision"),
                        "Torch (training)": m.get("environment", {}).get("torch"),
                        "CUDA (training)": m.get("environment", {}).get("cuda"),
                        "Weights": (d.weights or {}).get("file"), "Run": d.run.id,
                        "Weights note": WEIGHTS_NOTES.get(d.row.model, "")})
        else:
            counts = d.row.architecture_counts()
            rec.update({"Trainable Params": counts["trainable"], "Total Params": counts["total"]})
        if ref:
            rec.update({"Reference Accuracy (%)": ref["test_acc_pct"], "Reference Trainable Params": ref["params_trainable"],
                        "Reference Total Params": ref["params_total"]})
            if "Accuracy (%)" in rec:
                rec["Difference (points)"] = rec["Accuracy (%)"] - ref["test_acc_pct"]
        recs.append(rec)
    return pd.DataFrame(recs).set_index("Model")


# ---------------------------------------------------------------------------------------
# INT8 (notebook 05)
# ---------------------------------------------------------------------------------------
INT8_VERSION = 2  # PT2E (torchao) static INT8; part of every INT8 result's key
TORCHVISION_INT8 = "int8 static, torchvision quantizable (eager, ReLU6 -> ReLU)"
FP32_ONNX = "fp32, onnxruntime"
INT8_ONNX = "int8 static, onnxruntime (QDQ, U8S8)"  # onnx_static_int8: int8 convolutions on VNNI
INT8_COMPILED = "int8 static, PT2E + torch.compile (oneDNN)"  # quantize.compiled_int8: int8 convolutions on VNNI
INT8_GOAL = {"max_loss_points": 1.0, "speedup": 2.0}  # an INT8 path that pays: within a point of fp32, >= 2x faster
STATIC_INT8 = ("int8 static", INT8_COMPILED, INT8_ONNX)  # the static paths of int8_table a row may choose


class NotCompiledHere(RuntimeError):
    """A PT2E-compiled INT8 measurement this machine kind has not shipped, in a render that does not compile."""


def int8_table(rows: dict, test, train_split, ev: dict, profile: str, *, force: bool = False,
               compile_missing: bool = True) -> pd.DataFrame:
    """fp32 vs INT8 per deployed row: accuracy on the test split (``ev["int8_test_per_class"]``, None = all),
    agreement with the fp32 predictions, size, latency at batch 1 and ``throughput_batch``. Static INT8 of the network
    body for every row: ONNX Runtime's QDQ, and PT2E (eager, and under ``torch.compile`` for the rows
    ``ev["int8_compiled_rows"]`` names, None: all; a row whose compile fails keeps its other paths, with the reason
    printed; ``compile_missing=False``: a compiled measurement this machine kind has not shipped is left out, said
    so, instead of compiled here); dynamic INT8 (int8 linears) for the scratch rows (a transfer row's only linear is
    its head). The column "Chosen INT8 path" marks each row's fastest static path at batch 1 within ``INT8_GOAL``'s
    accuracy loss.
    Accuracy results are runs keyed by the deployed run, calibration and test images (shippable); latency is
    measured per machine."""
    from .. import data, runs
    from ..recipes import engine
    from . import quantize

    cfg = config.get_profile(profile)
    idx = np.arange(len(test))
    if ev["int8_test_per_class"]:
        idx = data.stratified_subset(test.labels, min(ev["int8_test_per_class"], int(test.labels.bincount().min())),
                                     cfg["subset_seed"])
    x, y = test.images[idx], test.labels[idx]
    n_cal = min(ev["int8_calibration_images"], len(train_split))
    cal_idx = np.sort(np.random.default_rng(cfg["subset_seed"]).permutation(len(train_split))[:n_cal])
    calib = train_split.images[cal_idx]
    env = cpu_info()
    out = []
    for key, d in rows.items():
        if not d.ok:
            continue
        body = "net" if d.row.scratch else "backbone"
        fp32_pred = d.run.predictions()["pred"][idx]
        # MobileNetV2: the stem and first three blocks stay float (fully quantized, the error appears at the first
        # stride-2 inverted-residual block and compounds: relative feature error 0.54-0.68 vs 0.05-0.08 with them
        # kept, measured at 224 px on the genuine weights); ONNX Runtime's INT8 also keeps EfficientNet-Lite0's first
        # blocks float (studylib/measure/quantize.py)
        keep, onnx_keep = quantize.keep_float(d.row.model)
        kept = {"int8 static": keep, INT8_ONNX: onnx_keep}  # per variant, the layers left float
        onnx = lambda images: OnnxModel(onnx_static_int8_model(d.model, images, keep_float_scopes=onnx_keep),  # noqa: E731
                                        threads=ev["threads"])
        variants = {"fp32": lambda: d.model,
                    # the same fp32 network in ONNX Runtime (notebook 05 re-evaluated it: the recorded predictions)
                    FP32_ONNX: lambda: OnnxModel(onnx_export_bytes(d.model, x[:2]),
                                                          threads=ev["threads"])}
        # latency does not depend on the calibration values: time a model calibrated on a few images
        timed = {}
        # the best networks get only the INT8 path that pays (ONNX Runtime): PT2E's x86 quantizer refuses the strong
        # network's padding="same" convolutions ("is not an aten conv2d operator"), and runs slower than fp32 in
        # eager mode on every row it quantizes
        if not d.row.best:
            pt2e = functools.cache(lambda n: quantize.static_int8(d.model, calib[:n], body, keep_float=keep))
            variants["int8 static"], timed["int8 static"] = (lambda: pt2e(n_cal)), (lambda: pt2e(32))
            if ev["int8_compiled_rows"] is None or key in ev["int8_compiled_rows"]:
                kept[INT8_COMPILED] = keep
                variants[INT8_COMPILED] = lambda: quantize.compiled_int8(pt2e(n_cal), body)
                timed[INT8_COMPILED] = lambda: quantize.compiled_int8(pt2e(32), body)
        variants[INT8_ONNX], timed[INT8_ONNX] = (lambda: onnx(calib)), (lambda: onnx(calib[:32]))
        if d.row.scratch and not d.row.best:
            variants["int8 dynamic"] = lambda: quantize.dynamic_int8(d.model)
        if d.row.model.startswith("mobilenet_v2"):  # cross-check: torchvision's quantizable MobileNetV2, all int8
            variants[TORCHVISION_INT8] = lambda: quantize.torchvision_mobilenet_int8(d.model, calib)
            timed[TORCHVISION_INT8] = lambda: quantize.torchvision_mobilenet_int8(d.model, calib[:32])
        for variant, build in variants.items():
            rkey = {"run": d.run.id, "variant": variant, "version": INT8_VERSION,
                    "keep_float": list(kept.get(variant, ())),
                    "test": data.split_key(data.CifarSplit(x, y, test.classes, "int8")), "calibration": n_cal,
                    "subset_seed": cfg["subset_seed"]}
            built = {}

            def model(for_timing: bool = False):
                if variant == INT8_COMPILED and not compile_missing:
                    raise NotCompiledHere("not measured on this machine kind yet (compiling takes about a minute per "
                                          "batch size at 224 px): python run_all.py --publish measures it")
                k = "t" if for_timing and variant in timed else "m"
                if k not in built:
                    built[k] = timed[variant]() if k == "t" else build()
                return built[k]

            def accuracy() -> dict:
                pred = engine.batched_logits(model(), x, batch_size=100).argmax(1).numpy()
                return {"pred": pred.tolist(), "acc": float((pred == y.numpy()).mean())}

            def latency() -> dict:
                m = model(True)
                ms = {b: measure_latency(m, x[:b], threads=ev["threads"], warmup=w, runs=n)["median_ms"]
                      for b, w, n in ((1, ev["latency_warmup"], ev["latency_runs"]),
                                      (ev["throughput_batch"], 1, ev["throughput_runs"]))}
                return {"latency_ms": ms[1], "latency_batch_ms": ms[ev["throughput_batch"]],
                        "size_mb": (m.size_bytes if isinstance(m, OnnxModel) else state_dict_bytes(m))
                        / 1e6}

            try:
                if variant in ("fp32", FP32_ONNX):  # the run's recorded predictions (notebook 05 re-evaluated them)
                    acc = {"pred": fp32_pred, "acc": float((fp32_pred == y.numpy()).mean())}
                else:
                    acc = runs.measured(profile, "int8", key, rkey, accuracy, force=force)
                # measure_latency flushes denormals (as timings() does): latencies timed before it did are not reused
                lat = runs.measured(profile, "int8_latency", key,
                                    {**rkey, "cpu": env["cpu"], "torch": env["torch"], "threads": ev["threads"],
                                     "batches": [1, ev["throughput_batch"]], "flush_denormal": True},
                                    latency, force=force)
            except Exception as e:  # torch.compile raises many types (no C++ compiler, an unsupported op, ...)
                if variant != INT8_COMPILED:
                    raise
                why = str(e) if isinstance(e, NotCompiledHere) else \
                    f"torch.compile failed ({type(e).__name__}: {str(e).strip()[:300]})"
                print(f"{d.label}: {variant} left out: {why}; its other INT8 paths stand")
                continue
            pred = np.asarray(acc["pred"])
            lo, hi = stats.wilson_interval(int((pred == y.numpy()).sum()), len(y))
            paired = stats.mcnemar(fp32_pred == y.numpy(), pred == y.numpy())  # INT8 vs fp32, same images
            out.append({"key": key, "Model": d.label, "Variant": variant,
                        "Engine": "onnxruntime" if variant in (FP32_ONNX, INT8_ONNX) else "torch",
                        "Accuracy (%)": 100 * acc["acc"],
                        "CI low (%)": 100 * lo, "CI high (%)": 100 * hi,
                        "Agreement with fp32 (%)": 100 * float((pred == fp32_pred).mean()),
                        "n01 (fp32 wrong, INT8 right)": paired["n01"], "n10 (fp32 right, INT8 wrong)": paired["n10"],
                        "McNemar p (vs fp32)": paired["p_value"],
                        "Size (MB)": lat["size_mb"], "Latency (ms)": lat["latency_ms"],
                        f"Latency, batch {ev['throughput_batch']} (ms)": lat["latency_batch_ms"], "Test images": len(y),
                        "Calibration images": n_cal if variant in ("int8 static", INT8_COMPILED, TORCHVISION_INT8,
                                                                   INT8_ONNX) else 0,
                        "Float layers kept": ", ".join(kept.get(variant, ()))})
    t = pd.DataFrame(out)
    if len(t):
        base = t[t.Variant == "fp32"].set_index("key")
        t["Δ accuracy (points)"] = t["Accuracy (%)"] - t.key.map(base["Accuracy (%)"])
        t["Size ratio"] = t["Size (MB)"] / t.key.map(base["Size (MB)"])
        batch = f"Latency, batch {ev['throughput_batch']} (ms)"
        t["Speed-up"] = t.key.map(base["Latency (ms)"]) / t["Latency (ms)"]
        t[f"Speed-up, batch {ev['throughput_batch']}"] = t.key.map(base[batch]) / t[batch]
        # against fp32 in the same engine: what quantizing buys, apart from what changing the engine buys
        same = t[t.Variant.isin(["fp32", FP32_ONNX])].set_index(["key", "Engine"])["Latency (ms)"]
        t["Speed-up vs fp32, same engine"] = [same.get((k, e), np.nan) / v for k, e, v in
                                              zip(t.key, t.Engine, t["Latency (ms)"])]
        t["Chosen INT8 path"] = chosen_int8(t)
    return t


def chosen_int8(t: pd.DataFrame) -> pd.Series:
    """Per row of ``int8_table``: True for its INT8 path of choice, the static one (PT2E eager or compiled, ONNX
    Runtime) with the highest batch-1 speed-up over PyTorch fp32 among those that lose at most
    ``INT8_GOAL["max_loss_points"]`` of fp32's accuracy; a row with none such has no choice (no INT8 path that
    keeps the accuracy). torchvision's quantizable MobileNetV2 is another function (ReLU6 -> ReLU): never chosen."""
    ok = t.Variant.isin(STATIC_INT8) & (t["Δ accuracy (points)"] >= -INT8_GOAL["max_loss_points"])
    best = t[ok].groupby("key")["Speed-up"].idxmax()
    return t.index.isin(best.values)


def int8_summary(t: pd.DataFrame) -> pd.DataFrame:
    """One line per row of ``int8_table``: its chosen INT8 path (``chosen_int8``), accuracy change, speed-ups at
    both batch sizes and whether it meets ``INT8_GOAL``; a row without a path within the accuracy loss says so and
    gives its most accurate static path instead."""
    batch = next(c for c in t.columns if c.startswith("Speed-up, batch"))
    recs = []
    for key, g in t.groupby("key", sort=False):
        chosen = g[g["Chosen INT8 path"]]
        static = g[g.Variant.isin(STATIC_INT8)]
        r = chosen.iloc[0] if len(chosen) else static.loc[static["Δ accuracy (points)"].idxmax()]
        met = lambda speedup: bool(len(chosen)) and speedup >= INT8_GOAL["speedup"]  # noqa: E731
        recs.append({"Model": r.Model, "INT8 path": r.Variant if len(chosen) else f"none within "
                     f"{INT8_GOAL['max_loss_points']:g} point (most accurate: {r.Variant})",
                     "Δ accuracy (points)": r["Δ accuracy (points)"], "Speed-up, batch 1": r["Speed-up"],
                     batch: r[batch], "Meets the goal at batch 1": met(r["Speed-up"]),
                     f"Meets the goal at {batch.removeprefix('Speed-up, ')}": met(r[batch])})
    return pd.DataFrame(recs).set_index("Model")
