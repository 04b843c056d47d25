"""Score generated SC09 clips with a trained digit classifier (the SaShiMi protocol).

    bytessm train task=audio_sc09_classifier model=small model.bidirectional=true \
        trainer.out_dir=runs/sc09_clf
    bytessm generate checkpoint=runs/sc09 num_samples=64 max_new=16000 include_prompt=false \
        out=samples/sc09
    python scripts/score_sc09.py --classifier runs/sc09_clf --samples samples/sc09 \
        [--reference test] [--out scores.json]

Prints a Markdown table and one JSON line: FID (classifier features, generated vs the
reference split), Inception Score, modified IS and AM score (bytessm.tasks.audio_sc09.scores
defines them), the classifier's accuracy on the reference split, and as a yardstick the
same scores of real clips (the validation split) in place of the generated ones. SaShiMi
takes the training set as reference; `--reference train` does the same.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import torch

from bytessm.io import atomic_write
from bytessm.task import ConfigError, DataError
from bytessm.tasks.audio_sc09.classifier import classify
from bytessm.tasks.audio_sc09.codec import mulaw_encode, read_clip
from bytessm.tasks.audio_sc09.data import scan
from bytessm.tasks.audio_sc09.scores import all_scores
from bytessm.train.checkpoint import CheckpointError, load_for_inference


def clips_to_symbols(paths: list[str]) -> torch.Tensor:
    """WAV files -> (N, 16000) mu-law symbols, through the training pipeline."""
    return torch.stack([mulaw_encode(read_clip(p)) for p in paths])


def pick_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        "cpu" if name == "auto" else name)


def score(args) -> dict:
    device = pick_device(args.device)
    cfg, task, model = load_for_inference(args.classifier, device=device)
    if getattr(task, "objective", None) != "classify":
        raise ConfigError(f"{args.classifier} is not an SC09 classifier (task {cfg.task.name!r}); "
                          f"train one with task=audio_sc09_classifier")
    splits = scan(args.data_root or cfg.task.data.root)
    paths = sorted(glob.glob(os.path.join(args.samples, "*.wav")))
    if len(paths) < 2:
        raise DataError(f"{args.samples}: found {len(paths)} .wav file(s); scoring needs at least 2")

    def read_out(clips):
        clips = clips[: args.max_reference] if args.max_reference else clips
        probs, feats = classify(model, clips_to_symbols([c.path for c in clips]),
                                batch_size=args.batch_size)
        labels = torch.tensor([c.label for c in clips])
        return probs, feats, float((probs.argmax(-1) == labels).double().mean())

    probs_ref, feats_ref, acc = read_out(splits[args.reference])
    probs_gen, feats_gen = classify(model, clips_to_symbols(paths), batch_size=args.batch_size)
    real_split = "valid" if args.reference != "valid" else "test"
    probs_real, feats_real, _ = read_out(splits[real_split])
    return {
        "samples": len(paths), "reference": args.reference, "reference_clips": len(probs_ref),
        "classifier_accuracy": acc,
        "generated": all_scores(probs_ref=probs_ref, feats_ref=feats_ref, probs_gen=probs_gen,
                                feats_gen=feats_gen),
        f"real_{real_split}": all_scores(probs_ref=probs_ref, feats_ref=feats_ref,
                                          probs_gen=probs_real, feats_gen=feats_real),
    }


def table(result: dict) -> str:
    rows = [k for k in result if k == "generated" or k.startswith("real_")]
    lines = ["| clips | FID (lower better) | IS | mIS | AM (lower better) |",
             "|---|---|---|---|---|"]
    for k in rows:
        s = result[k]
        lines.append(f"| {k} | {s['fid']:.3f} | {s['is']:.3f} | {s['mis']:.3f} | {s['am']:.3f} |")
    lines.append(f"\nreference: {result['reference']} split ({result['reference_clips']} clips), "
                 f"classifier accuracy {result['classifier_accuracy']:.4f}; "
                 f"{result['samples']} generated clips")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classifier", required=True, help="run folder or checkpoint of task=audio_sc09_classifier")
    ap.add_argument("--samples", required=True, help="folder of generated .wav clips")
    ap.add_argument("--reference", default="test", choices=["train", "valid", "test"])
    ap.add_argument("--data-root", default=None, help="default: the classifier's task.data.root")
    ap.add_argument("--max-reference", type=int, default=None, help="use the first N reference clips")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="also write the scores as JSON here")
    args = ap.parse_args(argv)
    try:
        result = score(args)
    except (DataError, ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(result))
    print(json.dumps(result))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write(args.out, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
