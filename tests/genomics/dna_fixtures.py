"""Writers of tiny DNA files in the real formats (FASTA), shared by the genomics tests."""
from pathlib import Path

import torch


def random_dna(n: int, seed: int, gc: float = 0.5) -> str:
    g = torch.Generator().manual_seed(seed)
    p = torch.tensor([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    return "".join("ACGT"[i] for i in torch.multinomial(p, n, replacement=True, generator=g))


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for name, seq in records.items():
            f.write(f">{name} test record\n")
            f.writelines(seq[i:i + width] + "\n" for i in range(0, len(seq), width))
    return path

