"""FASTA reading (normalisation, IUPAC errors, index fallback) and BED windows."""
import gzip

import pytest
import torch

from bytessm.task import DataError
from bytessm.tasks.genomics.fasta import FastaFile
from bytessm.tasks.genomics.intervals import Window, read_bed, window

from dna_fixtures import write_fasta


def test_fetch_normalises_and_keeps_soft_mask_on_request(genome):
    fa_path, _, records = genome
    fa = FastaFile(fa_path)
    assert fa.lengths == {"chr1": 3000, "chr2": 500}
    got = fa.fetch("chr1", 95, 210).tobytes().decode()
    assert got == records["chr1"][95:210].upper()
    assert got[5:15] == "ACGTACGTAC" and got[105:110] == "NNNNN"
    lower = FastaFile(fa_path, uppercase=False).fetch("chr1", 100, 110).tobytes()
    assert lower == b"acgtacgtac"


def test_iupac_ambiguity_codes_become_n_and_u_becomes_t(tmp_path):
    fa = FastaFile(write_fasta(tmp_path / "x.fa", {"r": "ACRYUGTn-"}))
    assert fa.fetch("r", 0, 9).tobytes() == b"ACNNTGTNN"


def test_non_iupac_byte_names_record_and_position(tmp_path):
    fa = write_fasta(tmp_path / "x.fa", {"ok": "ACGT" * 20, "bad": "ACGT" * 30 + "ACXT"},
                     width=50)
    f = FastaFile(fa)
    with pytest.raises(DataError, match=r"record 'bad', position 122 \(0-based\): 'X' is not "
                                        r"an IUPAC nucleotide code"):
        f.validate()
    assert f.fetch("bad", 0, 120).size == 120          # the rest stays readable


def test_index_written_next_to_fasta(genome):
    fa = FastaFile(genome[0])
    assert fa.index_path == genome[0].with_name("genome.fa.fai") and fa.index_path.exists()


def test_unwritable_index_location_falls_back_to_cache(tmp_path):
    fa_path = write_fasta(tmp_path / "data" / "g.fa", {"r": "ACGT" * 10})
    (tmp_path / "data" / "g.fa.fai").mkdir()          # cannot be written as a file, even by root
    fa = FastaFile(fa_path, index_cache=tmp_path / "cache")
    assert fa.index_path.parent == tmp_path / "cache" and fa.index_path.exists()
    assert fa.fetch("r", 4, 8).tobytes() == b"ACGT"


def test_no_writable_index_location_says_where_it_tried(tmp_path):
    fa_path = write_fasta(tmp_path / "g.fa", {"r": "ACGT"})
    (tmp_path / "g.fa.fai").mkdir()
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DataError, match=r"cannot write a FASTA index for .*g\.fa: tried "
                                        r".*g\.fa\.fai .* and .*cache.*index_cache"):
        FastaFile(fa_path, index_cache=blocker)


def test_gzip_and_missing_fasta_errors(tmp_path):
    gz = tmp_path / "g.fa.gz"
    with gzip.open(gz, "wt") as f:
        f.write(">r\nACGT\n")
    with pytest.raises(DataError, match="gzip-compressed; decompress it"):
        FastaFile(gz)
    with pytest.raises(DataError, match="FASTA file not found: .*nope.fa"):
        FastaFile(tmp_path / "nope.fa")


def test_malformed_fasta_names_the_file(tmp_path):
    p = tmp_path / "m.fa"
    p.write_text(">r\nACGT\nA\nACG\n")
    with pytest.raises(DataError, match=r"m\.fa is not a well-formed FASTA file"):
        FastaFile(p)


# -- windows ---------------------------------------------------------------------------
@pytest.mark.parametrize("start,end,length,chrom_len,expected", [
    (100, 150, 100, 1000, Window(75, 175, 0, 0)),      # widened around the centre
    (10, 20, 100, 1000, Window(0, 65, 35, 0)),         # clipped at the chromosome start
    (980, 1000, 100, 1000, Window(940, 1000, 0, 40)),  # clipped at the end
    (0, 1000, 100, 1000, Window(450, 550, 0, 0)),      # longer: the centre
    (0, 50, 100, 50, Window(0, 50, 25, 25)),           # chromosome shorter than the window
    (100, 200, 100, 1000, Window(100, 200, 0, 0)),     # exactly the length
], ids=["widen", "clip-start", "clip-end", "centre-cut", "short-chrom", "exact"])
def test_window_widening_and_clipping(start, end, length, chrom_len, expected):
    w = window(start, end, length=length, chrom_len=chrom_len)
    assert w == expected
    assert w.pad_left + (w.end - w.start) + w.pad_right == length


def test_training_windows_cut_randomly_inside_and_shift_within_bounds():
    starts = set()
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        w = window(1000, 2000, length=100, chrom_len=5000, generator=g)
        assert 1000 <= w.start and w.end <= 2000 and w.end - w.start == 100
        starts.add(w.start)
        g = torch.Generator().manual_seed(seed)
        s = window(500, 550, length=100, chrom_len=5000, shift=10, generator=g)
        assert 465 <= s.start <= 485 and s.end - s.start == 100
    assert len(starts) > 100      # spread over the 901 possible offsets


def test_huge_shift_keeps_a_base_of_the_chromosome():
    for seed in range(50):
        w = window(0, 10, length=20, chrom_len=10, shift=1000,
                   generator=torch.Generator().manual_seed(seed))
        assert w.end > w.start and min(w.pad_left, w.pad_right) >= 0
        assert w.pad_left + w.end - w.start + w.pad_right == 20


# -- BED --------------------------------------------------------------------------------
def test_read_bed(genome):
    ivs = read_bed(genome[1], {"chr1": 3000, "chr2": 500})
    assert [(i.chrom, i.start, i.end, i.split, i.line) for i in ivs][:2] == [
        ("chr1", 0, 1200, "train", 2), ("chr1", 1200, 2000, "train", 3)]
    assert [i.split for i in ivs].count("valid") == 1


@pytest.mark.parametrize("line,message", [
    ("chrX\t0\t10\ttrain", r"line 2: chromosome 'chrX' is not in the FASTA"),
    ("chr1\t0\t3001\ttrain", r"line 2: interval chr1:0-3001 ends past the end of chr1 "
                             r"\(length 3000\)"),
    ("chr1\t10\t5\ttrain", r"line 2: expected 0 <= start < end, found start=10, end=5"),
    ("chr1\tten\t50\ttrain", r"line 2: start and end must be integers"),
    ("chr1\t0\t50", r"line 2: expected 4 columns \(chrom, start, end, split\), found 3"),
    ("chr1\t0\t50\tdev", r"line 2: split must be train, valid or test, found 'dev'"),
], ids=["missing-chrom", "past-end", "reversed", "not-int", "3-columns", "bad-split"])
def test_bed_errors_name_the_line(tmp_path, line, message):
    bed = tmp_path / "x.bed"
    bed.write_text(f"chr1\t0\t100\ttrain\n{line}\n")
    with pytest.raises(DataError, match=message):
        read_bed(bed, {"chr1": 3000})
