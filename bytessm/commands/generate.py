"""`bytessm generate`: sample from a causal checkpoint (the body of the CLI command).

    bytessm generate checkpoint=RUN_DIR prompt="Once upon a time" num_samples=4 max_new=512 \
        temperature=0.8 top_p=0.95 stop='\\n' out=samples/
    bytessm generate checkpoint=RUN_DIR draft_checkpoint=SMALL_RUN_DIR temperature=0   # speculative

The task turns the prompt into symbols (`Task.encode_prompt`) and the samples into output
(`Task.write_samples`: printed text, FASTA, WAV files...). A summary (symbols per second,
why each sample ended, speculative acceptance and speedup) goes to stderr as one JSON line,
so stdout holds only what the task prints. See configs/generate.yaml for every key.
"""
from __future__ import annotations

import codecs
import json
import sys
import time

import torch
from omegaconf import DictConfig, ListConfig

from bytessm.generation import cast_for_inference, check_can_generate, generate
from bytessm.sampling import SamplingParams
from bytessm.speculative import SpeculativeStats, speculative_generate
from bytessm.task import ConfigError, Task


def parse_stop(stop) -> list[int]:
    """`stop` config value -> stop symbols: a string's UTF-8 bytes (backslash escapes such as
    \\n decoded), an integer, or a list of integers."""
    if stop is None or stop == "":
        return []
    if isinstance(stop, bool):
        raise ConfigError(f"stop must be a string or integers, got {stop!r}")
    if isinstance(stop, int):
        stop = [stop]
    if isinstance(stop, (list, tuple, ListConfig)):
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in stop):
            raise ConfigError(f"stop as a list must hold symbols (integers >= 0), got {list(stop)}")
        return [int(s) for s in stop]
    if not isinstance(stop, str):
        raise ConfigError(f"stop must be a string or integers, got {stop!r}")
    text = codecs.decode(stop.encode("latin-1", "backslashreplace"), "unicode_escape")
    return list(text.encode("utf-8"))


def _precision(setting: str, device: torch.device) -> torch.dtype:
    choices = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if setting not in choices:
        raise ConfigError(f"precision must be auto, fp32 or bf16, got {setting!r}")
    return choices[setting]


def _positive(cfg: DictConfig, key: str, minimum: int) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _load(path, device, dtype, what: str):
    from bytessm.train.checkpoint import load_for_inference

    run_cfg, task, model = load_for_inference(path, device)
    if not getattr(task, "causal", True):
        raise ConfigError(f"the {what} checkpoint {path} was trained on task "
                          f"{run_cfg.task.get('name', type(task).__name__)!r}, which is not a "
                          f"next-symbol task: it cannot generate")
    check_can_generate(model)
    return run_cfg, task, cast_for_inference(model, dtype)


def generate_main(cfg: DictConfig) -> dict:
    """Run the `generate` command; returns the summary it prints to stderr."""
    from bytessm.train.distributed import World, pick_device

    num_samples = _positive(cfg, "num_samples", 1)
    max_new = _positive(cfg, "max_new", 0)
    params = SamplingParams(temperature=float(cfg.temperature), top_k=int(cfg.top_k),
                            top_p=float(cfg.top_p), min_p=float(cfg.min_p),
                            repetition_penalty=float(cfg.repetition_penalty))
    stop = parse_stop(cfg.stop)
    seed = None if cfg.seed is None else int(cfg.seed)
    device = pick_device(cfg.device, World())
    dtype = _precision(cfg.get("precision", "auto"), device)
    graph = cfg.get("cuda_graph", "auto")
    if graph not in ("auto", True, False):
        raise ConfigError(f"cuda_graph must be auto, true or false, got {graph!r}")
    cuda_graph = None if graph == "auto" else bool(graph)

    run_cfg, task, model = _load(cfg.checkpoint, device, dtype, "model")
    if type(task).write_samples is Task.write_samples:
        raise ConfigError(f"task {run_cfg.task.get('name', type(task).__name__)!r} does not "
                          f"write generated samples (it implements no write_samples)")
    prompt = [int(s) for s in task.encode_prompt(str(cfg.prompt))]
    prompts = [prompt] * num_samples
    summary: dict = {"checkpoint": str(cfg.checkpoint), "num_samples": num_samples,
                     "prompt_symbols": len(prompt), "device": str(device), "dtype": str(dtype)}

    if cfg.get("draft_checkpoint"):
        _, _, drafter = _load(cfg.draft_checkpoint, device, dtype, "draft")
        total, samples, finished = SpeculativeStats(), [], []
        for i in range(num_samples):
            out, why, st = speculative_generate(
                model, drafter, prompt, max_new=max_new, k=_positive(cfg, "draft_k", 1),
                params=params, seed=None if seed is None else seed + i, stop=stop)
            samples.append(out)
            finished.append(why)
            for key in ("rounds", "drafted", "accepted", "generated", "seconds"):
                setattr(total, key, getattr(total, key) + getattr(st, key))
        summary["speculative"] = total.as_dict()
        if cfg.get("draft_compare", False):  # the same samples, plain decoding, one at a time
            t0 = time.perf_counter()
            for i in range(num_samples):
                generate(model, [prompt], max_new=max_new, params=params,
                         seed=None if seed is None else seed + i, stop=stop, cuda_graph=cuda_graph)
            plain_s = time.perf_counter() - t0
            summary["speculative"]["plain_seconds"] = plain_s
            summary["speculative"]["speedup"] = plain_s / max(total.seconds, 1e-9)
    else:
        result = generate(model, prompts, max_new=max_new, params=params, seed=seed, stop=stop,
                          cuda_graph=cuda_graph)
        samples, finished = result.samples, result.finished
        summary.update(result.stats)

    if cfg.get("include_prompt", True):
        samples = [prompt + s for s in samples]
    summary["finished"] = finished
    summary["paths"] = task.write_samples(samples, None if cfg.out is None else str(cfg.out))
    print(json.dumps(summary), file=sys.stderr, flush=True)
    return summary
