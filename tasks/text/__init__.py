"""Text: raw bytes or byte-level BPE, compared in bits per byte on the same held-out bytes.

task.py (TextTask), corpus.py (files -> splits -> memory-mapped byte cache), codecs.py
(bytes / BPE symbols and the bytes each covers), bpe_cache.py (the tokenizer trained on the
training split, cached beside the data), datasets.py (training windows, held-out spans),
noise.py and extras.py (noise robustness, length extrapolation), flops.py (compute counts).
"""
from .codecs import BPECodec, ByteCodec
from .corpus import Corpus, split_of
from .task import TextTask

__all__ = ["TextTask", "Corpus", "split_of", "ByteCodec", "BPECodec"]
