"""The study's models in a Gradio app: ``python -m studylib.serve.app`` (needs the optional extra: pip install -e ".[app]").

    python -m studylib.serve.app                          # http://127.0.0.1:7860, the full profile's deployed rows
    python -m studylib.serve.app --port 8000 --profile quick

Tab **Predict**: an image from upload, webcam or clipboard (or a CIFAR-10 example, when the dataset is here);
one model or "compare all"; top-k; Grad-CAM overlays; test-time augmentation where a row offers it. Every image
goes through the command line's loader (``predict.load_image``: the same checks and messages), the models load
from ``runs/DEPLOYED.json`` and each run's description (``studylib.serve.deploy``: no dataset, no training code), and
the results table is the notebook demo's (``demo.results_html``). Tab **Benchmark**: the committed report's
generated bottom line and benchmark table, read from ``reports/published/results/full/`` (``studylib.report.headline``).
"""

from __future__ import annotations

import argparse
import html
import io
import os
import sys
import tempfile
import traceback
from pathlib import Path

from .. import config, data
from ..report import headline, plots
from . import demo, deploy, predict

ALL = "all"
INSTALL = 'pip install -e ".[app]"'


def results_dir_markdown(results_dir: Path) -> str:
    """The Benchmark tab: the generated bottom line and table of a rendered report's results, or what to run."""
    try:
        table = headline.table(results_dir)
    except FileNotFoundError as exc:
        return f"No benchmark results here: {exc}."
    answer = headline.answer(results_dir)
    return ("## The bottom line\n\n" + answer + "\n" if answer else "") + "## Benchmark\n\n" + table


def example_files(per_class: int, data_dir=None) -> tuple[list[list[str]], list[str], str | None]:
    """CIFAR-10 test images as PNG files for the example gallery ([[path], ...], their labels), or a note when
    the dataset is not here."""
    examples, note = demo.examples_if_present(data_dir, per_class)
    if not examples:
        return [], [], note
    folder = Path(tempfile.mkdtemp(prefix="studylib-app-examples-"))
    paths, labels = [], []
    for ex in examples:
        path = folder / f"cifar10-test-{ex.index}-{ex.true_class}.png"
        path.write_bytes(demo.png_bytes(ex.image))
        paths.append([str(path)])
        labels.append(f"{ex.true_class} #{ex.index}")
    return paths, labels, None


def run(deployed: dict[str, deploy.Deployed], image_path: str | None, choice: str, top: int, gradcam_on: bool,
        tta: bool, timed: bool = False):
    """What the Predict button does: (status HTML, results HTML, chart as a PIL image or None). ``timed``: latency
    as the command line's --time measures it (once per model and process). Never raises: bad input and failures
    become a message."""
    from PIL import Image

    if not image_path:
        return demo.message("Choose an image first: upload one, use the webcam, paste one, or click an example.",
                            "error"), "", None
    try:
        image, note = predict.load_image(image_path)
    except predict.ImageError as exc:
        return demo.message(f"Cannot use this image: {html.escape(str(exc))}", "error"), "", None
    chosen = {k: d for k, d in deployed.items() if choice == ALL or k == choice}
    if not any(d.ok for d in chosen.values()):
        return demo.message("No deployed model can run: " + "; ".join(
            f"{html.escape(d.label)}: {html.escape(d.status)}" for d in chosen.values()), "error"), "", None
    try:
        results = predict.predict_all(image, chosen, top=int(top), tta=bool(tta), timed=demo.LATENCY if timed else False)
        cams = demo.gradcam_maps(chosen, results, image) if gradcam_on else None
        chart = Image.open(io.BytesIO(plots.figure_png(plots.topk_bars(results, image, cams))))
    except Exception as exc:  # a failure is a message in the page, never a traceback
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return demo.message(f"Something went wrong: {html.escape(type(exc).__name__)}: {html.escape(str(exc))} "
                            f"({html.escape(Path(last.filename).name)}:{last.lineno}).", "error"), "", None
    ran = sum(r.ok for r in results)
    status = demo.message(f"Predicted with {ran} model{'s' * (ran != 1)}. Input: {html.escape(note)}.", "ok")
    return status, demo.results_html(results, chosen, None, timed=timed), chart


