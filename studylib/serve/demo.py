"""The interactive demo of notebook 07: pick a CIFAR-10 example or upload an image, then compare
every deployed study model on it (top-5 probabilities, prediction, measured inference time and,
when studylib.measure.gradcam is present, a Grad-CAM overlay).

    app = build("full")          # loads the deployed models once (studylib.serve.deploy caches them)
    app.widget                   # display it in a notebook
    app.select_example(0); app.compare(); app.results    # what a click does, programmatically

Every callback is guarded: bad input or a failing model shows a message in the widget, never a
traceback in the kernel. Image decoding and the 32x32 preprocessing live in studylib.serve.predict and
are shared with the command line.
"""

from __future__ import annotations

import base64
import html
import io
import traceback
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .. import data
from ..report import plots
from . import deploy, predict

try:  # Grad-CAM is optional in the demo: the overlay is offered only when the module is there
    from ..measure import gradcam
except ImportError:  # pragma: no cover - depends on the checkout
    gradcam = None

DOMAIN_GAP_NOTE = (
    "Every model here was trained on CIFAR-10's 32x32 thumbnails, so any image is first "
    "centre-cropped and shrunk to 32x32 (area averaging) &mdash; what the models see is the small "
    "image shown beside the preview. The transfer models then upscale it back to 224x224 inside, "
    "exactly as in training. Photos unlike CIFAR-10 (close-ups, several objects, text, a class "
    "outside the ten) are outside what the models learned, so confident wrong answers are "
    "expected: the probabilities are over the ten CIFAR-10 classes only."
)
ACCEPT = ",".join(predict.EXTENSIONS + tuple(f"image/{f.lower()}" for f in predict.FORMATS))
# Latency per deployed model (and TTA), measured on the first image a model compares in this process (deploy
# loads each model once per process): 30 passes per model on every click would make the widget slow.
LATENCY: dict = {}
THUMB_SCALE = 3        # example thumbnails: 32 -> 96 px, nearest neighbour (pixels stay visible)
PREVIEW_SCALE = 4      # the 32x32 model input shown at 128 px


@dataclass
class Example:
    index: int             # position in the CIFAR-10 test split
    true_class: str
    image: torch.Tensor    # uint8 (3, 32, 32)


def load_examples(test: data.CifarSplit, per_class: int) -> list[Example]:
    """The first ``per_class`` test images of each class (predict.example_indices), class by class."""
    return [Example(i, test.classes[int(test.labels[i])], test.images[i])
            for i in predict.example_indices(test.labels, per_class)]


def png_bytes(image: torch.Tensor | np.ndarray, scale: int = 1) -> bytes:
    """PNG of a uint8 (3, H, W) tensor or (H, W, 3) array, enlarged ``scale`` times (nearest)."""
    arr = image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def message(text: str, kind: str = "info") -> str:
    """A status line (info, error or ok) for the demo and the app."""
    colour = {"info": "#333", "error": "#b00020", "ok": "#1b5e20"}[kind]
    return f'<div class="study-demo-message study-demo-{kind}" style="color:{colour}">{text}</div>'


def results_table(results: Sequence[predict.ModelResult], deployed: dict[str, deploy.Deployed]) -> pd.DataFrame:
    """One row per model: prediction, its probability, the top-k, inference time, the run's test accuracy."""
    rows = []
    for r in results:
        d = deployed[r.name]
        acc = d.metrics.get("test_acc")
        rows.append({
            "model": r.label, "strategy": d.strategy,
            "prediction": r.prediction if r.ok else "-",
            "probability": round(r.top[0][1], 3) if r.ok else None,
            "top-5": ", ".join(f"{c} {p:.3f}" for c, p in r.top) if r.ok else (r.error or r.status),
            "inference ms": round(r.ms, 1) if r.ok and r.ms is not None else None,
            "test acc (%)": round(100 * acc, 2) if acc is not None else None,
        })
    return pd.DataFrame(rows)


