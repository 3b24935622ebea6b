"""Any image -> what every deployed study model predicts for it; also ``python -m studylib.serve.predict``.

    image, note = load_image("photo.jpg")          # uint8 (3, 32, 32) RGB + what was done to it
    results = predict_all(image, deploy.load_all("full", indexed=True))
    print(format_table(results))

    python -m studylib.serve.predict cat.jpg photos/ --model all --top 5      # folders are searched recursively
    python -m studylib.serve.predict photos/ --format json --output preds.json
    python -m studylib.serve.predict cat.jpg --time                            # + latency, after 10 warm-up passes
    python -m studylib.serve.predict --examples 1        # the demo's CIFAR-10 example images

Exit codes: 0 every input predicted; 1 an input could not be read as an image; 2 a usage error (argparse);
3 no deployed model; 4 CIFAR-10 needed but not found (``--examples``, or a row that ``runs/DEPLOYED.json``
does not list). Class names come from each deployed run's description (CIFAR-10's fixed ten,
``data.CLASSES``): predicting needs no copy of the dataset.

Inference is batched (``--batch-size`` images per forward pass). Latency is reported only with ``--time``:
the median of ``TIMED`` single-image forward passes after ``WARMUP`` untimed ones (the first passes allocate
memory and pick kernels: the issue that asked for this measured 248 ms for a first pass against 5 ms warm).

Preprocessing (the one choice the demo and the command line share): the image is decoded,
converted to RGB, centre-cropped to a square and downsampled with area averaging (PIL BOX,
antialiased) to 32x32 uint8 -- the resolution every study model was trained on. Each deployed
model then does its own preprocessing exactly as in training (normalisation for the scratch
models; bilinear upscale 32->224 and the backbone's ImageNet normalisation for the transfer
models; see studylib.serve.deploy).

Bad input never raises anything but ``ImageError`` (a ValueError whose message says what was
wrong and what to do): not an image, an empty or truncated file, a format outside
``FORMATS``, or more than ``MAX_PIXELS`` pixels (checked from the header, before decoding, so a
decompression bomb costs nothing). Grayscale, palette, alpha, 16-bit, CMYK and animated images
are converted, and the note says how.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .. import artifacts, config, data, runs, runtime, weights
from . import deploy

# Formats the demo accepts (Pillow format names). Others are refused by name rather than
# handed to one of Pillow's many rarer parsers.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
# 40 megapixels: above any camera photo people upload (a 48 MP phone saves 12 MP by default),
# far below what would exhaust memory once decoded (40 MP x 4 bytes = 160 MB). Checked on the
# header's width x height before any pixel is decoded; Pillow's own guard (MAX_IMAGE_PIXELS,
# 89 MP warning / 179 MP error) stays in place behind it.
MAX_PIXELS = 40_000_000
MAX_BYTES = 64 * 2**20   # 64 MiB: larger files are refused before being read
SIZE = 32                # every study model's input: CIFAR-10's 32x32 thumbnails


class ImageError(ValueError):
    """An input that cannot be turned into an image for the models; the message says why."""


def _describe(source) -> str:
    return f"{source}" if isinstance(source, (str, os.PathLike)) else "the uploaded file"


def _read_bytes(source: str | os.PathLike | bytes | bytearray | memoryview) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: no such file.")
        if path.is_dir():
            raise ImageError(f"{path} is a folder; pass image files (the command line expands folders).")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImageError(f"{path}: {size / 2**20:.0f} MiB is larger than the {MAX_BYTES // 2**20} MiB "
                             "limit; save a smaller copy of the image.")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{path}: cannot be read ({exc.strerror or exc}).") from exc
    if len(raw) == 0:
        raise ImageError(f"{_describe(source)} is empty (0 bytes); choose an image file.")
    if len(raw) > MAX_BYTES:
        raise ImageError(f"{_describe(source)}: {len(raw) / 2**20:.0f} MiB is larger than the "
                         f"{MAX_BYTES // 2**20} MiB limit; use a smaller copy of the image.")
    return raw


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; alpha is composited on white, high bit depths rescaled."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0  # 0..65535 -> 0..255
            notes.append("16-bit grayscale scaled to 8 bits")
        else:
            lo, hi = float(arr.min()), float(arr.max())
            if lo >= 0 and hi <= 255:
                notes.append(f"{'32-bit integer' if mode == 'I' else 'floating-point'} grayscale read as 8-bit")
            elif lo >= 0 and hi <= 65535 and mode == "I":
                arr = arr / 257.0
                notes.append("16-bit grayscale scaled to 8 bits")
            else:
                arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
                notes.append(f"{mode}-mode values {lo:g}..{hi:g} stretched to 0..255")
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette image converted to RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if alpha.min() < 255:
            notes.append("transparent areas composited on white")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "1"):
        notes.append("grayscale: gray copied to R, G and B (the models have only seen colour images)")
        return im.convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB (naive conversion, no colour profile)")
        return im.convert("RGB")
    try:
        out = im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"colour mode {mode} cannot be converted to RGB ({exc}); save the image as RGB.") from exc
    notes.append(f"{mode} converted to RGB")
    return out


def load_image(source: str | os.PathLike | bytes | bytearray | memoryview, *, size: int = SIZE
               ) -> tuple[torch.Tensor, str]:
    """An image file (path or bytes) -> (uint8 RGB tensor (3, size, size), a note saying what was done).

    Raises ImageError, and only ImageError, when the input cannot be used.
    """
    raw = _read_bytes(source)
    what = _describe(source)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; our own limit below is lower.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(raw), formats=FORMATS)  # reads the header only
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{what}: {w:,}x{h:,} pixels ({w * h / 1e6:,.0f} megapixels) is more than the "
                                 f"{MAX_PIXELS / 1e6:.0f}-megapixel limit (a guard against decompression bombs); "
                                 "use a smaller copy of the image.")
            if w < 1 or h < 1:
                raise ImageError(f"{what}: the image has no pixels ({w}x{h}).")
            fmt, mode = im.format, im.mode
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                im.seek(0)
                notes.append(f"animated ({frames} frames): first frame used")
            if fmt == "JPEG":
                im.draft("RGB", (size * 4, size * 4))  # decode large JPEGs at 1/2..1/8 scale: faster, same result
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im, notes)
    except ImageError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{what} is not an image in a supported format ({', '.join(FORMATS)}); "
                         "choose a PNG, JPEG, WebP, BMP or GIF file.") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{what}: more pixels than the {MAX_PIXELS / 1e6:.0f}-megapixel limit (a guard against "
                         f"decompression bombs; Pillow: {exc}); use a smaller copy of the image.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError, struct.error) as exc:
        # Pillow signals truncated or corrupt data with any of these.
        raise ImageError(f"{what} could not be decoded ({type(exc).__name__}: {exc}); the file is truncated "
                         "or damaged. Re-save or re-download it.") from exc
    notes.insert(0, f"{w}x{h} {fmt} {mode}")
    W, H = im.size  # after the EXIF rotation
    side = min(W, H)
    box = ((W - side) / 2, (H - side) / 2, (W + side) / 2, (H + side) / 2)
    if W != H:
        notes.append(f"centre {min(w, h)}x{min(w, h)} square cropped")
    small = im.resize((size, size), Image.Resampling.BOX, box=box)
    notes.append(f"{'downsampled' if side >= size else 'upsampled'} to {size}x{size}")
    arr = np.asarray(small, dtype=np.uint8).transpose(2, 0, 1).copy()
    return torch.from_numpy(arr), "; ".join(notes)


# ---------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------
WARMUP = 10   # untimed single-image passes before timing (--time): first calls allocate and pick kernels
TIMED = 20    # timed single-image passes; their median is the reported latency
BATCH = 64    # images per forward pass when predicting


@dataclass
class ModelResult:
    name: str
    label: str
    status: str                                   # deploy.OK, or why the model did not run
    top: list[tuple[str, float]] = field(default_factory=list)   # (class, probability), best first
    ms: float | None = None                       # latency (``latency_ms``), only when asked for
    error: str | None = None                      # a failure while predicting (the others still run)
    tta: bool = False                             # predicted with the row's test-time augmentation

    @property
    def ok(self) -> bool:
        return self.status == deploy.OK and self.error is None

    @property
    def prediction(self) -> str | None:
        return self.top[0][0] if self.top else None


def latency_ms(model: torch.nn.Module, image: torch.Tensor, *, warmup: int = WARMUP, repeats: int = TIMED) -> float:
    """Median wall time in milliseconds of ``repeats`` single-image forward passes of a uint8 (3, 32, 32) image,
    after ``warmup`` (at least ``WARMUP``) untimed passes; CPU, fp32, torch's thread setting."""
    if warmup < WARMUP or repeats < 1:
        raise ValueError(f"latency needs at least {WARMUP} warm-up passes and 1 timed pass, got {warmup} and {repeats}")
    x = image.unsqueeze(0)
    times = []
    with torch.inference_mode(), runtime.flush_denormals():  # as the benchmark table times it
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def latency_note(warmup: int = WARMUP, repeats: int = TIMED) -> str:
    """How ``latency_ms`` measured, for every output that shows a latency."""
    return (f"latency: median of {repeats} single-image fp32 forward passes after {warmup} warm-up passes, "
            f"{torch.get_num_threads()} CPU thread(s), denormals flushed to zero, torch {torch.__version__}")


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, SIZE, SIZE):
        raise ValueError(f"expected uint8 (N, 3, {SIZE}, {SIZE}) images, got {images.dtype} {tuple(images.shape)}")


