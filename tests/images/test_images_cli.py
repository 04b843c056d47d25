"""`bytessm train task=images` end to end on tiny generated files in each supported layout,
then `bytessm eval` of the checkpoint, and the one-line errors a user sees.

Fashion-MNIST is trained through the installed `bytessm` executable; its eval, the other
layouts and the errors call the same entry point, `bytessm.cli.main`, in this process,
which saves a Python start-up and imports per run.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from bytessm import cli

from image_fixtures import make_cifar, make_idx, make_imagefolder

BIN = Path(sys.executable).with_name("bytessm")
TINY = ["task=images", "model=vim_cpu", "model.d_model=16", "model.n_layer=1",
        "trainer.max_steps=2", "trainer.batch_size=4", "trainer.progress=false",
        "trainer.eval_batches=1", "trainer.warmup_steps=1", "task.data.valid_size=4"]


def run(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env, timeout=300)


def run_in_process(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """`bytessm ARGS` through cli.main -> (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))      # cli.main rewrites sys.argv
    GlobalHydra.instance().clear()
    capsys.readouterr()
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return code, out, err


LAYOUTS = {
    "fashion_mnist": (lambda root: make_idx(root, "FashionMNIST", n_train=16, n_test=8),
                      ["task.image_size=28", "task.patch_size=7"]),
    "mnist": (lambda root: make_idx(root, "MNIST", n_train=16, n_test=8),
              ["task.image_size=28", "task.patch_size=14", "task.augment.hflip=0"]),
    "cifar10": (lambda root: make_cifar(root, "cifar10", n_per_batch=3),
                ["task.image_size=32", "task.patch_size=8", "task.augment.randaugment=true"]),
    "cifar100": (lambda root: make_cifar(root, "cifar100", n_per_batch=12),
                 ["task.image_size=16", "task.patch_size=8", "task.augment.mixup_alpha=0.8"]),
    "imagefolder": (lambda root: make_imagefolder(root, splits=("train", "val"), per_class=4),
                    ["task.image_size=[16,24]", "task.patch_size=8", "task.eval_crop_pct=0.875"]),
}


@pytest.mark.parametrize("dataset", list(LAYOUTS))
def test_train_on_each_layout(tmp_path, capsys, monkeypatch, dataset):
    make, extra = LAYOUTS[dataset]
    make(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", *TINY, f"task.data.dataset={dataset}", f"task.data.root={tmp_path / 'data'}",
            f"trainer.out_dir={out}", *extra]
    if dataset == "fashion_mnist":
        r = run(*args)
        code, stdout, stderr = r.returncode, r.stdout, r.stderr
    else:
        code, stdout, stderr = run_in_process(capsys, monkeypatch, *args)
    assert code == 0, stderr[-3000:]
    final = json.loads(stdout.strip().splitlines()[-1])
    assert final["split"] == "valid" and final["step"] == 2
    assert 0 <= final["accuracy"] <= final["top5_accuracy"] <= 1
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert {row["split"] for row in rows} == {"train", "valid"}
    if dataset == "fashion_mnist":  # and the checkpoint evaluates on the test split
        code, stdout, stderr = run_in_process(capsys, monkeypatch, "eval",
                                              f"checkpoint={out}/checkpoints/last", "split=test")
        assert code == 0, stderr[-3000:]
        test = json.loads(stdout.strip().splitlines()[-1])
        assert test["split"] == "test" and "top5_accuracy" in test


@pytest.mark.parametrize("args,message", [
    (["task.data.root=/nonexistent/fm"], "data root /nonexistent/fm does not exist"),
    (["model=tiny"], "needs a bidirectional model"),
    (["task.image_size=30", "task.patch_size=16"],
     "image height 30 is not divisible by the patch size 16"),
], ids=["missing-root", "causal-model", "indivisible"])
def test_usage_errors(tmp_path, capsys, monkeypatch, args, message):
    code, _, stderr = run_in_process(capsys, monkeypatch, "train", *TINY,
                                     f"trainer.out_dir={tmp_path / 'run'}", *args)
    assert code == 2, stderr[-3000:]
    assert message in stderr and "Traceback" not in stderr


def test_fine_tune_at_another_image_size(tmp_path, capsys, monkeypatch):
    """`trainer.init_from`: weights of a 28-pixel run (4x4 patch grid) start a 56-pixel run
    (8x8): its position grid is the old one resized bicubically, every other weight is the
    checkpoint's, and the step count starts again. A patch size that changes another
    weight's shape is refused naming the parameter and both shapes."""
    import torch

    from bytessm.tasks.images import interpolate_pos_embed
    from bytessm.train.checkpoint import load_for_inference

    make_idx(tmp_path / "data", "FashionMNIST", n_train=16, n_test=8)
    common = [*TINY, f"task.data.root={tmp_path / 'data'}", "task.patch_size=7"]
    code, _, stderr = run_in_process(capsys, monkeypatch, "train", *common,
                                     f"trainer.out_dir={tmp_path / 'a'}")
    assert code == 0, stderr[-3000:]
    # one step at a negligible learning rate: the weights stay the loaded ones (to ~1e-9)
    code, stdout, stderr = run_in_process(
        capsys, monkeypatch, "train", *common, "task.image_size=56", "trainer.max_steps=1",
        "trainer.lr=1e-9", "trainer.weight_decay=0", "trainer.seed=5", f"trainer.init_from={tmp_path / 'a'}",
        f"trainer.out_dir={tmp_path / 'b'}")
    assert code == 0, stderr[-3000:]
    assert "weights from" in stdout and json.loads(stdout.strip().splitlines()[-1])["step"] == 1
    (_, _, a), (_, _, b) = load_for_inference(tmp_path / "a"), load_for_inference(tmp_path / "b")
    sa, sb = a.state_dict(), b.state_dict()
    pos = "backbone.encoder.pos_embed"
    assert sa[pos].shape == (1, 16, 4, 4) and sb[pos].shape == (1, 16, 8, 8)
    torch.testing.assert_close(sb[pos], interpolate_pos_embed(sa[pos], (8, 8)), atol=1e-6, rtol=0)
    for name in sa.keys() - {pos}:
        torch.testing.assert_close(sb[name], sa[name], atol=1e-6, rtol=0, msg=name)

    code, _, stderr = run_in_process(capsys, monkeypatch, "train", *common, "task.patch_size=14",
                                     f"trainer.init_from={tmp_path / 'a'}",
                                     f"trainer.out_dir={tmp_path / 'c'}")
    assert code == 2 and "Traceback" not in stderr
    assert ("parameter backbone.encoder.proj.1.weight has shape (16, 49) there but (16, 196) "
            "in this run's model") in stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_classification_step_replays_from_a_cuda_graph(tmp_path, graph_matches_eager):
    """trainer.cuda_graph=true on the classification step (patches, mixup, top-5 counts)."""
    make, extra = LAYOUTS["cifar100"]
    make(tmp_path / "data")
    graph_matches_eager(*TINY, "task.data.dataset=cifar100",
                        f"task.data.root={tmp_path / 'data'}", *extra)
