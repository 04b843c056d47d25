"""Benchmarks behind `bytessm bench what=NAME`, one module per NAME (`model`: training-step
time and memory of whole models against length). Each module has `run(**settings) ->
list[dict]` (the measurements) and `cli(settings, *, out, smoke)` (run, write the Markdown
table / JSON / plot into `out`, print the table); scripts/bench_<name>.py wrap `main()`.
"""
from __future__ import annotations

import importlib
import pkgutil

from omegaconf import DictConfig, OmegaConf

from bytessm.task import ConfigError

__all__ = ["available", "run_bench"]


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def run_bench(cfg: DictConfig) -> list[dict]:
    """`bytessm bench`: cfg.what names the module; cfg[what] holds its settings (absent or
    null keys take the module's defaults), cfg.out the output folder, cfg.smoke tiny sizes."""
    what = cfg.get("what")
    if what not in available():
        raise ConfigError(f"bench what={what!r} is not a benchmark; available: {available()}")
    section = cfg.get(what)
    settings = OmegaConf.to_container(section, resolve=True) if section is not None else {}
    out = cfg.get("out") or f"results/bench_{what}"
    return importlib.import_module(f"{__name__}.{what}").cli(settings, out=str(out),
                                                             smoke=bool(cfg.get("smoke", False)))
