"""Mu-law coding, the input shift, resampling, channel mixing, padding and WAV writing."""
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from bytessm.task import DataError
from bytessm.tasks.audio_sc09.codec import (CLIP_LEN, ZERO_LEVEL, mulaw_decode, mulaw_encode,
                                            read_clip, shift_right, write_wav)
from sc09_fixtures import tone


def compand(x):  # the mu-law curve, by hand: sign(x) ln(1 + 255|x|) / ln(256)
    return np.sign(x) * np.log1p(255 * np.abs(x)) / math.log(256)


def test_mulaw_round_trip_within_one_step():
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64).float()   # min -1, max 1: no rescale
    sym = mulaw_encode(x)
    assert sym.dtype == torch.long and sym.min() == 0 and sym.max() == 255
    back = mulaw_decode(sym).double().numpy()
    # In the companded domain the 256 levels are 2/255 apart: rounding is within half a step.
    err = np.abs(compand(x.double().numpy()) - compand(back))
    assert err.max() <= 1 / 255 + 1e-6
    # In the waveform domain: within one step of the level it came from.
    step = np.abs(mulaw_decode(sym.clamp(max=254) + 1).numpy() - mulaw_decode(sym.clamp(max=254)).numpy())
    assert (np.abs(x.numpy() - back) <= step + 1e-6).all()


def test_mulaw_levels_by_hand():
    x = np.array([-0.5, 0.0, 1.5, 0.5, 1.0])
    scaled = -1 + 2 * (x - x.min()) / (x.max() - x.min() + 1e-6)   # SaShiMi's minmax_scale
    expected = np.floor((compand(scaled) + 1) / 2 * 255 + 0.5).astype(int).tolist()
    assert expected[0] == 0 and expected[2] == 255
    assert mulaw_encode(torch.tensor(x, dtype=torch.float32)).tolist() == expected
    assert mulaw_encode(torch.tensor([-1.0, 1.0, 1e-5])).tolist()[-1] == ZERO_LEVEL == 128


def test_each_clip_is_minmax_scaled():
    x = torch.tensor(tone(440))[:4000] * 0.3 + 0.1                   # range [-0.05, 0.25]
    sym = mulaw_encode(x)
    assert sym.min() == 0 and sym.max() == 255
    # loudness does not matter (up to the 1e-6 in the scaling's denominator)
    assert (mulaw_encode(x * 4) - sym).abs().max() <= 1
    batch = torch.stack([x, 3 * x])                                  # per clip, along the last axis
    assert torch.equal(mulaw_encode(batch), torch.stack([sym, sym]))


def test_shift_right():
    s = torch.tensor([[5, 6, 7], [1, 2, 3]])
    assert shift_right(s).tolist() == [[128, 5, 6], [128, 1, 2]]


def test_resampling_to_16k(tmp_path):
    path = str(tmp_path / "a.wav")
    x = tone(440, rate=22050)
    sf.write(path, x, 22050, subtype="FLOAT")
    clip = read_clip(path)
    assert clip.shape == (CLIP_LEN,)
    ref = AF.resample(torch.tensor(x), 22050, 16000)[:CLIP_LEN]
    torch.testing.assert_close(clip, ref)
    assert int(np.abs(np.fft.rfft(clip.numpy())).argmax()) == 440   # 1-s clip: bin = Hz


def test_short_clip_padded_long_clip_trimmed(tmp_path):
    short, long_ = str(tmp_path / "s.wav"), str(tmp_path / "l.wav")
    sf.write(short, tone(300, rate=8000, seconds=0.5), 8000, subtype="FLOAT")
    x = tone(300, seconds=1.5)
    sf.write(long_, x, 16000, subtype="FLOAT")
    s = read_clip(short)
    assert s.shape == (CLIP_LEN,) and s[:7900].abs().max() > 0.4 and s[8000:].abs().max() == 0
    torch.testing.assert_close(read_clip(long_), torch.tensor(x[:CLIP_LEN]))


def test_channels_are_averaged(tmp_path):
    a, b = tone(300, amp=0.5), tone(700, amp=0.25)
    path = str(tmp_path / "st.wav")
    sf.write(path, np.stack([a, b], 1), 16000, subtype="FLOAT")
    torch.testing.assert_close(read_clip(path), torch.tensor((a + b) / 2))
    sf.write(path, np.stack([a, -a], 1), 16000, subtype="FLOAT")
    assert read_clip(path).abs().max() == 0


def test_unresamplable_rate_named(tmp_path):
    path = str(tmp_path / "odd.wav")
    sf.write(path, tone(300, rate=44101, seconds=0.1), 44101)
    with pytest.raises(DataError, match=r"odd\.wav: sample rate 44101 Hz cannot be resampled"):
        read_clip(path)


def test_write_wav_is_16_bit_16k_and_atomic(tmp_path):
    wave = torch.tensor(tone(500, amp=0.9))
    path = write_wav(str(tmp_path / "out" / "x.wav"), wave)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    back, _ = sf.read(path, dtype="float32")
    assert np.abs(back - wave.numpy()).max() <= 1 / 32768 + 1e-7
    assert os.listdir(tmp_path / "out") == ["x.wav"]                 # no temp file left
