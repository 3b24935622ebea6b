"""What every study notebook does first, in one call: ``nb.setup(mode, wait)`` from its declared parameters.

    mode = "train"   # parameters cell: train | shipped | retrain | store (runs.MODES); run_all.py fills it
    wait = True      # wait for a run another process is computing (False: skip it, and say so)
    nb.setup(mode, wait)

The mode says whether the shipped runs count as finished and whether a missing run is trained in the notebook's
kernel or only named by its command (``runs.Mode``). It is a declared parameter, so an executed notebook records
how it was rendered, and nothing reaches the kernel through the environment.
"""

from __future__ import annotations

from dataclasses import asdict

from . import runs


def setup(mode: str = "train", wait: bool = True) -> runs.Mode:
    """Set this kernel's run mode; returns it."""
    m = runs.named_mode(mode, wait)
    runs.set_mode(**asdict(m))
    return m


def show(fig) -> None:
    """Display a matplotlib figure where it stands in the page (closed, so the cell does not show it again)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    if fig is not None:
        display(fig)
        plt.close(fig)


def scratch_page(model: str, profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """Notebooks 02 and 04 (one page, a model each): both recipes of scratch model ``model`` beside the reference's
    published figure, the settings where the recipes differ, training curves and accuracy per class. Returns
    ``experiments.scratch_section``'s dict."""
    from IPython.display import Markdown, display

    from . import config, data, report
    from .recipes import experiments
    from .report import plots

    sec = experiments.scratch_section(model, profile, data_dir=data_dir, device=device)
    display(Markdown("**Settings where the two recipes differ** (generated from the configuration):"))
    display(sec["deviations"])
    display(Markdown("Not reproducible here: " + report.NOT_REPRODUCED))
    display(Markdown("## Both recipes beside the reference's published figure\nAccuracy with its 95% Wilson "
                     "interval over the test images; \"mean ± std over seeds\" and the verdict use every finished seed "
                     "of the recipe (a verdict needs at least two seeds: it is drawn only when the 95% seed interval "
                     "lies inside, or outside, the published figure ± 1 point)."))
    display(sec["table"].T)
    display(Markdown(f"Where the reference's {sec['reference']['test_acc_pct']:.2f}% comes from: "
                     + sec["reference"]["provenance"]))
    finished = {recipe: run for recipe, run in sec["runs"].items() if run.done}
    if finished:
        display(Markdown("## Training curves\nTraining loss/accuracy are measured on augmented (mixed) batches, so "
                         "they sit below the test curves."))
        for recipe, run in finished.items():
            show(plots.history_curves(run.history(), f"{model}, {config.RECIPES[recipe]['label']} ({profile} profile)"))
        display(Markdown("## Test accuracy per class"))
        classes = data.load_cifar10("test", data_dir).classes
        per_class = report.per_class_accuracy({config.RECIPES[k]["label"]: r for k, r in finished.items()}, classes)
        show(plots.per_class_bars(per_class, f"{model}: test accuracy per class"))
        display(per_class.round(4))
    return sec


def scratch_summary(sec: dict, model: str, profile: str) -> str:
    """The page's one-line summary (the index shows it)."""
    done = {k: r.metrics for k, r in sec["runs"].items() if r.done}
    return (f"{model} ({profile} profile): " + "; ".join(
        f"{k} recipe {100 * m['test_acc']:.2f}% ({m['train_seconds'] / 60:.0f} min)" for k, m in done.items())
        + f" vs reference {sec['reference']['test_acc_pct']:.2f}%"
        + ("" if len(done) == len(sec["runs"]) else "; not run: " + ", ".join(k for k in sec["runs"] if k not in done)))
