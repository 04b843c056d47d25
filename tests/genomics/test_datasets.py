"""Samples: next-base shift, masking rate, RC augmentation, N handling, disjoint splits,
sequence-length warmup, species / Genomic Benchmarks sources and their errors."""
import itertools

import pytest
import torch
from omegaconf import OmegaConf

from bytessm.task import ConfigError, DataError
from bytessm.tasks.genomics import GenomicsPretrainTask, GenomicsSpeciesTask
from bytessm.tasks.genomics.alphabet import IGNORE, MASK, PAD, decode, encode, reverse_complement
from bytessm.tasks.genomics.datasets import IntervalDataset, mask_tokens, split_regions
from bytessm.tasks.genomics.fasta import FastaFile
from bytessm.tasks.genomics.intervals import Interval
from bytessm.train.data import train_loader

from dna_fixtures import random_dna, write_fasta


def cfg(task: dict, seq_len=64, model=None):
    return OmegaConf.create({"task": task, "trainer": {"seq_len": seq_len, "seed": 0},
                             "model": model or {"name": "tiny", "bidirectional": False}})


def pretrain_cfg(fa, bed, seq_len=64, **task):
    base = {"name": "genomics", "data": {"fasta": str(fa), "bed": str(bed)}, "objective": "next",
            "uppercase": True, "n_mode": "keep", "rc_aug": False, "shift": 0}
    model = {"name": "bi", "bidirectional": task.get("objective") == "masked"}
    return cfg({**base, **task}, seq_len, model)


def species_cfg(root, seq_len=64, **task):
    base = {"name": "genomics_species", "data": {"format": "fasta", "species_dir": str(root)},
            "uppercase": True, "n_mode": "keep", "rc_aug": False, "eval_size": 30}
    return cfg({**base, **task}, seq_len)


def test_reverse_complement_of_reverse_complement_is_the_input():
    x = torch.tensor(encode("ACGTNNacgtnAAC", uppercase=False) + [MASK, PAD])
    rc = reverse_complement(x)
    assert decode(rc.tolist()[2:]) == "GTTnacgtNNACGT"
    assert rc.tolist()[:2] == [PAD, MASK]
    assert torch.equal(reverse_complement(rc), x)


def test_next_base_targets_are_the_input_shifted_by_one(genome):
    fa, bed, records = genome
    train, valid, _ = GenomicsPretrainTask(pretrain_cfg(fa, bed, 64)).build_datasets()
    s = valid[0]                       # valid interval chr1:2000-2500, centre cut of 65
    a = 2000 + (500 - 65) // 2
    assert decode(s["input"].tolist()) == records["chr1"][a:a + 64].upper()
    assert torch.equal(s["target"], torch.tensor(encode(records["chr1"][a + 1:a + 65])))


def test_padding_is_never_a_target(genome):
    fa, bed, _ = genome
    train = GenomicsPretrainTask(pretrain_cfg(fa, bed, 200)).build_datasets()[0]
    s = train[2]                       # chr2:10-60 widened to 201 -> clipped at chr2's start
    assert (s["input"] == PAD).sum() == 65
    # target j is base j + 1 of the window: targets 0..63 are padding, 64 is chr2's first base
    assert (s["target"][:64] == IGNORE).all() and (s["target"] == IGNORE).sum() == 64
    assert s["target"][64] == s["input"][65]


