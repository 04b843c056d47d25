"""AudioSC09Task: metrics by hand, model assembly for both objectives, prompts and WAVs."""
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from bytessm.task import ConfigError
from bytessm.tasks.audio_sc09 import AudioSC09Task
from bytessm.tasks.audio_sc09.classifier import classify
from bytessm.tasks.audio_sc09.codec import mulaw_decode, mulaw_encode, read_clip
from bytessm.train.build import build_model
from sc09_fixtures import config, make_sc09, tone

TINY_MODEL = {"_target_": "bytessm.backbone.Backbone", "name": "t", "d_model": 16, "n_layer": 1,
              "d_state": 4, "bidirectional": False}


def test_bits_per_sample_of_uniform_prediction_is_eight(tmp_path):
    task = AudioSC09Task(config(tmp_path))
    target = torch.randint(0, 256, (3, 50))
    loss, m = task.loss_and_metrics(torch.zeros(3, 50, 256), {"target": target})
    assert loss.item() == pytest.approx(math.log(256), rel=1e-6)
    totals = {k: (float(s), float(c)) for k, (s, c) in m.items()}
    assert totals["bits_per_sample"][1] == 150
    assert task.summarize(totals)["bits_per_sample"] == pytest.approx(8.0, rel=1e-6)


def test_classifier_metrics(tmp_path):
    task = AudioSC09Task(config(tmp_path, objective="classify"))
    logits = torch.zeros(4, 10)
    logits[torch.arange(4), torch.tensor([1, 2, 3, 9])] = 5.0
    loss, m = task.loss_and_metrics(logits, {"label": torch.tensor([1, 2, 0, 9])})
    assert float(m["accuracy"][0]) == 3 and float(m["accuracy"][1]) == 4
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2, 0, 9]))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_models_for_both_objectives(tmp_path):
    make_sc09(tmp_path / "sc", per_digit=2, valid=1, test=0)
    with open(tmp_path / "sc" / "testing_list.txt", "w") as f:   # one test clip is enough
        f.write("three/spk01_nohash_0.wav\n")
    for objective, key in (("autoregressive", "target"), ("classify", "label")):
        cfg = config(tmp_path / "sc", objective=objective, seq_len=16000)
        cfg.model = OmegaConf.create(TINY_MODEL)
        task = AudioSC09Task(cfg)
        train, valid, test = task.build_datasets()
        assert (len(train), len(valid), len(test)) == (9, 10, 1)
        model = build_model(cfg, task)
        batch = {k: torch.stack([train[0][k], train[1][k]]) for k in train[0]}
        with torch.no_grad():
            out = model(batch["input"][:, :4000] if objective == "autoregressive" else batch["input"])
        if objective == "autoregressive":
            assert out.shape == (2, 4000, 256)
        else:
            assert out.shape == (2, 10)
            probs, feats = classify(model, batch["input"], batch_size=1)
            assert probs.shape == (2, 10) and feats.shape == (2, 16)
            torch.testing.assert_close(probs, torch.softmax(out.double(), -1), rtol=1e-5, atol=1e-6)
            assert model.backbone.encoder(batch["input"]).shape == (2, 101, 16)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="task.objective"):
        AudioSC09Task(config(tmp_path, objective="diffusion"))
    make_sc09(tmp_path / "sc", per_digit=3)
    with pytest.raises(ConfigError, match=r"trainer.seq_len must be 1..16000"):
        AudioSC09Task(config(tmp_path / "sc", seq_len=16001)).build_datasets()
    with pytest.raises(ConfigError, match=r"trainer.seq_len must be 16000"):
        AudioSC09Task(config(tmp_path / "sc", objective="classify", seq_len=8000)).build_datasets()


def test_prompts_and_samples(tmp_path):
    task = AudioSC09Task(config(tmp_path))
    assert task.encode_prompt("") == [128]
    wav = str(tmp_path / "p.wav")
    sf.write(wav, tone(400, seconds=0.25), 16000, subtype="PCM_16")
    prompt = task.encode_prompt(wav)
    assert prompt[0] == 128 and prompt[1:] == mulaw_encode(read_clip(wav)).tolist()

    samples = [list(range(256)) * 3, [128] * 100]
    paths = task.write_samples(samples, str(tmp_path / "gen"))
    assert [os.path.basename(p) for p in paths] == ["sample_0000.wav", "sample_0001.wav"]
    assert sorted(os.listdir(tmp_path / "gen")) == ["sample_0000.wav", "sample_0001.wav"]
    audio, rate = sf.read(paths[0], dtype="float32")
    assert rate == 16000 and sf.info(paths[0]).subtype == "PCM_16"
    expected = mulaw_decode(torch.tensor(samples[0])).numpy()
    assert np.abs(audio - expected).max() <= 1 / 32768 + 1e-7
    with pytest.raises(ValueError, match="outside 0..255"):
        task.write_samples([[300]], str(tmp_path / "bad"))
