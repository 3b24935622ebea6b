"""What trains: the one training loop (``engine``), its fast path (``fastpath``), learning-rate choice (``tuning``),
frozen-backbone feature caches (``features``), what the notebooks ensure (``experiments``), and the recipes.

Training recipes: each is a ``job()`` (a ``runs.Job``: the run keyed by everything that
determines it, the function that trains it with ``studylib.recipes.engine``, and the command that computes
it) plus a command line. Hyper-parameters live in ``studylib.config``, never here.

    scratch   the Custom CNN and ViT under the study's or the reference's code recipe (02, 04)
    heads     linear heads on frozen-backbone features: rows, probes, grids (03, 09-11)
    strong    an airbench94-style from-scratch recipe (08)
    finetune  end-to-end training at a reduced size, ImageNet or random init: the controlled grid (09, 10, 12)
    linear_probe  L-BFGS logistic regression on standardised features (the controlled grid's probes)
"""
