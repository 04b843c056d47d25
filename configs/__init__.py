"""Hydra configs shipped inside the package: task/, model/, trainer/ groups."""
