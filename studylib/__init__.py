"""studylib: the helpers behind the CIFAR-10 pretrained-vs-scratch study notebooks, by stage.

    studylib/            the foundation: config, runtime, artifacts, runs (Run, ensure, the run mode), timing,
                         weights, ship, dispatch, estimate, nb
    studylib/data/       CIFAR-10, augmentation, preprocessing, corruptions
    studylib/models/     the networks
    studylib/recipes/    what trains: the engine, the recipes, feature caches, experiments (what ensures runs)
    studylib/measure/    what measures a model: latency, ONNX Runtime, INT8, metrics, calibration, robustness
    studylib/report/     pure tables and text, statistics, figures, the result files
    studylib/serve/      deployed models: deploy, the CLI (predict), the ipywidgets demo, the Gradio app

A stage imports from the foundation and from stages before it; ``report`` loads no torch, and ``serve`` no
training code (tests/test_structure.py, tests/test_deploy.py).
"""

__version__ = "0.1.0"