def predict_batch(images: torch.Tensor, deployed: dict[str, deploy.Deployed], classes: Sequence[str] | None = None,
                  top: int = 5, *, batch_size: int = BATCH, tta: bool = False) -> list[list[ModelResult]]:
    """For each of N uint8 (3, 32, 32) images, one ModelResult per deployed model (in the given order), each model
    run on ``batch_size`` images per forward pass. ``classes``: names of the ten outputs (default: each model's
    description's). ``tta``: rows that offer test-time augmentation use it (``Deployed.tta_model``). A model that
    fails keeps its error; the others still run."""
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    per_image: list[list[ModelResult]] = [[] for _ in range(len(images))]
    for name, d in deployed.items():
        use_tta = bool(tta and d.ok and d.tta_level is not None)
        names = list(classes) if classes is not None else list(d.classes)
        k = max(1, min(int(top), len(names)))
        label = d.label + (f" + TTA (level {d.tta_level})" if use_tta else "")
        results = [ModelResult(name, label, d.status, tta=use_tta) for _ in range(len(images))]
        if d.ok:
            try:
                model = d.tta_model() if use_tta else d.model
                with torch.inference_mode(), runtime.flush_denormals():  # denormal weights: the CPU's slow path
                    probs = torch.cat([torch.softmax(model(images[i:i + batch_size]).float(), dim=1)
                                       for i in range(0, len(images), batch_size)])
                p, idx = probs.topk(k, dim=1)
                for r, pv, iv in zip(results, p.tolist(), idx.tolist()):
                    r.top = [(names[i], float(v)) for v, i in zip(pv, iv)]
            except Exception as exc:  # one broken model must not hide the others' results
                for r in results:
                    r.error = f"{type(exc).__name__}: {exc}"
        for i, r in enumerate(results):
            per_image[i].append(r)
    return per_image


