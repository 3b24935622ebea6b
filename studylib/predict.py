"""Any image -> what every deployed study model predicts for it; also ``python -m studylib.predict``.

    image, note = load_image("photo.jpg")          # uint8 (3, 32, 32) RGB + what was done to it
    results = predict_all(image, deploy.load_all("full"), classes)
    print(format_table(results))

    python -m studylib.predict cat.jpg photos/ --model all --top 5
    python -m studylib.predict --examples 1        # the demo's CIFAR-10 example images

Exit codes: 0 every input predicted; 1 an input could not be read as an image; 3 no deployed model;
4 CIFAR-10 needed but not found (``--examples``, or a row that ``runs/DEPLOYED.json`` does not list).
Class names are CIFAR-10's fixed ten (``data.CLASSES``): predicting needs no copy of the dataset.

Preprocessing (the one choice the demo and the command line share): the image is decoded,
converted to RGB, centre-cropped to a square and downsampled with area averaging (PIL BOX,
antialiased) to 32x32 uint8 -- the resolution every study model was trained on. Each deployed
model then does its own preprocessing exactly as in training (normalisation for the scratch
models; bilinear upscale 32->224 and the backbone's ImageNet normalisation for the transfer
models; see studylib.deploy).

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

from . import config, data, deploy, runs, weights

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
@dataclass
class ModelResult:
    name: str
    label: str
    status: str                                   # deploy.OK, or why the model did not run
    top: list[tuple[str, float]] = field(default_factory=list)   # (class, probability), best first
    ms: float | None = None                       # median single-image forward time, milliseconds
    error: str | None = None                      # a failure while predicting (the others still run)

    @property
    def ok(self) -> bool:
        return self.status == deploy.OK and self.error is None

    @property
    def prediction(self) -> str | None:
        return self.top[0][0] if self.top else None


def predict_one(model: torch.nn.Module, image: torch.Tensor, repeats: int = 3) -> tuple[torch.Tensor, float]:
    """Class probabilities (10,) for one uint8 (3, 32, 32) image and the median time of ``repeats``
    fp32 forward passes after one warm-up pass, in milliseconds (CPU, torch's thread setting)."""
    x = image.unsqueeze(0)
    times = []
    with torch.inference_mode():
        logits = model(x)  # warm-up (first-call allocations), not timed
        for _ in range(repeats):
            t0 = time.perf_counter()
            logits = model(x)
            times.append(time.perf_counter() - t0)
    return torch.softmax(logits.float(), dim=1)[0], 1000 * float(np.median(times))


def predict_all(image: torch.Tensor, deployed: dict[str, deploy.Deployed], classes: Sequence[str],
                top: int = 5, repeats: int = 3) -> list[ModelResult]:
    """One ModelResult per deployed model (in the given order); models that did not run keep their status."""
    if image.dtype != torch.uint8 or tuple(image.shape) != (3, SIZE, SIZE):
        raise ValueError(f"expected a uint8 (3, {SIZE}, {SIZE}) image, got {image.dtype} {tuple(image.shape)}")
    top = max(1, min(int(top), len(classes)))
    results = []
    for name, d in deployed.items():
        r = ModelResult(name, d.label, d.status)
        if d.ok:
            try:
                probs, r.ms = predict_one(d.model, image, repeats)
                p, idx = probs.topk(top)
                r.top = [(classes[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())]
            except Exception as exc:  # one broken model must not hide the others' results
                r.error = f"{type(exc).__name__}: {exc}"
        results.append(r)
    return results


def format_table(results: Sequence[ModelResult], top: int = 5) -> str:
    """A plain-text table: one line per model (prediction, top-k with probabilities, time)."""
    width = max([len("model")] + [len(r.label) for r in results])
    tops = {r.name: ", ".join(f"{c} {p:.3f}" for c, p in r.top) for r in results if r.ok}
    tw = max([len(f"top-{top} (probability)")] + [len(t) for t in tops.values()])
    lines = [f"{'model':<{width}}  {'prediction':<12} {'top-' + str(top) + ' (probability)':<{tw}} {'ms':>7}"]
    for r in results:
        if r.ok:
            lines.append(f"{r.label:<{width}}  {r.prediction:<12} {tops[r.name]:<{tw}} {r.ms:7.1f}")
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
    """Files as given; folders replaced by the image files directly inside them (sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in EXTENSIONS)
            if not found:
                print(f"{p}: no image files ({', '.join(EXTENSIONS)}) in this folder", file=sys.stderr)
            out.extend(found)
        else:
            out.append(p)
    return out


# Exit codes: 1 an input could not be read as an image, 3 no deployed model, 4 CIFAR-10 needed but not found.
EXIT_NO_DATA = 4


def _no_data(why: str, exc: Exception) -> int:
    print(f"error: CIFAR-10 is needed ({why}) but was not found: {exc}\nSet $CIFAR10_DIR or pass --data-dir.",
          file=sys.stderr)
    return EXIT_NO_DATA


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m studylib.predict",
        description="Predict CIFAR-10 classes for images with the study's deployed models (one table per image). "
                    "Images are centre-cropped and downsampled to 32x32 (the models' training resolution).")
    ap.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders of images")
    ap.add_argument("--model", default="all", help=f"all, or one of: {', '.join(tuple(deploy.ROW))}")
    ap.add_argument("--top", type=int, default=5, help="classes listed per model (default 5)")
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full",
                    help="which trained runs to load (default full)")
    ap.add_argument("--examples", type=int, default=0, metavar="K",
                    help="also predict the demo's example images: the first K CIFAR-10 test images of each class")
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 folder for --examples (and for rows not in runs/DEPLOYED.json)")
    ap.add_argument("--weights-dir", default=None, help="folder with local backbone weight files")
    args = ap.parse_args(argv)

    if args.model != "all" and args.model not in tuple(deploy.ROW):
        ap.error(f"--model {args.model!r}: choose all or one of {', '.join(tuple(deploy.ROW))}")
    if not 1 <= args.top <= data.NUM_CLASSES:
        ap.error(f"--top {args.top}: must be between 1 and {data.NUM_CLASSES}")
    if not args.images and args.examples <= 0:
        ap.error("give at least one IMAGE (file or folder), or --examples K")

    names = tuple(deploy.ROW) if args.model == "all" else (args.model,)
    try:  # the rows runs/DEPLOYED.json lists load without CIFAR-10; any other row's run is found by its key
        deployed = deploy.load_all(args.profile, data_dir=args.data_dir, weights_dir=args.weights_dir, keys=names,
                                   indexed=True)
    except data.DataError as exc:
        return _no_data(f"a row not listed in runs/{deploy.INDEX_FILE} is found by its run key, which hashes the "
                        "dataset; `python -m studylib.deploy index` lists the shipped rows, where the dataset is", exc)
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

    try:
        test = data.load_cifar10("test", args.data_dir) if args.examples > 0 else None
    except data.DataError as exc:
        return _no_data("--examples shows CIFAR-10 test images", exc)
    classes = test.classes if test else data.CLASSES

    failed = 0
    for path in expand_inputs(args.images):
        try:
            image, note = load_image(path)
        except ImageError as exc:
            print(f"\n== {path}\nerror: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(f"\n== {path}  ({note})")
        print(format_table(predict_all(image, deployed, classes, args.top), args.top), flush=True)
    if test is not None:
        for i in example_indices(test.labels, args.examples):
            print(f"\n== CIFAR-10 test image #{i}  (true class: {classes[int(test.labels[i])]})")
            print(format_table(predict_all(test.images[i], deployed, classes, args.top), args.top), flush=True)
    if failed:
        print(f"\n{failed} input(s) could not be read as images (see the errors above).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
