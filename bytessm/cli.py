"""The `bytessm` command: `train`, `eval`, `generate`, `bench`, each a Hydra app over configs/.

    bytessm train task=NAME [model=NAME] [key=value ...]   (--multirun sweeps work)
    bytessm eval checkpoint=RUN_DIR/checkpoints/last [split=test] [override.KEY=VALUE ...]
    bytessm generate checkpoint=... [prompt=...] [num_samples=...] [max_new=...] [out=...]
    bytessm bench [what=scan|model|decode] [...]

Exit status: 0 on success; 2 with one message on a usage, config, data or checkpoint error;
1 when training itself fails (e.g. a non-finite loss) or on a bug (with its traceback).
"""
from __future__ import annotations

import json
import sys
import traceback
from importlib import resources
from pathlib import Path

USAGE = __doc__.split("\n\n")[1]
COMMANDS = ("train", "eval", "generate", "bench")
GROUPS = ("task", "model", "trainer", "tokenizer")

# Set when our own code decided the exit status, so Hydra's own exit(1) (a bad override,
# a missing mandatory value) can be told apart and reported as a usage error.
_decided = False


def _configs_dir() -> Path:
    return Path(str(resources.files("bytessm.configs")))


def _usage_error(message: str) -> None:
    global _decided
    _decided = True
    print(f"bytessm: error: {message}", file=sys.stderr)
    sys.exit(2)


def _check_group_choices(overrides: list[str]) -> None:
    """`task=nope` lists the valid names (before Hydra composes anything)."""
    root = _configs_dir()
    for arg in overrides:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS or "," in value:
            continue
        choices = sorted(p.stem for p in (root / key).glob("*.yaml"))
        if choices and value not in choices:
            _usage_error(f"unknown {key} {value!r}; valid {key} names: {', '.join(choices)}")


def _guarded(fn):
    """Run an app body, mapping the errors a user can cause to exit status 2."""
    from omegaconf.errors import MissingMandatoryValue

    from bytessm.task import ConfigError, DataError
    from bytessm.train.checkpoint import CheckpointError

    def app(cfg):
        global _decided
        try:
            fn(cfg)
        except (ConfigError, DataError, CheckpointError) as e:
            _usage_error(str(e))
        except MissingMandatoryValue as e:
            _usage_error(f"missing value for `{e.full_key}`: pass {e.full_key}=...")
        except SystemExit:
            _decided = True
            raise
        except Exception:  # a bug or a failed run: show everything
            _decided = True
            traceback.print_exc()
            sys.exit(1)
        _decided = True
    return app


def _train(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from bytessm.train import train

    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:  # one run folder per job of the sweep
        cfg.trainer.out_dir = hc.runtime.output_dir
    train(cfg)


def _eval(cfg) -> None:
    from omegaconf import OmegaConf

    from bytessm.train.checkpoint import load_for_inference
    from bytessm.train.data import check_workers, workers_for
    from bytessm.train.distributed import World, pick_device
    from bytessm.train.evaluate import evaluate

    splits = ("train", "valid", "test")
    if cfg.split not in splits:
        _usage_error(f"split must be one of {splits}, got {cfg.split!r}")
    device = pick_device(cfg.device, World())
    setting = cfg.get("num_workers", "auto")
    check_workers(setting, key="num_workers")   # refused here, before any loading
    run_cfg, task, model = load_for_inference(cfg.checkpoint, device,
                                              overrides=OmegaConf.create(cfg.override))
    dataset = task.build_datasets()[splits.index(cfg.split)]
    batch_size = cfg.batch_size or run_cfg.trainer.batch_size
    workers, _ = workers_for(dataset, setting, device, batch_size, key="num_workers")
    values = evaluate(model, task, dataset, batch_size=batch_size,
                      device=device, world=World(), precision=run_cfg.trainer.precision,
                      max_batches=cfg.max_batches, num_workers=workers,
                      show_progress=bool(cfg.get("progress", True)), desc=cfg.split)
    print(json.dumps({"split": cfg.split, "checkpoint": str(cfg.checkpoint), **values}), flush=True)


def _generate(cfg) -> None:
    from bytessm.commands.generate import generate_main

    generate_main(cfg)


def _bench(cfg) -> None:
    from bytessm.bench import run_bench

    run_bench(cfg)


APPS = {"train": _train, "eval": _eval, "generate": _generate, "bench": _bench}


def main(argv: list[str] | None = None) -> None:
    import hydra

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        _usage_error(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    _check_group_choices(overrides)
    if command == "eval":  # `override` starts empty: take override.KEY=V without Hydra's '+'
        overrides = ["+" + a if a.startswith("override.") else a for a in overrides]
    sys.argv = [f"bytessm-{command}", *overrides]
    run = hydra.main(config_path=str(_configs_dir()), config_name=command,
                     version_base="1.3")(_guarded(APPS[command]))
    try:
        run()
    except SystemExit as e:
        if e.code == 1 and not _decided:  # Hydra rejected the command line or the config
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