def test_masking_rate_and_80_10_10_rule():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor(encode(random_dna(200_000, 9)))
    maskable = torch.ones_like(x, dtype=torch.bool)
    maskable[:1000] = False
    inp, target = mask_tokens(x, maskable, g, rate=0.15)
    chosen = target != IGNORE
    assert abs(chosen.float().mean().item() - 0.15) < 0.005
    assert not chosen[:1000].any()
    assert torch.equal(target[chosen], x[chosen]) and torch.equal(inp[~chosen], x[~chosen])
    masked = (inp[chosen] == MASK).float().mean().item()
    same = (inp[chosen] == x[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.01
    assert abs(same - (0.1 + 0.1 / 4)) < 0.01      # kept, or a random base that happens to match


def test_masked_dataset_masks_15_percent_of_real_bases(genome):
    fa, bed, _ = genome
    train = GenomicsPretrainTask(pretrain_cfg(fa, bed, 512, objective="masked")).build_datasets()[0]
    n = sum(int((train[i]["target"] != IGNORE).sum()) for i in range(len(train)))
    real = sum(int((train[i]["input"] != PAD).sum()) for i in range(len(train)))
    assert abs(n / real - 0.15) < 0.03


def test_rc_augmentation_flips_strand_and_keeps_label(species_dir):
    ds_plain = GenomicsSpeciesTask(species_cfg(species_dir)).build_datasets()[0]
    ds_rc = GenomicsSpeciesTask(species_cfg(species_dir, rc_aug=True)).build_datasets()[0]
    flipped = 0
    for i in range(40):
        a, b = ds_plain[i], ds_rc[i]
        assert a["label"] == b["label"]
        if not torch.equal(a["input"], b["input"]):
            assert torch.equal(reverse_complement(b["input"]), a["input"])
            flipped += 1
    assert 10 < flipped < 30


def test_samples_are_deterministic_in_the_index(species_dir):
    a = GenomicsSpeciesTask(species_cfg(species_dir, rc_aug=True)).build_datasets()[0]
    b = GenomicsSpeciesTask(species_cfg(species_dir, rc_aug=True)).build_datasets()[0]
    assert all(torch.equal(a[i]["input"], b[i]["input"]) for i in (0, 7, 123456))


@pytest.mark.parametrize("mode", ["keep", "replace", "skip"])
def test_n_modes(genome, mode):
    fa, _, _ = genome
    ds = IntervalDataset(fasta=FastaFile(fa), intervals=[Interval("chr1", 180, 230, "valid", 1)],
                         length=64, objective="next", split="valid", seed=0, n_mode=mode)
    s = ds[0]                       # window chr1:173-238, N's at 200-204 = inputs 27..31
    n_in = (s["input"] == ord("N")).sum().item()
    if mode == "keep":
        assert n_in == 5 and (s["target"] == ord("N")).sum() == 5
    elif mode == "replace":
        assert n_in == 0 and set(s["input"][27:32].tolist()) <= set(b"ACGT")
    else:
        assert n_in == 5 and (s["target"] == IGNORE).sum() == 5 and (s["target"][26:31] == IGNORE).all()


def test_split_regions_are_disjoint_and_windows_stay_inside(species_dir):
    assert split_regions(1000, (0.8, 0.1, 0.1)) == {"train": (0, 800), "valid": (800, 900),
                                                    "test": (900, 1000)}
    sets = GenomicsSpeciesTask(species_cfg(species_dir, 50)).build_datasets()
    spans = {}
    for ds in sets:
        for i in range(300):
            s = ds[i]
            label = int(s["label"])
            regions = ds.regions[label]
            # find where this window came from: it must sit inside one region of its split
            text = bytes(s["input"].tolist())
            hits = [(r.record, r.fasta.fetch(r.record, r.start, r.end).tobytes().find(text) + r.start)
                    for r in regions if r.fasta.fetch(r.record, r.start, r.end).tobytes().find(text) >= 0]
            assert hits, f"{ds.split} window {i} is not inside its split's regions"
            rec, a = hits[0]
            spans.setdefault(ds.split, []).append((rec, a, a + 50))
    for x in spans["train"]:
        for y in spans["valid"] + spans["test"]:
            assert x[0] != y[0] or x[2] <= y[1] or y[2] <= x[1], (x, y)


def test_species_labels_balanced_and_named(species_dir):
    task = GenomicsSpeciesTask(species_cfg(species_dir))
    assert task.classes == ["alpha", "beta", "gamma"]
    valid = task.build_datasets()[1]
    assert [int(valid[i]["label"]) for i in range(6)] == [0, 1, 2, 0, 1, 2]


def test_set_seq_len_changes_the_window(species_dir):
    train = GenomicsSpeciesTask(species_cfg(species_dir, 256)).build_datasets()[0]
    train.set_seq_len(32)
    assert train[0]["input"].shape == (32,)
    train.set_seq_len(256)
    assert train[0]["input"].shape == (256,)


def test_species_errors(tmp_path, species_dir):
    with pytest.raises(DataError, match="species folder not found"):
        GenomicsSpeciesTask(species_cfg(tmp_path / "none"))
    (species_dir / "delta").mkdir()
    with pytest.raises(DataError, match=r"species folder .*delta has no FASTA file"):
        GenomicsSpeciesTask(species_cfg(species_dir))
    (species_dir / "delta").rmdir()
    # valid regions are 10% of 3000-6000 bases: at most 600; alpha's is exactly 600
    with pytest.raises(DataError, match=r"species 'alpha' has no sequence long enough for a "
                                        r"1000-base window in the valid split \(its longest "
                                        r"valid region is 600 bases\)"):
        GenomicsSpeciesTask(species_cfg(species_dir, 1000)).build_datasets()
    one = tmp_path / "one"
    write_fasta(one / "only.fa", {"r": "ACGT" * 100})
    with pytest.raises(DataError, match="holds 1 species .only.; classification needs at least 2"):
        GenomicsSpeciesTask(species_cfg(one))


def test_config_errors(genome, species_dir):
    fa, bed, _ = genome
    with pytest.raises(ConfigError, match="task.n_mode must be one of keep, replace, skip"):
        GenomicsPretrainTask(pretrain_cfg(fa, bed, n_mode="drop"))
    with pytest.raises(ConfigError, match="task.objective must be one of next, masked"):
        GenomicsPretrainTask(pretrain_cfg(fa, bed, objective="mlm"))
    c = pretrain_cfg(fa, bed, objective="masked")
    c.model.bidirectional = False
    with pytest.raises(ConfigError, match="masked needs a bidirectional model"):
        GenomicsPretrainTask(c)
    c = pretrain_cfg(fa, bed)
    c.model._target_ = "bytessm.tasks.genomics.rc.RCPSBackbone"
    with pytest.raises(ConfigError, match="objective=next needs a causal model"):
        GenomicsPretrainTask(c)
    with pytest.raises(ConfigError, match="split_fractions must be three positive fractions"):
        GenomicsSpeciesTask(species_cfg(species_dir, split_fractions=[0.9, 0.1]))


def benchmark(root, spec):
    for split, classes in spec.items():
        for name, seqs in classes.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i, s in enumerate(seqs):
                (d / f"{i}.txt").write_text(s)


def test_genomic_benchmarks_format(tmp_path):
    root = tmp_path / "demo"
    benchmark(root, {"train": {"neg": [random_dna(40, i) for i in range(10)],
                               "pos": [random_dna(70, 100 + i) for i in range(10)]},
                     "test": {"neg": [random_dna(40, 50)], "pos": [random_dna(70, 51)]}})
    c = species_cfg(tmp_path, 64, data={"format": "genomic_benchmarks",
                                        "benchmark_dir": str(root), "valid_fraction": 0.2})
    task = GenomicsSpeciesTask(c)
    train, valid, test = task.build_datasets()
    assert task.classes == ["neg", "pos"] and (len(train), len(valid), len(test)) == (16, 4, 2)
    s = test[0]                       # 40 bases, padded to 64
    assert s["label"] == 0 and (s["input"][40:] == PAD).all() and s["keep"].sum() == 40
    assert decode(s["input"][:40].tolist()) == random_dna(40, 50)
    s = test[1]                       # 70 bases, centre cut to 64
    assert s["label"] == 1 and decode(s["input"].tolist()) == random_dna(70, 51)[3:67]


def test_genomic_benchmarks_errors(tmp_path):
    root = tmp_path / "demo"
    benchmark(root, {"train": {"neg": ["ACGT"], "pos": ["ACZT"]}, "test": {"neg": ["A"], "pos": ["C"]}})
    c = species_cfg(tmp_path, 8, data={"format": "genomic_benchmarks", "benchmark_dir": str(root)})
    with pytest.raises(DataError, match=r"pos/0\.txt, position 2 \(0-based\): 'Z' is not an IUPAC"):
        GenomicsSpeciesTask(c).build_datasets()
    (root / "test" / "pos" / "0.txt").unlink()
    (root / "train" / "pos" / "0.txt").write_text("ACGT")
    with pytest.raises(DataError, match=r"class folder .*test/pos has no \.txt sequence file"):
        GenomicsSpeciesTask(c).build_datasets()


def test_generated_samples_are_written_as_fasta(genome, tmp_path):
    fa, bed, _ = genome
    task = GenomicsPretrainTask(pretrain_cfg(fa, bed))
    assert task.encode_prompt("ACgtN") == list(b"ACGTN")
    with pytest.raises(DataError, match="prompt: 'X' at position 2 is not an IUPAC"):
        task.encode_prompt("ACXT")
    samples = [list(b"ACGT") * 20, list(b"AC") + [MASK, PAD, 200, ord("t")]]
    paths = task.write_samples(samples, str(tmp_path / "out"))
    assert paths == [str(tmp_path / "out" / "samples.fa")]
    lines = (tmp_path / "out" / "samples.fa").read_text().splitlines()
    assert lines == [">sample_0 length=80", "ACGT" * 15, "ACGT" * 5,
                     ">sample_1 length=6", "ACNNNt"]


def test_worker_processes_read_the_same_windows(species_dir):
    """Two forked worker processes (trainer.num_workers, auto on a GPU) give the batches of
    the main process, whose FASTA handles are open when they fork."""
    ds = GenomicsSpeciesTask(species_cfg(species_dir, rc_aug=True)).build_datasets()[0]
    ds[0]   # the handles are open in this process before the workers fork

    def batches(workers):
        loader = train_loader(ds, seed=0, global_batch=8, grad_accum=1, rank=0, world_size=1,
                              start_step=0, num_workers=workers)
        return list(itertools.islice(loader, 6))

    for a, b in zip(batches(0), batches(2), strict=True):
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["label"], b["label"])
