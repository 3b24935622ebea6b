"""Deployed models: every row's model built from its run's description (deploy), the CLI (predict), the
ipywidgets demo and the Gradio app. Nothing here imports training code."""
