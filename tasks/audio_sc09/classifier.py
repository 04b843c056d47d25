"""The digit classifier's front end and the read-out used for sample-quality scores.

SaShiMi scores SC09 samples with a digit classifier over 32-bin mel spectrograms (a
ResNeXt; state-spaces/s4 `models/sashimi/sc09_classifier`). Ours is a bytessm backbone over
log-mel frames: the task's encoder turns the clip's mu-law symbols back into a waveform and
a log-mel spectrogram (torchaudio), one frame per 10 ms, projected to d_model:

    symbols (B, 16000) --mu-law decode--> (B, 16000) --MelSpectrogram--> (B, n_mels, 101)
        --log, LayerNorm over bins, Linear--> (B, 101, d_model)

The backbone (bidirectional or causal) and a mean-pooling ClassifierHead follow. The
scores' "features" are the classifier head's input (the pooled hidden state), as SaShiMi
takes the input of its classifier's last layer.
"""
from __future__ import annotations

import torch
import torchaudio
from einops import rearrange
from torch import Tensor, nn

from .codec import SAMPLE_RATE, mulaw_decode


class MelEncoder(nn.Module):
    """mu-law symbols (B, L) int64 -> log-mel frames (B, 1 + L // hop, d_model) float32."""

    def __init__(self, d_model: int, *, n_mels: int = 64, n_fft: int = 400, hop: int = 160):
        super().__init__()
        if n_mels <= 0 or n_fft <= 0 or hop <= 0:
            raise ValueError(f"n_mels, n_fft and hop must be positive, got {n_mels}, {n_fft}, {hop}")
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        self.norm = nn.LayerNorm(n_mels)
        self.proj = nn.Linear(n_mels, d_model)

    def forward(self, symbols: Tensor) -> Tensor:
        # The STFT stays in float32 under bf16 autocast.
        with torch.autocast(symbols.device.type, enabled=False):
            wave = mulaw_decode(symbols)                                # (B, L)
            spec = torch.log(self.mel(wave) + 1e-6)                     # (B, n_mels, T)
        frames = rearrange(spec, "b m t -> b t m")                      # (B, T, n_mels)
        return self.proj(self.norm(frames))                             # (B, T, D)


@torch.no_grad()
def classify(model: nn.Module, symbols: Tensor, *, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Run a trained classifier (a SequenceModel with a ClassifierHead) over clips.

    symbols (N, 16000) int64 -> (probs (N, classes), features (N, D)), float64 on CPU.
    The features are captured at the input of the head's final projection."""
    proj = getattr(getattr(model, "head", None), "proj", None)
    if proj is None:
        raise ValueError("classify() needs a model with a classifier head (model.head.proj)")
    device = next(model.parameters()).device
    captured: list[Tensor] = []
    hook = proj.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach()))
    probs = []
    try:
        model.eval()
        for chunk in symbols.split(batch_size):
            logits = model(chunk.to(device))                            # (b, classes)
            probs.append(torch.softmax(logits.double(), dim=-1).cpu())
    finally:
        hook.remove()
    return torch.cat(probs), torch.cat([c.double().cpu() for c in captured])
