"""The package's own Hydra configs, ``pkg://mnist_hpo.conf`` (pyproject.toml maps this folder to it)."""