def results_html(results: Sequence[predict.ModelResult], deployed: dict[str, deploy.Deployed],
                 chart_png: bytes | None, *, timed: bool = True) -> str:
    """The result panel: a table (one row per model, data-* attributes for tests) and the bar chart."""
    k = max([len(r.top) for r in results if r.ok] or [5])
    head = (f"<tr><th>model</th><th>strategy</th><th>prediction</th><th>top-{k} (probability)</th>"
            "<th>inference ms</th><th>test acc (%)</th></tr>")
    rows = []
    for r in results:
        d = deployed[r.name]
        acc = d.metrics.get("test_acc")
        acc_txt = f"{100 * acc:.2f}" if acc is not None else ""
        if r.ok:
            probs = " ".join(f"{p:.6f}" for _, p in r.top)
            tops = ", ".join(f"{html.escape(c)}&nbsp;{p:.3f}" for c, p in r.top)
            rows.append(f'<tr class="study-demo-row" data-model="{r.name}" data-probs="{probs}">'
                        f"<td><b>{html.escape(r.label)}</b></td><td>{html.escape(d.strategy)}</td>"
                        f"<td><b>{html.escape(r.prediction)}</b> ({r.top[0][1]:.3f})</td><td>{tops}</td>"
                        f"<td style='text-align:right'>{'' if r.ms is None else f'{r.ms:.1f}'}</td>"
                        f"<td style='text-align:right'>{acc_txt}</td></tr>")
        else:
            rows.append(f'<tr class="study-demo-row study-demo-notrun" data-model="{r.name}">'
                        f"<td>{html.escape(r.label)}</td><td>{html.escape(d.strategy)}</td>"
                        f"<td colspan=4><i>{html.escape(r.error or r.status)}</i></td></tr>")
    chart = ("" if chart_png is None else
             f'<img class="study-demo-chart" style="max-width:100%" '
             f'src="data:image/png;base64,{base64.b64encode(chart_png).decode()}"/>')
    note = ((f"<p>Inference time ({html.escape(predict.latency_note())}; measured once per model, on the first "
             "image compared). " if timed else "<p>Inference time: not measured (ask for it). ")
            + "Test accuracy: the run's own test-set result (from its metrics.json).</p>")
    return (f'<div class="study-demo-results" style="display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start">'
            f'<div style="flex:1 1 560px;font-size:90%"><table class="study-demo-table" style="border-collapse:collapse;'
            f'line-height:1.3">{head}{"".join(rows)}</table>{note}</div>{chart}</div>')


def models_html(deployed: dict[str, deploy.Deployed], profile: str) -> str:
    """Which models are deployed, and why the others are not (with the command that trains them)."""
    ok = [d.label for d in deployed.values() if d.ok]
    lines = [f"<b>Deployed models</b> ({profile} profile): {html.escape(', '.join(ok)) if ok else 'none'}"]
    for d in deployed.values():
        if not d.ok:
            lines.append(f"{html.escape(d.label)}: <i>{html.escape(d.status)}</i>")
    if not ok:
        lines.append(f"<span style='color:#b00020'>No model can run: train them first "
                     f"(python run_all.py --retrain 02 03 04, profile {html.escape(profile)}).</span>")
    return "<br>".join(lines)


def gradcam_maps(deployed: dict[str, deploy.Deployed], results: Sequence[predict.ModelResult],
                 image: torch.Tensor) -> dict[str, np.ndarray | str]:
    """Per model that ran, a (32, 32) Grad-CAM map in [0, 1] for its predicted class on ``image``, or the reason
    there is none (a failing overlay never loses the predictions)."""
    cams: dict[str, np.ndarray | str] = {}
    for r in results:
        if not r.ok:
            continue
        if gradcam is None:
            cams[r.name] = "Grad-CAM is not available (studylib.measure.gradcam missing)"
            continue
        try:
            cams[r.name] = gradcam.for_model(deployed[r.name].model, image[None])[0].numpy()
        except Exception as exc:
            cams[r.name] = f"Grad-CAM failed: {type(exc).__name__}: {exc}"
    return cams


