"""Evaluation: metrics from a run's saved test logits, confusion analysis, and the latency,
throughput and size measurements of deployable models. Evaluation never trains.

    wilson_interval(8711, 10000)                      # 95% CI of a test accuracy
    classification_report(logits, labels, classes)   # precision / recall / F1 per class
    cm = confusion_matrix(pred, labels, 10)
    top_confusion_pairs(cm, classes, k=5)            # both directions summed, ranked
    measure_latency(model, image_batch_of_1)         # median / p90 ms at a fixed thread count
"""

from __future__ import annotations

import copy
import io
import math
import os
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import runtime

# ---------------------------------------------------------------------------------------
# Accuracy and its uncertainty
# ---------------------------------------------------------------------------------------
Z95 = 1.959963984540054  # two-sided 95% standard-normal quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``correct`` successes of ``n``).

    Chosen over the normal approximation because it stays inside [0, 1] and keeps its coverage
    for small test subsets and accuracies near 0 or 1 (Brown, Cai & DasGupta 2001).
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0 test images, got n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n={n}], got {correct}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_with_ci(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    correct = int((logits.argmax(1) == labels).sum())
    lo, hi = wilson_interval(correct, len(labels))
    return {"correct": correct, "n": len(labels), "acc": correct / len(labels), "ci_low": lo, "ci_high": hi}


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, classes) -> pd.DataFrame:
    """Accuracy on each class: correct / images of that class."""
    pred = logits.argmax(1)
    rows = [{"class": name, "images": int((labels == c).sum()),
             "accuracy": (pred[labels == c] == c).float().mean().item()} for c, name in enumerate(classes)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Confusion
# ---------------------------------------------------------------------------------------
def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = images of true class t predicted as p."""
    pred, labels = np.asarray(pred, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if pred.shape != labels.shape:
        raise ValueError(f"pred {pred.shape} and labels {labels.shape} differ in shape")
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes,
                                                                                                 num_classes)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes) -> pd.DataFrame:
    """Precision, recall and F1 per class (0 where undefined: a class never predicted)."""
    cm = confusion_matrix(logits.argmax(1), labels, len(classes)).astype(float)
    tp = np.diag(cm)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return pd.DataFrame({"class": list(classes), "precision": precision, "recall": recall, "f1": f1,
                         "support": actual.astype(int)})


def top_confusion_pairs(cm: np.ndarray, classes, k: int = 5) -> pd.DataFrame:
    """The ``k`` class pairs most often confused, counting both directions (A->B plus B->A)."""
    n = len(classes)
    rows = [{"pair": f"{classes[a]} ↔ {classes[b]}", "a": classes[a], "b": classes[b],
             "a_to_b": int(cm[a, b]), "b_to_a": int(cm[b, a]), "total": int(cm[a, b] + cm[b, a])}
            for a in range(n) for b in range(a + 1, n)]
    rows.sort(key=lambda r: (-r["total"], r["pair"]))  # ties broken by name: a stable ranking
    return pd.DataFrame(rows[:k])


def pair_counts(cm: np.ndarray, classes, a: str, b: str) -> int:
    i, j = list(classes).index(a), list(classes).index(b)
    return int(cm[i, j] + cm[j, i])


def compare_pairs(cm_base: np.ndarray, cm_other: np.ndarray, classes, k: int = 5) -> pd.DataFrame:
    """Top-``k`` pairs ranked on ``cm_base`` (the scratch model) beside ``cm_other``'s counts
    for the same pairs, and the reduction in percent (positive = fewer confusions)."""
    top = top_confusion_pairs(cm_base, classes, k)
    other = [pair_counts(cm_other, classes, a, b) for a, b in zip(top.a, top.b)]
    out = top[["pair", "total"]].rename(columns={"total": "base"})
    out["other"] = other
    out["reduction_pct"] = [100.0 * (1 - o / s) if s else float("nan") for s, o in zip(out.base, other)]
    return out


def most_confident_mistakes(logits: torch.Tensor, labels: torch.Tensor, k: int = 8) -> pd.DataFrame:
    """The ``k`` wrong predictions with the highest softmax probability on the predicted class."""
    prob = logits.float().softmax(1)
    conf, pred = prob.max(1)
    wrong = torch.nonzero(pred != labels).flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:k]
    return pd.DataFrame({"index": order.tolist(), "true": labels[order].tolist(), "pred": pred[order].tolist(),
                         "confidence": conf[order].tolist()})


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
    times = []
    with num_threads(threads), _precision_context(precision):
        for _ in range(warmup):
            model(example)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(example)
            times.append(1000 * (time.perf_counter() - t0))
    t = np.asarray(times)
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(t.mean()),
            "min_ms": float(t.min()), "runs": runs, "warmup": warmup, "threads": threads,
            "batch": int(example.shape[0]), "precision": precision}


@torch.inference_mode()
def measure_throughput(model: nn.Module, batch: torch.Tensor, *, threads: int = 2, runs: int = 3,
                       precision: str = "fp32") -> dict:
    """Images per second of ``model`` on ``batch`` (one untimed warm-up call, then ``runs`` timed)."""
    model.eval()
    with num_threads(threads), _precision_context(precision):
        model(batch)
        t0 = time.perf_counter()
        for _ in range(runs):
            model(batch)
        seconds = time.perf_counter() - t0
    return {"images_per_s": runs * len(batch) / seconds, "batch": len(batch), "runs": runs, "threads": threads,
            "precision": precision}


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
    from . import runs

    env = cpu_info()
    machine = {"cpu": env["cpu"], "threads": ev["threads"], "torch": env["torch"], "evaluation": ev, "key": key}

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
