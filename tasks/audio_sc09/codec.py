"""Waveform <-> 8-bit mu-law symbols, and reading / writing one 16 kHz clip.

The SC09 pipeline of SaShiMi (Goel et al. 2022, state-spaces/s4 `src/dataloaders/audio.py`):

    WAV --soundfile--> (frames, channels) float --mean over channels--> mono
        --torchaudio resample--> 16 kHz --zero pad / trim--> 16,000 samples
        --min-max scale to [-1, 1]--> mu-law (mu = 255) --> symbols 0..255 (int64)

and for the autoregressive objective the inputs are the symbols shifted right by one with
the zero level (128) first: input[t] = symbol[t-1], target[t] = symbol[t].

Reading raises `DataError` naming the file for anything a user can get wrong: an unreadable
or empty file, no frames, a sample rate that cannot be resampled to 16 kHz.
"""
from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from bytessm.io import atomic_open
from bytessm.task import DataError

SAMPLE_RATE = 16_000
CLIP_LEN = 16_000          # 1 s at 16 kHz
MU_CHANNELS = 256          # 8-bit mu-law, mu = 255
ZERO_LEVEL = MU_CHANNELS // 2  # the symbol of silence: mu_law_encoding(0.0) == 128
# Resampling from rate r builds a (16000/g, ~r/g) polyphase kernel, g = gcd(r, 16000); a
# rate sharing too small a factor with 16000 (e.g. 44101 Hz) would need gigabytes of kernel.
# 25 admits every rate in use (8000, 11025, 22050, 32000, 44100, 48000, 96000, ...).
MIN_RATE_GCD = 25


def check_rate(rate: int, where: str) -> None:
    """Raise DataError unless `rate` (Hz) can be resampled to 16 kHz."""
    if rate <= 0 or math.gcd(int(rate), SAMPLE_RATE) < MIN_RATE_GCD:
        raise DataError(
            f"{where}: sample rate {rate} Hz cannot be resampled to {SAMPLE_RATE} Hz (the "
            f"rate must share a factor of at least {MIN_RATE_GCD} with {SAMPLE_RATE}, as "
            f"8000, 11025, 22050, 32000, 44100 and 48000 Hz do); convert the file first")


def probe(path: str) -> int:
    """Check a WAV's header without decoding it: returns its frame count.

    DataError for an unreadable file, one without frames, or an unresamplable rate."""
    try:
        info = sf.info(path)
    except (RuntimeError, sf.LibsndfileError) as e:  # LibsndfileError subclasses RuntimeError
        raise DataError(f"{path}: not a readable audio file ({e})") from None
    if info.frames <= 0:
        raise DataError(f"{path}: the WAV file holds no audio frames (zero length)")
    check_rate(info.samplerate, path)
    return info.frames


def to_mono_16k(audio: np.ndarray | Tensor, rate: int, where: str = "audio") -> Tensor:
    """(frames,) or (frames, channels) at `rate` -> (frames',) float32 mono at 16 kHz."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if x.ndim == 2:
        x = x.mean(dim=1)                                             # (frames,)
    elif x.ndim != 1:
        raise DataError(f"{where}: expected (frames,) or (frames, channels) audio, got "
                        f"shape {tuple(x.shape)}")
    if rate != SAMPLE_RATE:
        check_rate(rate, where)
        x = AF.resample(x, rate, SAMPLE_RATE)
    return x


def fix_length(x: Tensor, length: int = CLIP_LEN) -> Tensor:
    """(n,) -> (length,): zeros appended to a short clip, a long one trimmed at the end."""
    if x.shape[0] >= length:
        return x[:length]
    return torch.nn.functional.pad(x, (0, length - x.shape[0]))


def read_clip(path: str, length: int = CLIP_LEN) -> Tensor:
    """A WAV file -> (length,) float32 mono 16 kHz waveform (not yet scaled)."""
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)  # (frames, channels)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise DataError(f"{path}: not a readable audio file ({e})") from None
    if audio.shape[0] == 0:
        raise DataError(f"{path}: the WAV file holds no audio frames (zero length)")
    return fix_length(to_mono_16k(audio, rate, where=path), length)


def mulaw_encode(x: Tensor) -> Tensor:
    """Waveform (..., L) -> mu-law symbols (..., L) int64 in [0, 255].

    Each clip (the last axis) is first min-max scaled to [-1, 1], as SaShiMi's
    `minmax_scale` (eps 1e-6), so a clip's loudness does not matter."""
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    scaled = (-1.0 + 2.0 * (x - lo) / (hi - lo + 1e-6)).clamp(-1.0, 1.0)
    return AF.mu_law_encoding(scaled, MU_CHANNELS).long()


def mulaw_decode(symbols: Tensor) -> Tensor:
    """Mu-law symbols (..., L) -> waveform (..., L) float32 in [-1, 1]."""
    return AF.mu_law_decoding(symbols.long(), MU_CHANNELS).float()


def shift_right(symbols: Tensor) -> Tensor:
    """(..., L) -> (..., L) with the zero level first: out[t] = symbols[t-1], out[0] = 128."""
    first = torch.full_like(symbols[..., :1], ZERO_LEVEL)
    return torch.cat([first, symbols[..., :-1]], dim=-1)


def write_wav(path: str, waveform: Tensor | np.ndarray, rate: int = SAMPLE_RATE) -> str:
    """Write a mono float waveform in [-1, 1] as 16-bit PCM WAV, atomically (temp + rename)."""
    data = np.clip(np.asarray(torch.as_tensor(waveform, dtype=torch.float32)), -1.0, 1.0)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_open(path, "wb") as f:
        sf.write(f, data, rate, subtype="PCM_16", format="WAV")
    return path
