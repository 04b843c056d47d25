"""Genomics: DNA as bytes. FASTA (pyfaidx) + BED pretraining, species classification.

    bytessm train task=genomics            next-base (or masked) pretraining, bits per base
    bytessm train task=genomics_species    species from random windows; accuracy and MCC

Modules: alphabet (bytes, specials, reverse complement), fasta (indexed reading and
validation), intervals (BED, window widening/clipping), sources (species folders, Genomic
Benchmarks), datasets (map-style samples), rc (Caduceus-PS RC-equivariant model), task
(the Task classes). docs/genomics.md shows how to prepare data and train.
"""
from .alphabet import MASK, PAD, VOCAB_SIZE, reverse_complement
from .fasta import FastaFile
from .intervals import Interval, Window, read_bed, window
from .rc import RCLMHead, RCPositionClassifier, RCPSBackbone, rc_hidden
from .task import GenomicsPretrainTask, GenomicsSpeciesTask, matthews_corrcoef

__all__ = ["GenomicsPretrainTask", "GenomicsSpeciesTask", "RCPSBackbone", "RCLMHead",
           "RCPositionClassifier", "rc_hidden", "FastaFile", "Interval", "Window",
           "read_bed", "window", "reverse_complement", "matthews_corrcoef", "MASK", "PAD",
           "VOCAB_SIZE"]