class Demo:
    """The widget and its state. ``widget`` is what a notebook displays."""

    def __init__(self, deployed: dict[str, deploy.Deployed], classes: Sequence[str], examples: Sequence[Example],
                 profile: str = "full"):
        import ipywidgets as w

        self.deployed, self.classes, self.examples, self.profile = deployed, tuple(classes), list(examples), profile
        self.image: torch.Tensor | None = None      # the current 32x32 uint8 model input
        self.source: str = ""                       # what the current image is (for messages)
        self.results: list[predict.ModelResult] = []

        self.note = w.HTML(f"<p style='max-width:60em'><b>Note &mdash; domain gap.</b> {DOMAIN_GAP_NOTE}</p>")
        self.models_info = w.HTML(models_html(self.deployed, self.profile))
        tiles = []
        self.example_buttons = []
        for i, ex in enumerate(self.examples):
            img = w.Image(value=png_bytes(ex.image, THUMB_SCALE), format="png",
                          layout=w.Layout(width=f"{32 * THUMB_SCALE}px", height=f"{32 * THUMB_SCALE}px"))
            btn = w.Button(description=f"{ex.true_class} #{ex.index}", tooltip=f"use CIFAR-10 test image #{ex.index}",
                           layout=w.Layout(width=f"{32 * THUMB_SCALE + 4}px"))
            btn.add_class("study-demo-example")
            btn.on_click(self._guard(lambda _b, i=i: self.select_example(i)))
            self.example_buttons.append(btn)
            tiles.append(w.VBox([img, btn], layout=w.Layout(align_items="center", margin="2px")))
        self.gallery = w.HBox(tiles, layout=w.Layout(flex_flow="row wrap", max_width="1100px"))
        self.upload = w.FileUpload(accept=ACCEPT, multiple=False, description="Upload image")
        self.upload.add_class("study-demo-upload")
        self.upload.observe(self._guard(self._on_upload), names="value")
        self.preview = w.Image(format="png", layout=w.Layout(width=f"{32 * PREVIEW_SCALE}px",
                                                             height=f"{32 * PREVIEW_SCALE}px"))
        self.input_info = w.HTML(message("Click an example image's button or upload an image."))
        self.compare_button = w.Button(description="Compare all deployed models", button_style="primary",
                                       disabled=True, layout=w.Layout(width="260px"))
        self.compare_button.add_class("study-demo-compare")
        self.compare_button.on_click(self._guard(lambda _b: self.compare()))
        self.gradcam_box = w.Checkbox(value=False, description="Grad-CAM overlay", indent=False,
                                      disabled=gradcam is None,
                                      tooltip=None if gradcam else "studylib.measure.gradcam is not available")
        self.status = w.HTML("")
        self.status.add_class("study-demo-status")
        self.output = w.HTML("")
        self.output.add_class("study-demo-output")
        self.widget = w.VBox([
            self.note, self.models_info,
            w.HTML("<b>Example images</b> (CIFAR-10 test set; click a button to use the image above it)"),
            self.gallery,
            w.HBox([w.HTML("<b>Or your own image</b> (PNG, JPEG, WebP, BMP, GIF: first frame):&nbsp;"), self.upload],
                   layout=w.Layout(align_items="center")),
            w.HBox([self.preview, self.input_info], layout=w.Layout(align_items="center")),
            w.HBox([self.compare_button, self.gradcam_box], layout=w.Layout(align_items="center")),
            self.status, self.output,
        ])
        self.widget.add_class("study-demo")

    # -- state changes (each is what one click does) ----------------------------------------------
    def _set_image(self, image: torch.Tensor, source: str, note: str) -> None:
        self.image, self.source, self.results = image, source, []
        self.preview.value = png_bytes(image, PREVIEW_SCALE)
        self.input_info.value = message(f"<b>{html.escape(source)}</b><br>{html.escape(note)}<br>"
                                         "Shown: the 32x32 image the models see, enlarged.")
        self.output.value = ""
        self.status.value = message("Ready: click <b>Compare all deployed models</b>.")
        self.compare_button.disabled = not any(d.ok for d in self.deployed.values())

    def select_example(self, i: int) -> None:
        ex = self.examples[i]
        self._set_image(ex.image, f"CIFAR-10 test image #{ex.index} (true class: {ex.true_class})",
                        "32x32 as stored in CIFAR-10; no resizing")

    def load_upload(self, name: str, content: bytes) -> bool:
        """Use an uploaded file's bytes; False (and a message in the widget) when they are not a usable image."""
        try:
            image, note = predict.load_image(content)
        except predict.ImageError as exc:
            self.status.value = message(f"Cannot use <b>{html.escape(name)}</b>: "
                                         f"{html.escape(str(exc).replace('the uploaded file', 'the file'))}", "error")
            return False
        self._set_image(image, f"uploaded: {name}", note)
        return True

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.load_upload(str(f.get("name", "upload")), bytes(f.get("content", b"")))

    def compare(self) -> list[predict.ModelResult]:
        if self.image is None:
            self.status.value = message("Choose an example image or upload one first.", "error")
            return []
        if not any(d.ok for d in self.deployed.values()):
            self.status.value = message(models_html(self.deployed, self.profile), "error")
            return []
        self.compare_button.disabled = True
        self.status.value = message("Running every deployed model&hellip;")
        try:
            results = predict.predict_all(self.image, self.deployed, self.classes, top=5, timed=LATENCY)
            cams = self.gradcams(results) if self.gradcam_box.value else None
            fig = plots.topk_bars(results, self.image, cams)
            self.results = results
            self.output.value = results_html(results, self.deployed, plots.figure_png(fig))
            ran = sum(r.ok for r in results)
            self.status.value = message(f"Compared {ran} model{'s' * (ran != 1)} on {html.escape(self.source)}.", "ok")
        finally:
            self.compare_button.disabled = False
        return self.results

    def gradcams(self, results: Sequence[predict.ModelResult]) -> dict[str, np.ndarray | str]:
        """Per model, a (32, 32) map in [0, 1] for its predicted class, or the reason there is none."""
        return gradcam_maps(self.deployed, results, self.image)

    def _guard(self, fn: Callable) -> Callable:
        """Wrap a callback: any exception becomes a message in the widget, never a kernel traceback."""
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                self.compare_button.disabled = self.image is None
                last = traceback.extract_tb(exc.__traceback__)[-1]
                self.status.value = message(
                    f"Something went wrong: {html.escape(type(exc).__name__)}: {html.escape(str(exc))} "
                    f"({html.escape(last.filename.rsplit('/', 1)[-1])}:{last.lineno}). The widget is still usable.",
                    "error")
        return wrapped


