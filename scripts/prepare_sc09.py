"""Synthesise a spoken-digit dataset in exactly the Speech Commands (SC09) layout.

    python scripts/prepare_sc09.py --out data/sc09          # ~3,100 clips, a few minutes
    bytessm train task=audio_sc09 task.data.root=data/sc09

Speakers are Debian's speech synthesisers (installed with apt-get when missing and when
run as root): espeak-ng (8 English accents x 16 voice variants), flite (kal16, awb, rms,
slt at three pitches) and festival (kal and ked diphone voices at three pitches, the slt
HTS voice). Each speaker says each digit at a few speeds / pitches. Every utterance is
resampled to 16 kHz, its silence trimmed, scaled to a random peak, placed at a random
offset in a 1-s clip over faint noise, and written as 16-bit mono WAV:

    OUT/zero/ .. OUT/nine/        <speaker-id>_nohash_<k>.wav
    OUT/validation_list.txt       "word/file.wav" lines, ~10% of the speakers
    OUT/testing_list.txt          ~10% of the speakers

Splits are by speaker with the Speech Commands rule (sha1 of the speaker id, 10% / 10%),
so no voice is in two splits. Everything is deterministic (fixed parameter lists, RNGs
seeded from clip names). The dataset is built in a temporary folder beside OUT and
renamed into place at the end, so an interrupted run leaves nothing half-written; an
existing OUT is only replaced with --force.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from bytessm.tasks.audio_sc09.codec import CLIP_LEN, to_mono_16k, write_wav
from bytessm.tasks.audio_sc09.data import DIGITS, SPLIT_LISTS

APT_PACKAGES = ["espeak-ng", "flite", "festival", "festlex-cmu", "festvox-kallpc16k",
                "festvox-kdlpc16k", "festvox-us-slt-hts"]
ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                 "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt3", "croak"]
ESPEAK_SPEEDS = [130, 150, 170, 195]      # words per minute
ESPEAK_PITCHES = [25, 40, 55, 70]         # 0..99
FLITE_VOICES = ["kal16", "awb", "rms", "slt"]
FLITE_F0 = [None, 105, 165]               # int_f0_target_mean (Hz); None: the voice's own
FLITE_STRETCH = [0.85, 1.0, 1.2]
FESTIVAL_VOICES = {"kal_diphone": [None, 90, 140], "ked_diphone": [None, 90, 140],
                   "cmu_us_slt_arctic_hts": [None]}
FESTIVAL_STRETCH = [0.85, 1.0, 1.2]
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1        # Speech Commands' split hashing constant


@dataclass(frozen=True)
class Job:
    speaker: str           # e.g. "espeak:en-us+f3"
    word: str
    k: int                 # index of this speaker's take of this word
    engine: str
    params: tuple          # engine-specific settings

    @property
    def speaker_id(self) -> str:
        return hashlib.sha1(self.speaker.encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        return f"{self.word}/{self.speaker_id}_nohash_{self.k}.wav"


def which_set(name: str, validation_pct: float = 10.0, testing_pct: float = 10.0) -> str:
    """Speech Commands' `which_set` (the dataset's README): the split of a file from the
    sha1 of its speaker part, so a speaker's clips stay in one split."""
    hash_name = re.sub(r"_nohash_.*$", "", os.path.basename(name))
    pct = (int(hashlib.sha1(hash_name.encode()).hexdigest(), 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) \
        * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if pct < validation_pct:
        return "valid"
    if pct < validation_pct + testing_pct:
        return "test"
    return "train"


def jobs() -> list[Job]:
    out = []
    for voice in ESPEAK_VOICES:
        for variant in ESPEAK_VARIANTS:
            v = f"{voice}+{variant}" if variant else voice
            for word in DIGITS:
                rng = np.random.RandomState(zlib.crc32(f"espeak:{v}:{word}".encode()))
                for k in range(2):
                    out.append(Job(f"espeak:{v}", word, k, "espeak",
                                   (v, int(rng.choice(ESPEAK_SPEEDS)), int(rng.choice(ESPEAK_PITCHES)))))
    for voice in FLITE_VOICES:
        for f0 in FLITE_F0:
            for word in DIGITS:
                for k, stretch in enumerate(FLITE_STRETCH):
                    out.append(Job(f"flite:{voice}:f0={f0}", word, k, "flite", (voice, f0, stretch)))
    for voice, f0s in FESTIVAL_VOICES.items():
        for f0 in f0s:
            for word in DIGITS:
                for k, stretch in enumerate(FESTIVAL_STRETCH):
                    out.append(Job(f"festival:{voice}:f0={f0}", word, k, "festival", (voice, f0, stretch)))
    return out


def ensure_tools(install: bool) -> None:
    missing = [t for t in ("espeak-ng", "flite", "festival", "text2wave") if shutil.which(t) is None]
    if not missing:
        return
    if not install or os.geteuid() != 0:
        sys.exit(f"error: {', '.join(missing)} not found; install them with\n"
                 f"  apt-get install -y {' '.join(APT_PACKAGES)}\n(or run this script as root)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
                   check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def synth_command(job: Job, wav: str) -> list[str]:
    if job.engine == "espeak":
        voice, speed, pitch = job.params
        return ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", wav, job.word]
    voice, f0, stretch = job.params
    cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch}"]
    if f0 is not None:
        cmd += ["--setf", f"int_f0_target_mean={f0}"]
    return cmd + ["-t", job.word, "-o", wav]


def festival_script(batch: list[tuple[Job, str]]) -> str:
    """One festival process per (voice, pitch): a Scheme script saving every take."""
    voice, f0, _ = batch[0][0].params
    lines = [f"(voice_{voice})"]
    if f0 is not None:  # the diphone voices' linear-regression intonation model
        lines.append(f"(set! int_lr_params '((target_f0_mean {f0}) (target_f0_std {f0 // 6}) "
                     f"(model_f0_mean 170) (model_f0_std 34)))")
    for job, wav in batch:
        lines.append(f"(Parameter.set 'Duration_Stretch {job.params[2]})")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{job.word}")) "{wav}" \'riff)')
    return "\n".join(lines) + "\n"


def to_clip(raw: str, name: str) -> np.ndarray | None:
    """A synthesised utterance -> a 1-s 16 kHz clip (None when the word is longer than 1 s)."""
    audio, rate = sf.read(raw, dtype="float32", always_2d=True)
    x = to_mono_16k(audio, rate, where=raw).numpy()
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    if loud.size == 0:
        return None
    x = x[max(loud[0] - 400, 0): loud[-1] + 400]               # trim silence, 25 ms margins
    if x.shape[0] > CLIP_LEN:
        return None
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    clip = rng.normal(0.0, rng.uniform(5e-4, 4e-3), CLIP_LEN).astype(np.float32)  # faint noise
    start = rng.randint(0, CLIP_LEN - x.shape[0] + 1)
    clip[start:start + x.shape[0]] += x * (rng.uniform(0.25, 0.9) / np.abs(x).max())
    return clip


def build(out: str, workers: int) -> tuple[str, dict[str, int]]:
    """Synthesise everything into a staging folder beside `out`; returns (staging, counts).
    The staging folder is removed if anything fails."""
    staging = tempfile.mkdtemp(prefix=".tmp-sc09-", dir=os.path.dirname(os.path.abspath(out)))
    try:
        return staging, _build(staging, workers)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _build(staging: str, workers: int) -> dict[str, int]:
    all_jobs = jobs()
    raw_dir = os.path.join(staging, ".raw")
    os.makedirs(raw_dir)
    raw = {j: os.path.join(raw_dir, f"{i:05d}.wav") for i, j in enumerate(all_jobs)}

    def run(cmd, **kw):
        r = subprocess.run(cmd, capture_output=True, text=True, **kw)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")

    festival_batches: dict[tuple, list] = {}
    for j in all_jobs:
        if j.engine == "festival":
            festival_batches.setdefault(j.params[:2], []).append((j, raw[j]))
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run, synth_command(j, raw[j])) for j in all_jobs
                   if j.engine != "festival"]
        for i, batch in enumerate(festival_batches.values()):
            script = os.path.join(raw_dir, f"festival_{i}.scm")
            with open(script, "w") as f:
                f.write(festival_script(batch))
            futures.append(pool.submit(run, ["festival", "--batch", script]))
        for fut in futures:
            fut.result()

    lists: dict[str, list[str]] = {"valid": [], "test": []}
    counts = {"train": 0, "valid": 0, "test": 0, "too_long": 0}
    for j in all_jobs:
        clip = to_clip(raw[j], j.name)
        if clip is None:
            counts["too_long"] += 1
            continue
        write_wav(os.path.join(staging, j.name), clip)
        split = which_set(j.name)
        counts[split] += 1
        if split in lists:
            lists[split].append(j.name)
    shutil.rmtree(raw_dir)
    for split, filename in SPLIT_LISTS.items():
        with open(os.path.join(staging, filename), "w") as f:
            f.write("".join(f"{n}\n" for n in sorted(lists[split])))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="the dataset folder to create")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.force:
        sys.exit(f"error: {out} exists; pass --force to replace it")
    ensure_tools(install=not args.no_install)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    staging, counts = build(out, args.workers)
    if os.path.exists(out):  # --force: swap the new folder in, then drop the old one
        old = out + ".old"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old)
    else:
        os.replace(staging, out)
    total = counts["train"] + counts["valid"] + counts["test"]
    print(f"wrote {total} clips to {out}: train {counts['train']}, valid {counts['valid']}, "
          f"test {counts['test']} ({counts['too_long']} takes longer than 1 s left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