def predict_all(image: torch.Tensor, deployed: dict[str, deploy.Deployed], classes: Sequence[str] | None = None,
                top: int = 5, *, timed: bool | dict = False, tta: bool = False) -> list[ModelResult]:
    """One ModelResult per deployed model for one uint8 (3, 32, 32) image. ``timed``: each also gets its
    ``latency_ms`` on this image; a dict is a cache of latencies by model (and TTA), measured once per model and
    process (the demo and the app time each model on its first image, not on every click)."""
    if image.dtype != torch.uint8 or tuple(image.shape) != (3, SIZE, SIZE):
        raise ValueError(f"expected a uint8 (3, {SIZE}, {SIZE}) image, got {image.dtype} {tuple(image.shape)}")
    results = predict_batch(image[None], deployed, classes, top, tta=tta)[0]
    if timed is not False:
        cache = timed if isinstance(timed, dict) else {}
        for r in results:
            if r.ok:
                d = deployed[r.name]
                key = (r.name, r.tta, id(d.model))
                if key not in cache:
                    cache[key] = latency_ms(d.tta_model() if r.tta else d.model, image)
                r.ms = cache[key]
    return results


def format_table(results: Sequence[ModelResult], top: int = 5) -> str:
    """A plain-text table: one line per model (prediction, top-k with probabilities; latency when measured)."""
    width = max([len("model")] + [len(r.label) for r in results])
    tops = {r.label: ", ".join(f"{c} {p:.3f}" for c, p in r.top) for r in results if r.ok}
    tw = max([len(f"top-{top} (probability)")] + [len(t) for t in tops.values()])
    timed = any(r.ms is not None for r in results)
    lines = [f"{'model':<{width}}  {'prediction':<12} {'top-' + str(top) + ' (probability)':<{tw}}"
             + (f" {'ms':>7}" if timed else "")]
    for r in results:
        if r.ok:
            ms = (f" {r.ms:7.1f}" if r.ms is not None else f" {'-':>7}") if timed else ""
            lines.append(f"{r.label:<{width}}  {r.prediction:<12} {tops[r.label]:<{tw}}{ms}".rstrip())
        else:
            lines.append(f"{r.label:<{width}}  -- {r.error or r.status}")
    return "\n".join(lines)