def examples_if_present(data_dir=None, per_class: int = 2) -> tuple[list[Example], str | None]:
    """The example gallery's images when CIFAR-10 is here, else no examples and a note saying how to get them
    (the models themselves load without the dataset)."""
    try:
        test = data.load_cifar10("test", data_dir or None)
    except data.DataError as exc:
        return [], (f"No example gallery: CIFAR-10 was not found ({exc}). Set $CIFAR10_DIR to a cifar-10-batches-py "
                    "folder to show its test images; uploads work without it.")
    return load_examples(test, per_class), None


def build(profile: str = "full", *, data_dir=None, weights_dir=None, examples_per_class: int = 2) -> Demo:
    """The demo over every study model of ``profile`` (loaded once per process by studylib.serve.deploy; the rows
    ``runs/DEPLOYED.json`` lists load without CIFAR-10, and without it the gallery is replaced by a note)."""
    deployed = deploy.load_all(profile, weights_dir=weights_dir or None, indexed=True)
    examples, note = examples_if_present(data_dir, examples_per_class)
    app = Demo(deployed, data.CLASSES, examples, profile)
    if note:
        app.input_info.value = message(html.escape(note) + "<br>Upload an image.")
    return app


@dataclass
class ExampleReport:
    """Every deployed model on every example image, for the static report (no callbacks needed)."""
    table: pd.DataFrame       # per example: true class, then "prediction (probability)" per model, ✗ when wrong
    summary: pd.DataFrame     # per model: correct examples, mean probability of the true class, inference ms
    p_true: pd.DataFrame      # models x examples: probability given to the true class
    predicted: pd.DataFrame   # models x examples: predicted class


def example_predictions(demo: Demo) -> ExampleReport:
    """Run every deployed model of ``demo`` on all its example images, now: probabilities from one
    batched pass per model (the same model and 32x32 inputs the widget uses), inference time as
    the widget measures it (predict.latency_ms) on the first example."""
    images = torch.stack([ex.image for ex in demo.examples])
    truth = [ex.true_class for ex in demo.examples]
    columns = [f"#{ex.index}" for ex in demo.examples]
    table = pd.DataFrame({"test image": columns, "true class": truth})
    p_true, predicted, summary = {}, {}, []
    for d in demo.deployed.values():
        if not d.ok:
            continue
        with torch.inference_mode():
            probs = torch.softmax(d.model(images).float(), dim=1)
        ms = predict.latency_ms(d.model, images[0])
        conf, idx = probs.max(1)
        pred = [demo.classes[i] for i in idx.tolist()]
        p_true[d.label] = [float(probs[j, demo.classes.index(t)]) for j, t in enumerate(truth)]
        predicted[d.label] = pred
        table[d.label] = [f"{p} ({c:.2f})" + ("" if p == t else " ✗") for p, c, t in zip(pred, conf.tolist(), truth)]
        summary.append({"model": d.label, "correct": sum(p == t for p, t in zip(pred, truth)), "examples": len(truth),
                        "mean p(true class)": round(float(np.mean(p_true[d.label])), 3),
                        "inference ms (one image)": round(ms, 1)})
    return ExampleReport(
        table=table.set_index(["test image", "true class"]),
        summary=pd.DataFrame(summary, columns=["model", "correct", "examples", "mean p(true class)",
                                               "inference ms (one image)"]).set_index("model"),
        p_true=pd.DataFrame(p_true, index=columns).T,
        predicted=pd.DataFrame(predicted, index=columns).T,
    )
