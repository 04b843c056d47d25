"""Tiny genomics fixtures in the real formats (FASTA, BED, species folders), written per test."""
import pytest

from dna_fixtures import random_dna, write_fasta


@pytest.fixture
def genome(tmp_path):
    """chr1 (3000 bases, soft-masked run and N's), chr2 (500 bases); a BED over both."""
    chr1 = list(random_dna(3000, 1))
    chr1[100:110] = "acgtacgtac"
    chr1[200:205] = "NNNNN"
    records = {"chr1": "".join(chr1), "chr2": random_dna(500, 2)}
    fa = write_fasta(tmp_path / "genome" / "genome.fa", records)
    bed = tmp_path / "genome" / "genome.bed"
    bed.write_text("# chrom start end split\n"
                   "chr1\t0\t1200\ttrain\nchr1\t1200\t2000\ttrain\nchr2\t10\t60\ttrain\n"
                   "chr1\t2000\t2500\tvalid\nchr1\t2500\t3000\ttest\n")
    return fa, bed, records


@pytest.fixture
def species_dir(tmp_path):
    """Three species: two single FASTA files and one folder of two; different GC content."""
    root = tmp_path / "species"
    write_fasta(root / "alpha.fa", {"a1": random_dna(6000, 3, gc=0.3)})
    write_fasta(root / "beta.fasta", {"b1": random_dna(4000, 4, gc=0.7),
                                      "b2": random_dna(3000, 5, gc=0.7)})
    write_fasta(root / "gamma" / "s1.fa", {"g1": random_dna(5000, 6, gc=0.5)})
    write_fasta(root / "gamma" / "s2.fna", {"g2": random_dna(5000, 7, gc=0.5)})
    return root
