"""Finding classification data on disk: species FASTAs and Genomic Benchmarks folders.

Species layout (`task.data.species_dir`), one entry per species, sorted by name:

    species/
      e_coli.fa                 a FASTA file: species "e_coli" (any number of records)
      h_pylori/                 or a folder: species "h_pylori", every FASTA inside
        ELS37.fa  G27.fa ...

Genomic Benchmarks layout (Grešová et al. 2023, `task.data.benchmark_dir`): one sequence
per text file, the class is the folder name:

    <dataset>/train/<class>/*.txt
    <dataset>/test/<class>/*.txt

It has no validation split; `valid_fraction` of the training files (a seeded choice) are
held out for it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bytessm.task import DataError

from .alphabet import IUPAC, normalize_table
from .fasta import FastaFile, find_fastas, is_fasta


def species_fastas(root: str | Path) -> tuple[list[str], list[list[Path]]]:
    """(species names, their FASTA files) under `root`; errors name what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"species folder not found: {root} (expected one FASTA file or one "
                        f"folder of FASTA files per species; scripts/prepare_genomics.py "
                        f"writes data/genomics/species)")
    names, files = [], []
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            found = find_fastas(entry)
            if not found:
                raise DataError(f"species folder {entry} has no FASTA file (.fa, .fasta, "
                                f".fna, .fas, .ffn)")
            names.append(entry.name)
            files.append(found)
        elif is_fasta(entry):
            names.append(entry.name.split(".")[0])
            files.append([entry])
    if len(names) < 2:
        raise DataError(f"{root} holds {len(names)} species ({', '.join(names) or 'none'}); "
                        f"classification needs at least 2 (a FASTA file or a folder of FASTA "
                        f"files each)")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{root}: species {dup} appear twice (a file and a folder, or two "
                        f"files with the same stem)")
    return names, files


def open_species(root: str | Path, *, uppercase: bool, index_cache, validate: bool
                 ) -> tuple[list[str], list[list[FastaFile]]]:
    names, paths = species_fastas(root)
    fastas = [[FastaFile(p, uppercase=uppercase, index_cache=index_cache) for p in ps]
              for ps in paths]
    if validate:
        for fs in fastas:
            for f in fs:
                f.validate()
    return names, fastas


def _read_sequence(path: Path, table: np.ndarray) -> np.ndarray:
    text = "".join(path.read_text(encoding="latin-1").split())
    codes = table[np.frombuffer(text.encode("latin-1"), dtype=np.uint8)]
    bad = np.flatnonzero(codes < 0)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}, position {i} (0-based): {text[i]!r} is not an IUPAC "
                        f"nucleotide code (expected one of {IUPAC.decode()}, either case)")
    if not text:
        raise DataError(f"{path} is empty (expected one DNA sequence)")
    return codes.astype(np.uint8)


def read_benchmark(root: str | Path, *, uppercase: bool, valid_fraction: float, seed: int
                   ) -> tuple[list[str], dict[str, tuple[list[np.ndarray], list[int]]]]:
    """(class names, {split: (sequences, labels)}) from a Genomic Benchmarks folder."""
    root = Path(root)
    table = normalize_table(uppercase=uppercase)
    classes = None
    raw = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"Genomic Benchmarks folder {root} has no {split}/ folder "
                            f"(expected {root}/train/<class>/*.txt and {root}/test/<class>/*.txt)")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if classes is None:
            classes = found
            if len(classes) < 2:
                raise DataError(f"{folder} has {len(classes)} class folder(s); classification "
                                f"needs at least 2")
        elif found != classes:
            raise DataError(f"{folder} has classes {found} but {root}/train has {classes}")
        seqs, labels = [], []
        for label, name in enumerate(classes):
            files = sorted((folder / name).glob("*.txt"))
            if not files:
                raise DataError(f"class folder {folder / name} has no .txt sequence file")
            seqs += [_read_sequence(p, table) for p in files]
            labels += [label] * len(files)
        raw[split] = (seqs, labels)
    seqs, labels = raw["train"]
    perm = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = int(round(len(seqs) * valid_fraction))
    valid_idx, train_idx = sorted(perm[:n_valid]), sorted(perm[n_valid:])
    out = {"train": ([seqs[i] for i in train_idx], [labels[i] for i in train_idx]),
           "valid": ([seqs[i] for i in valid_idx], [labels[i] for i in valid_idx]),
           "test": raw["test"]}
    if not out["valid"][0]:
        raise DataError(f"task.data.valid_fraction={valid_fraction} leaves no validation "
                        f"sequence out of {len(seqs)} training files in {root}/train")
    return classes, out
