"""Layers: norms, mixers (Mamba, bidirectional Mamba, attention), residual block, heads."""
from .attention import Attention, KVCache
from .block import MLP, Block
from .heads import ClassifierHead, LMHead
from .mamba import BiMamba, Mamba, MambaState, SSMBranch
from .norm import RMSNorm

__all__ = ["Attention", "KVCache", "MLP", "Block", "ClassifierHead", "LMHead", "BiMamba",
           "Mamba", "MambaState", "SSMBranch", "RMSNorm"]
