"""Prepare the genomics data: bacterial genomes from Debian -> species FASTAs + FASTA/BED.

    python scripts/prepare_genomics.py [--out data/genomics] [--interval 32768]

Installs (apt-get, as root) Debian's `ragout-examples` (16 complete bacterial genomes of
E. coli, H. pylori, S. aureus and V. cholerae, gzipped FASTA) and `kleborate-examples`
(4 K. pneumoniae assemblies, xz FASTA), finds the genomes with `dpkg -L`, and writes

    <out>/species/<species>.fa        one FASTA per species, one record per strain
                                      replicon (task=genomics_species reads these)
    <out>/pretrain/bacteria.fa        one strain per species (the first listed below)
    <out>/pretrain/bacteria.bed       chrom, start, end, split: each record tiled into
                                      --interval-base intervals; per record the first 80% is
                                      train, the next 10% valid, the last 10% test
                                      (task=genomics reads these)

Record names are "<strain>" (or "<strain>_<n>" for multi-record assemblies), the original
header kept after a space. FASTA lines are 80 bases. Every file is written to a temporary
name and renamed, so an interrupted run leaves no half-written file; stale .fai indexes
are removed. Prints what it wrote.
"""
from __future__ import annotations

import argparse
import gzip
import lzma
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bytessm.io import atomic_open, atomic_write

PACKAGES = ("ragout-examples", "kleborate-examples")
# species -> (Debian package, path pattern of its genomes in `dpkg -L`); the first genome
# (sorted) named in PRETRAIN goes to the pretraining FASTA.
SPECIES = {
    "e_coli": ("ragout-examples", r"/E\.Coli/references/[^/]+\.fasta\.gz$"),
    "h_pylori": ("ragout-examples", r"/H\.Pylori/references/[^/]+\.fasta\.gz$"),
    "s_aureus": ("ragout-examples", r"/S\.Aureus/references/[^/]+\.fasta\.gz$"),
    "v_cholerae": ("ragout-examples", r"/V\.Cholerae/references/[^/]+\.fasta\.gz$"),
    "k_pneumoniae": ("kleborate-examples", r"/kleborate/examples/data/[^/]+\.fna\.xz$"),
}
PRETRAIN = {"e_coli": "MG1655-K12", "h_pylori": "G27", "s_aureus": "N315",
            "v_cholerae": "O1_biovar", "k_pneumoniae": "Klebs_HS11286"}
SPLITS = ((0.8, "train"), (0.9, "valid"), (1.0, "test"))
LINE = 80


def ensure_packages() -> None:
    missing = [p for p in PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"error: Debian packages {missing} are not installed; run\n"
                 f"  sudo apt-get install -y {' '.join(missing)}")
    print(f"installing {' '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env)
    if r.returncode != 0:   # an empty package list: update once, try again
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       env=env, check=True)


def package_genomes() -> dict[str, list[Path]]:
    """species -> genome files of the installed packages, found through `dpkg -L`."""
    listing = {p: subprocess.run(["dpkg", "-L", p], capture_output=True, text=True,
                                 check=True).stdout.split("\n") for p in PACKAGES}
    found = {}
    for species, (package, pattern) in SPECIES.items():
        files = sorted(Path(f) for f in listing[package] if re.search(pattern, f))
        if not files:
            sys.exit(f"error: no {species} genome matching {pattern!r} in `dpkg -L {package}`")
        found[species] = files
    return found


def strain_of(path: Path) -> str:
    return path.name.split(".")[0]


def read_fasta(path: Path):
    """(header, sequence) pairs of a plain, gzip or xz FASTA file."""
    opener = gzip.open if path.suffix == ".gz" else lzma.open if path.suffix == ".xz" else open
    header, chunks = None, []
    with opener(path, "rt", encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(chunks)
                header, chunks = line[1:], []
            elif line:
                chunks.append(line)
    if header is not None:
        yield header, "".join(chunks)


def genome_records(path: Path) -> list[tuple[str, str, str]]:
    """(record name, original header, sequence) of one genome file."""
    records = list(read_fasta(path))
    strain = strain_of(path)
    if len(records) == 1:
        return [(strain, records[0][0], records[0][1])]
    return [(f"{strain}_{i + 1}", h, s) for i, (h, s) in enumerate(records)]


def write_fasta(path: Path, records: list[tuple[str, str, str]]) -> None:
    """80-base lines, atomically; a stale samtools index (.fai) beside it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="ascii") as f:
        for name, header, seq in records:
            f.write(f">{name} {header}\n")
            for i in range(0, len(seq), LINE):
                f.write(seq[i:i + LINE] + "\n")
    Path(f"{path}.fai").unlink(missing_ok=True)


def bed_rows(records: list[tuple[str, str, str]], interval: int) -> list[tuple[str, int, int, str]]:
    """Tile each record into `interval`-base intervals inside its split's region."""
    rows = []
    for name, _, seq in records:
        start = 0
        for frac, split in SPLITS:
            end = int(round(len(seq) * frac))
            for a in range(start, end - interval + 1, interval):
                rows.append((name, a, a + interval, split))
            start = end
    return rows


def convert(genomes: dict[str, list[Path]], out: Path, interval: int) -> None:
    pretrain = []
    for species, files in genomes.items():
        records = [r for p in files for r in genome_records(p)]
        path = out / "species" / f"{species}.fa"
        write_fasta(path, records)
        print(f"wrote {path}: {len(records)} records from {len(files)} strains, "
              f"{sum(len(s) for _, _, s in records):,} bases", flush=True)
        chosen = [p for p in files if strain_of(p) == PRETRAIN.get(species)] or files[:1]
        pretrain += [(f"{species}_{n}", h, s) for n, h, s in genome_records(chosen[0])]
    fa = out / "pretrain" / "bacteria.fa"
    write_fasta(fa, pretrain)
    print(f"wrote {fa}: {len(pretrain)} records, {sum(len(s) for _, _, s in pretrain):,} bases")
    rows = bed_rows(pretrain, interval)
    bed = out / "pretrain" / "bacteria.bed"
    atomic_write(bed, "".join(f"{c}\t{a}\t{b}\t{s}\n" for c, a, b, s in rows), encoding="ascii")
    counts = {s: sum(r[3] == s for r in rows) for _, s in SPLITS}
    print(f"wrote {bed}: {len(rows)} intervals of {interval} bases "
          f"({', '.join(f'{k} {v}' for k, v in counts.items())})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/genomics"))
    ap.add_argument("--interval", type=int, default=1 << 15,
                    help="BED interval length in bases (default 32768)")
    args = ap.parse_args(argv)
    if shutil.which("dpkg") is None:
        sys.exit("error: this script reads Debian packages (dpkg, apt-get); on another system "
                 "place one FASTA per species in data/genomics/species/ yourself")
    ensure_packages()
    convert(package_genomes(), args.out, args.interval)


if __name__ == "__main__":
    main()