def example_indices(labels: torch.Tensor, per_class: int) -> list[int]:
    """The demo's example images: the first ``per_class`` test images of every class, by class."""
    labels = torch.as_tensor(labels)
    out = []
    for c in range(data.NUM_CLASSES):
        idx = torch.nonzero(labels == c).flatten()[:per_class]
        out.extend(idx.tolist())
    return out


def expand_inputs(paths: Sequence[str]) -> list[Path]:
    """Files as given; folders replaced by the image files anywhere below them (recursively, sorted by path;
    hidden files and folders skipped). A folder without images is reported on stderr."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                print(f"{p}: no image files ({', '.join(EXTENSIONS)}) in this folder or below it", file=sys.stderr)
            out.extend(found)
        else:
            out.append(p)
    return out


# Exit codes: 1 an input could not be read as an image, 3 no deployed model, 4 CIFAR-10 needed but not found.
EXIT_NO_DATA = 4
FORMATS_OUT = ("table", "json", "csv")


def _no_data(why: str, exc: Exception) -> int:
    print(f"error: CIFAR-10 is needed ({why}) but was not found: {exc}\nSet $CIFAR10_DIR or pass --data-dir.",
          file=sys.stderr)
    return EXIT_NO_DATA


@dataclass
class Item:
    """One input: a file (or a CIFAR-10 example) and what every model predicted for it, or why it could not be read."""
    source: str
    note: str = ""
    image: torch.Tensor | None = None
    error: str | None = None
    true_class: str | None = None
    results: list[ModelResult] = field(default_factory=list)


def _inputs(paths: Sequence[Path], test, example_ids: Sequence[int]):
    """Items in order: the files (read now), then the CIFAR-10 examples."""
    for path in paths:
        try:
            image, note = load_image(path)
            yield Item(str(path), note, image)
        except ImageError as exc:
            yield Item(str(path), error=str(exc))
    for i in example_ids:
        yield Item(f"CIFAR-10 test image #{i}", "32x32 as stored in CIFAR-10", test.images[i],
                   true_class=test.classes[int(test.labels[i])])


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _table_block(item: Item, top: int) -> str:
    what = f"(true class: {item.true_class})" if item.true_class else f"({item.note})"
    return f"\n== {item.source}  {what}\n{format_table(item.results, top)}"


def _latency_table(deployed: dict[str, deploy.Deployed], latency: dict[str, float]) -> str:
    width = max([len("model")] + [len(deployed[k].label) for k in latency])
    lines = [f"{'model':<{width}}  {'ms':>7}"] + [f"{deployed[k].label:<{width}}  {ms:7.1f}" for k, ms in latency.items()]
    return f"\n== {latency_note()}\n" + "\n".join(lines)


def _json(items: Sequence[Item], deployed, latency: dict[str, float] | None, args) -> str:
    import json

    models = [{"model": k, "label": d.label, "status": d.status, "strategy": d.strategy,
               "run": d.run.id if d.run is not None else None, "tta_level": d.tta_level,
               **({"latency_ms": latency[k]} if latency and k in latency else {})} for k, d in deployed.items()]
    inputs = [{"input": it.source, "note": it.note or None, "error": it.error,
               **({"true_class": it.true_class} if it.true_class else {}),
               "predictions": [{"model": r.name, "label": r.label, "status": r.status, "error": r.error,
                                "tta": r.tta, "prediction": r.prediction,
                                "top": [{"class": c, "probability": round(p, 6)} for c, p in r.top]}
                               for r in it.results]} for it in items]
    doc = {"profile": args.profile, "top": args.top, "models": models, "inputs": inputs,
           "latency": ({"note": latency_note(), "warmup_passes": WARMUP, "timed_passes": TIMED, "batch": 1,
                        "precision": "fp32", "threads": torch.get_num_threads()} if latency is not None else None)}
    return json.dumps(doc, indent=2) + "\n"


def _csv(items: Sequence[Item], latency: dict[str, float] | None) -> str:
    """Long format: one row per input, model and rank; a model that did not run, or an unreadable input, is one
    row with its status and no class."""
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["input", "true_class", "model", "label", "status", "rank", "class", "probability"]
               + (["latency_ms"] if latency is not None else []))
    for it in items:
        if it.error:
            w.writerow([it.source, "", "", "", f"error: {it.error}", "", "", ""] + ([""] if latency is not None else []))
        for r in it.results:
            lat = [f"{latency[r.name]:.3f}" if latency and r.name in latency else ""] if latency is not None else []
            status = "ok" if r.ok else (r.error or r.status)
            if not r.ok:
                w.writerow([it.source, it.true_class or "", r.name, r.label, status, "", "", ""] + lat)
            for rank, (c, p) in enumerate(r.top, 1):
                w.writerow([it.source, it.true_class or "", r.name, r.label, status, rank, c, f"{p:.6f}"] + lat)
    if latency is not None:
        buf.write(f"# {latency_note()}\n")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m studylib.serve.predict",
        description="Predict CIFAR-10 classes for images with the study's deployed models. Images are centre-cropped "
                    "and downsampled to 32x32 (the models' training resolution); folders are searched recursively.")
    ap.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders of images (searched recursively)")
    ap.add_argument("--model", default="all", help=f"all, or one of: {', '.join(tuple(deploy.ROW))}")
    ap.add_argument("--top", type=int, default=5, help="classes listed per model (default 5)")
    ap.add_argument("--format", choices=FORMATS_OUT, default="table",
                    help="table (one per image, default), json (one document) or csv (one row per input, model, rank)")
    ap.add_argument("--output", metavar="FILE", default=None,
                    help="write the results to FILE (atomically: a temporary file renamed) instead of stdout")
    ap.add_argument("--batch-size", type=int, default=BATCH, help=f"images per forward pass (default {BATCH})")
    ap.add_argument("--time", action="store_true",
                    help=f"also measure each model's latency: median of {TIMED} single-image passes after {WARMUP} "
                         "warm-up passes (on the first image)")
    ap.add_argument("--tta", action="store_true",
                    help="use test-time augmentation where a row offers it (the strong recipe); others run plain")
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full",
                    help="which trained runs to load (default full)")
    ap.add_argument("--examples", type=int, default=0, metavar="K",
                    help="also predict the demo's example images: the first K CIFAR-10 test images of each class")
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 folder for --examples")
    ap.add_argument("--weights-dir", default=None, help="folder with local backbone weight files")
    args = ap.parse_args(argv)

    if args.model != "all" and args.model not in tuple(deploy.ROW):
        ap.error(f"--model {args.model!r}: choose all or one of {', '.join(tuple(deploy.ROW))}")
    if not 1 <= args.top <= data.NUM_CLASSES:
        ap.error(f"--top {args.top}: must be between 1 and {data.NUM_CLASSES}")
    if args.batch_size < 1:
        ap.error(f"--batch-size {args.batch_size}: must be at least 1 (images per forward pass)")
    if args.examples < 0:
        ap.error(f"--examples {args.examples}: must be 0 or more images per class")
    if not args.images and args.examples <= 0:
        ap.error("give at least one IMAGE (file or folder), or --examples K")
    if args.output is not None and Path(args.output).is_dir():
        ap.error(f"--output {args.output}: is a folder; give a file name, e.g. {Path(args.output) / ('predictions.' + ('txt' if args.format == 'table' else args.format))}")

    names = tuple(deploy.ROW) if args.model == "all" else (args.model,)
    # the runs runs/DEPLOYED.json names, else those found by what their keys record: no CIFAR-10 needed
    deployed = deploy.load_all(args.profile, weights_dir=args.weights_dir, keys=names, indexed=True)
    for d in deployed.values():
        if not d.ok:
            fix = (f" (get the weights: `{weights.fetch_command(d.row.model)}`)" if d.status == deploy.NO_WEIGHTS
                   else "")
            print(f"note: {d.label}: {d.status}{fix}", file=sys.stderr)
    if not any(d.ok for d in deployed.values()):
        print(f"error: no deployed model for profile {args.profile!r}: no finished run in the artifact store"
              + (" or the shipped runs (runs/)" if runs.use_shipped() else "") + "; train them with "
              f"python run_all.py --retrain 02 03 04 (--profile {args.profile}).", file=sys.stderr)
        return 3
    if args.tta and not any(d.ok and d.tta_level is not None for d in deployed.values()):
        print("note: --tta: none of the chosen rows offers test-time augmentation (only the strong recipe does); "
              "predicting without it", file=sys.stderr)

    try:
        test = data.load_cifar10("test", args.data_dir) if args.examples > 0 else None
    except data.DataError as exc:
        return _no_data("--examples shows CIFAR-10 test images", exc)

    stream = args.format == "table" and args.output is None  # print each table as soon as its batch is done
    items: list[Item] = []
    failed = 0
    example_ids = example_indices(test.labels, args.examples) if test is not None else []
    for chunk in _chunks(_inputs(expand_inputs(args.images), test, example_ids), args.batch_size):
        readable = [it for it in chunk if it.image is not None]
        if readable:
            for it, results in zip(readable, predict_batch(torch.stack([it.image for it in readable]), deployed,
                                                           top=args.top, batch_size=args.batch_size, tta=args.tta)):
                it.results = results
        for it in chunk:
            if it.error:
                failed += 1
                print(f"\n== {it.source}\nerror: {it.error}", file=sys.stderr, flush=True)
            elif stream:
                print(_table_block(it, args.top), flush=True)
        items.extend(chunk)

    latency = None
    if args.time:
        first = next((it.image for it in items if it.image is not None), None)
        if first is None:
            print("note: --time: no readable image to time the models on", file=sys.stderr)
        else:
            latency = {k: latency_ms(d.tta_model() if args.tta and d.tta_level is not None else d.model, first)
                       for k, d in deployed.items() if d.ok}
    for it in items:
        it.image = None

    if args.format == "table":
        text = "".join(_table_block(it, args.top) + "\n" for it in items if not it.error) if not stream else ""
        if latency:
            text += _latency_table(deployed, latency) + "\n"
    elif args.format == "json":
        text = _json(items, deployed, latency, args)
    else:
        text = _csv(items, latency)
    if args.output is not None:
        artifacts.write_bytes(args.output, text.encode())
        print(f"wrote {args.output} ({args.format}, {sum(not it.error for it in items)} input(s))", file=sys.stderr)
    elif text:
        sys.stdout.write(text)
        sys.stdout.flush()
    if failed:
        print(f"\n{failed} input(s) could not be read as images (see the errors above).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
