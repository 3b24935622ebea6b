"""Which runs an experiment needs, as jobs (nothing trained, nothing displayed): shared by the notebook that
ensures them and by the plan (``studylib.dispatch``) that lists and dispatches them."""

from __future__ import annotations

from . import config, runs
from .recipes import scratch, strong


def efficiency_points(profile: str, *, data_dir=None, device: str = "auto") -> dict[tuple[str, int, int], runs.Job]:
    """Notebook 09's from-scratch data-efficiency points: {(curve label, images per class, seed): Job} for the
    Custom CNN (study recipe) and the strong recipe on the grid's stratified subsets."""
    g, s = config.grid("data_efficiency", profile), config.grid("strong", profile)
    kw = dict(data_dir=data_dir, device=device)
    cnn = {("Custom CNN (study recipe)", pc, seed): scratch.job("custom_cnn", "study", profile, seed=seed, per_class=pc,
                                                                min_epoch_images=g["min_epoch_images"], **kw)
           for pc in g["train_per_class"] for seed in g["scratch_seeds"]}
    best = {("strong recipe (no TTA)", pc, seed): strong.job(profile, seed=seed, per_class=pc,
                                                             min_epoch_images=s["min_epoch_images"], **kw)
            for pc in g["train_per_class"] for seed in s["seeds"]}
    return {**cnn, **best}