def build(profile: str = "full", *, data_dir=None, weights_dir=None, examples_per_class: int = 1,
          results_dir: Path = headline.DEFAULT_RESULTS):
    """The Gradio Blocks of the app (not launched)."""
    import gradio as gr

    deployed = deploy.load_all(profile, weights_dir=weights_dir, indexed=True)
    ok = {k: d for k, d in deployed.items() if d.ok}
    choices = [("Compare all deployed models", ALL)] + [(d.label, k) for k, d in ok.items()]
    tta_rows = [d.label for d in ok.values() if d.tta_level is not None]
    examples, example_labels, no_examples = example_files(examples_per_class, data_dir)

    with gr.Blocks(title="CIFAR-10 study: the deployed models") as blocks:
        gr.Markdown("# How much does a pretrained ImageNet backbone help on CIFAR-10?\n" + demo.DOMAIN_GAP_NOTE)
        with gr.Tab("Predict"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath",
                                     label="Image (PNG, JPEG, WebP, BMP, GIF)", elem_id="study-image")
                    choice = gr.Dropdown(choices, value=ALL, label="Model", elem_id="study-model")
                    top = gr.Slider(1, len(data.CLASSES), value=5, step=1, label="Top-k classes", elem_id="study-top")
                    gradcam_on = gr.Checkbox(False, label="Grad-CAM overlay", elem_id="study-gradcam")
                    tta = gr.Checkbox(False, label="Test-time augmentation (" + (", ".join(tta_rows) or "no row offers it")
                                      + ")", interactive=bool(tta_rows), elem_id="study-tta")
                    timed = gr.Checkbox(False, label=f"Measure latency ({predict.WARMUP} warm-up passes, then the "
                                                     f"median of {predict.TIMED}; once per model)", elem_id="study-time")
                    button = gr.Button("Predict", variant="primary", elem_id="study-predict")
                    if examples:
                        gr.Examples(examples, inputs=[image], example_labels=example_labels,
                                    label="CIFAR-10 test images (click one)")
                    else:
                        gr.Markdown(no_examples, elem_id="study-no-examples")
                with gr.Column(scale=2):
                    gr.HTML(demo.models_html(deployed, profile), elem_id="study-models")
                    status = gr.HTML("", elem_id="study-status")
                    table = gr.HTML("", elem_id="study-results")
                    chart = gr.Image(label="Top-k (and Grad-CAM)", type="pil", interactive=False, elem_id="study-chart")
            button.click(lambda *a: run(deployed, *a), [image, choice, top, gradcam_on, tta, timed],
                         [status, table, chart])
        with gr.Tab("Benchmark"):
            gr.Markdown(results_dir_markdown(Path(results_dir)), elem_id="study-benchmark")
    return blocks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.serve.app", description="The study's deployed models in a Gradio app.")
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full",
                    help="which trained runs to load (default full)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--examples", type=int, default=1, metavar="K", help="CIFAR-10 example images per class (default 1)")
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 folder for the example gallery (optional)")
    ap.add_argument("--weights-dir", default=None, help="folder with local backbone weight files")
    args = ap.parse_args(argv)
    if not 1 <= args.port <= 65535:
        ap.error(f"--port {args.port}: must be between 1 and 65535")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        import gradio  # noqa: F401
    except ImportError:
        print(f"error: the app needs gradio, an optional extra: {INSTALL}", file=sys.stderr)
        return 3
    blocks = build(args.profile, data_dir=args.data_dir, weights_dir=args.weights_dir,
                   examples_per_class=args.examples)
    blocks.launch(server_name=args.host, server_port=args.port, share=False, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
