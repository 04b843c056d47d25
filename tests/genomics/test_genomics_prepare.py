"""scripts/prepare_genomics.py (and bench_genomics.py --smoke): conversion of gzip/xz genomes into species FASTAs + FASTA/BED
that the tasks read (the apt-get/dpkg part runs for real in the prep script itself)."""
import gzip
import importlib.util
import lzma
from pathlib import Path

from bytessm.tasks.genomics.fasta import FastaFile
from bytessm.tasks.genomics.intervals import read_bed

from dna_fixtures import random_dna

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("prepare_genomics", ROOT / "scripts" / "prepare_genomics.py")
prep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prep)


def write(path: Path, records: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else lzma.open
    with opener(path, "wt") as f:
        for name, seq in records.items():
            f.write(f">{name} some description\n")
            f.writelines(seq[i:i + 70] + "\n" for i in range(0, len(seq), 70))
    return path


def test_convert_writes_species_and_pretraining_files(tmp_path, capsys):
    src = tmp_path / "src"
    genomes = {
        "e_coli": [write(src / "DH1.fasta.gz", {"gi|1|": random_dna(1000, 1)}),
                   write(src / "MG1655-K12.fasta.gz", {"K-12": random_dna(1200, 2)})],
        "k_pneumoniae": [write(src / "Klebs_HS11286.fna.xz",
                               {"CP1": random_dna(2000, 3), "CP2": random_dna(300, 4)})],
    }
    out = tmp_path / "out"
    prep.convert(genomes, out, interval=100)
    ecoli = FastaFile(out / "species" / "e_coli.fa")
    assert ecoli.lengths == {"DH1": 1000, "MG1655-K12": 1200}
    assert ecoli.fetch("DH1", 0, 1000).tobytes().decode() == random_dna(1000, 1)
    kp = FastaFile(out / "species" / "k_pneumoniae.fa")
    assert kp.lengths == {"Klebs_HS11286_1": 2000, "Klebs_HS11286_2": 300}
    pre = FastaFile(out / "pretrain" / "bacteria.fa")
    assert list(pre.lengths) == ["e_coli_MG1655-K12", "k_pneumoniae_Klebs_HS11286_1",
                                 "k_pneumoniae_Klebs_HS11286_2"]
    ivs = read_bed(out / "pretrain" / "bacteria.bed", pre.lengths)
    # MG1655: 1200 bases -> train [0, 960): 9 tiles, valid [960, 1080): 1, test [1080, 1200): 1
    mg = [(i.start, i.split) for i in ivs if i.chrom == "e_coli_MG1655-K12"]
    assert mg == [(a, "train") for a in range(0, 900, 100)] + [(960, "valid"), (1080, "test")]
    assert all(i.end - i.start == 100 for i in ivs)
    assert not list(out.rglob("*.tmp"))
    assert "wrote" in capsys.readouterr().out


def test_bench_genomics_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_genomics", ROOT / "scripts" / "bench_genomics.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--models", "mamba-6x128", "--out", str(tmp_path)]) == 0
    import json
    rows = json.loads((tmp_path / "bench_genomics.json").read_text())["rows"]
    assert [r["length"] for r in rows] == [64, 128, 256]
    assert all(r["bases_per_s"] > 0 for r in rows)
    assert "| mamba-6x128 | 2^8 |" in (tmp_path / "bench_genomics.md").read_text()
