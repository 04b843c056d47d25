"""The Speech Commands layout: split lists honoured exactly, samples, and bad input."""
import os

import pytest
import soundfile as sf
import torch

from bytessm.task import DataError
from bytessm.tasks.audio_sc09.codec import mulaw_encode, read_clip, shift_right
from bytessm.tasks.audio_sc09.data import SC09Dataset, scan
from sc09_fixtures import make_sc09, tone


@pytest.fixture
def sc09(tmp_path):
    root = tmp_path / "sc"
    return root, make_sc09(root, per_digit=4, valid=1, test=2)


def test_split_lists_honoured_exactly(sc09):
    root, expected = sc09
    splits = scan(str(root))
    for split in ("train", "valid", "test"):
        assert sorted(c.name for c in splits[split]) == expected[split]
    assert len(splits["train"]) == 10 and len(splits["valid"]) == 10 and len(splits["test"]) == 20
    # labels follow the folder; "dog/" (not a digit) and its list entries are ignored
    assert all(c.label == ["zero", "one", "two", "three", "four", "five", "six", "seven",
                           "eight", "nine"].index(c.name.split("/")[0]) for c in splits["test"])


def test_autoregressive_sample_is_the_shifted_clip(sc09):
    root, _ = sc09
    clips = scan(str(root))["valid"]
    item = SC09Dataset(clips, objective="autoregressive")[3]
    symbols = mulaw_encode(read_clip(clips[3].path))
    assert torch.equal(item["target"], symbols)
    assert item["input"][0] == 128 and torch.equal(item["input"][1:], symbols[:-1])
    assert item["label"] == 3


def test_training_windows_deterministic_in_index(sc09):
    root, _ = sc09
    clips = scan(str(root))["train"]
    ds = SC09Dataset(clips, objective="autoregressive", seq_len=1000, seed=7, random_window=True)
    a, b = ds[5], ds[5]
    assert torch.equal(a["input"], b["input"]) and a["input"].shape == (1000,)
    full = mulaw_encode(read_clip(clips[5].path))
    starts = [s for s in range(16000 - 999) if torch.equal(full[s:s + 1000], a["target"])]
    assert starts and torch.equal(shift_right(full)[starts[0]:starts[0] + 1000], a["input"])
    ds.set_seq_len(200)                                   # sequence-length warmup hook
    assert ds[0]["input"].shape == (200,)
    ev = SC09Dataset(clips, objective="autoregressive", seq_len=1000)
    assert torch.equal(ev[5]["target"], full[:1000])       # evaluation windows start at 0


def test_classify_sample(sc09):
    root, _ = sc09
    clips = scan(str(root))["test"]
    item = SC09Dataset(clips, objective="classify")[0]
    assert item["input"].shape == (16000,) and item["label"] == clips[0].label


def test_missing_split_list(sc09):
    root, _ = sc09
    os.remove(root / "testing_list.txt")
    with pytest.raises(DataError, match=r"testing_list\.txt: split list not found"):
        scan(str(root))


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"task.data.root=.*nowhere.*no such folder"):
        scan(str(tmp_path / "nowhere"))


def test_empty_digit_folder(sc09):
    root, _ = sc09
    for f in os.listdir(root / "seven"):
        os.remove(root / "seven" / f)
    with pytest.raises(DataError, match=r"seven: the digit folder holds no \.wav files"):
        scan(str(root))


def test_list_naming_a_missing_file(sc09):
    root, _ = sc09
    with open(root / "validation_list.txt", "a") as f:
        f.write("four/ghost_nohash_0.wav\n")
    with pytest.raises(DataError, match=r"validation_list\.txt names four/ghost_nohash_0\.wav, "
                                        r"which does not exist"):
        scan(str(root))


def _break_files(root):
    (root / "two" / "spk03_nohash_0.wav").write_bytes(b"RIFF-not-really-a-wav")
    sf.write(str(root / "five" / "spk03_nohash_0.wav"), tone(300)[:0], 16000, subtype="PCM_16")
    sf.write(str(root / "six" / "spk03_nohash_0.wav"), tone(300, rate=44101), 44101, subtype="PCM_16")


def test_bad_files_named(sc09):
    root, _ = sc09
    _break_files(root)
    with pytest.raises(DataError, match=r"two/spk03_nohash_0\.wav: not a readable audio file"):
        scan(str(root))
    os.remove(root / "two" / "spk03_nohash_0.wav")
    with pytest.raises(DataError, match=r"five/spk03_nohash_0\.wav: the WAV file holds no audio "
                                        r"frames \(zero length\)"):
        scan(str(root))
    os.remove(root / "five" / "spk03_nohash_0.wav")
    with pytest.raises(DataError, match=r"six/spk03_nohash_0\.wav: sample rate 44101 Hz cannot "
                                        r"be resampled to 16000 Hz"):
        scan(str(root))


def test_skip_bad_files_warns_with_count_and_names(sc09):
    root, expected = sc09
    _break_files(root)
    with pytest.warns(UserWarning, match=r"skipped 3 bad file\(s\)") as rec:
        splits = scan(str(root), skip_bad_files=True)
    msg = str(rec[0].message)
    for name in ("two/spk03", "five/spk03", "six/spk03"):
        assert name in msg
    assert len(splits["train"]) == len(expected["train"]) - 3
    assert sorted(c.name for c in splits["test"]) == expected["test"]
