"""SC09 (Speech Commands digits, 16 kHz, 1 s): 8-bit mu-law waveform modeling in bits per
sample, unconditional generation to WAV, a digit classifier and sample-quality scores.

    codec.py       WAV <-> 16 kHz mono clip <-> mu-law symbols; atomic WAV writing
    data.py        the Speech Commands folder layout and its datasets
    classifier.py  the classifier's log-mel front end; probabilities + features read-out
    scores.py      IS, modified IS, AM score, FID (the SaShiMi protocol)
    task.py        AudioSC09Task (autoregressive or classify objective)
"""
from .codec import CLIP_LEN, MU_CHANNELS, SAMPLE_RATE, ZERO_LEVEL, mulaw_decode, mulaw_encode
from .data import DIGITS, SC09Dataset, scan
from .task import AudioSC09Task

__all__ = ["AudioSC09Task", "SC09Dataset", "scan", "DIGITS", "CLIP_LEN", "MU_CHANNELS",
           "SAMPLE_RATE", "ZERO_LEVEL", "mulaw_decode", "mulaw_encode"]
