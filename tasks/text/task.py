"""The text task: next-symbol language modelling on raw bytes or on BPE tokens, both
reported in bits per byte over the same held-out bytes.

    bytessm train task=text tokenizer=bytes     # vocab 257: 256 bytes + BOS
    bytessm train task=text tokenizer=bpe       # byte-level BPE trained on the train split

Config: `task.data.path` (file | folder | glob), `task.split_fractions`, `task.eval_bytes`
(held-out span length in bytes, the same for both pipelines), `task.eval_max_spans`, and
the top-level `tokenizer` group (configs/tokenizer/{bytes,bpe}.yaml). trainer.seq_len is
in model symbols: bytes, or tokens for BPE.

Metrics (summed over positions, then divided):
    loss            nats per symbol (the training objective)
    bits_per_byte   NLL in bits / bytes the predicted symbols cover
    token_perplexity, bytes_per_token   (BPE)
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from omegaconf import DictConfig
from torch import Tensor, nn

from bytessm.io import atomic_write
from bytessm.nn import LMHead
from bytessm.task import ConfigError, DataError, Metrics, Task, next_symbol_nll

from .bpe_cache import load_or_build
from .codecs import BPECodec, ByteCodec
from .corpus import Corpus
from .datasets import EvalSpans, MappedArray, TrainWindows
from tokenizers import Tokenizer

TOKENIZERS = ("bytes", "bpe")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tokenizer_settings(cfg: DictConfig) -> DictConfig | dict:
    """The `tokenizer` group of the config (bytes when the config has none)."""
    tok = cfg.get("tokenizer")
    return tok if tok is not None else {"name": "bytes"}


class TextTask(Task):
    """Causal LM on a text corpus through `cfg.tokenizer` (module docstring)."""

    causal = True

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        tok = tokenizer_settings(cfg)
        self.kind = str(tok.get("name", "bytes"))
        if self.kind not in TOKENIZERS:
            raise ConfigError(f"tokenizer.name must be one of {', '.join(TOKENIZERS)}, got "
                              f"{self.kind!r}")
        t = cfg.task
        fr = tuple(float(x) for x in t.get("split_fractions", (0.9, 0.05, 0.05)))
        if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1) > 1e-6:
            raise ConfigError(f"task.split_fractions must be three positive fractions (train, "
                              f"valid, test) summing to 1, got {list(fr)}")
        self.fractions = fr
        self.eval_bytes = int(t.get("eval_bytes", 1024))
        if self.eval_bytes <= 0:
            raise ConfigError(f"task.eval_bytes must be positive, got {self.eval_bytes}")
        max_spans = t.get("eval_max_spans", None)
        self.eval_max_spans = None if max_spans is None else int(max_spans)
        if self.kind == "bpe":
            v = int(tok.get("vocab_size", 4096))
            if v < 258:
                raise ConfigError(f"tokenizer.vocab_size must be at least 258 (256 byte tokens, "
                                  f"<bos> and one merge), got {v}")
            # the model's vocabulary is the configured size (known without reading the data);
            # a small corpus may train fewer tokens, whose rows then go unused
            self.vocab_size = v
        else:
            self.vocab_size = ByteCodec.vocab_size
        self._codec = ByteCodec() if self.kind == "bytes" else None
        self._corpus: Corpus | None = None
        self._bundle = None

    # -- data ---------------------------------------------------------------------------------
    def corpus(self) -> Corpus:
        if self._corpus is None:
            d = self.cfg.task.data
            self._corpus = Corpus.open(str(d.path), fractions=self.fractions,
                                       cache_dir=d.get("cache_dir"), log=_log)
        return self._corpus

    @property
    def codec(self) -> ByteCodec | BPECodec:
        if self._codec is None:
            saved = self._run_tokenizer_path()
            if self._bundle is None and saved is not None and saved.exists():
                self._codec = BPECodec(Tokenizer.from_file(str(saved)))  # generation, eval
            else:
                self._codec = self._bpe().codec
        return self._codec

    def _bpe(self):
        if self._bundle is None:
            tok = tokenizer_settings(self.cfg)
            corpus = self.corpus()
            _require_split(corpus, "train")
            self._bundle = load_or_build(
                corpus, vocab_size=int(tok.get("vocab_size", 4096)),
                min_frequency=int(tok.get("min_frequency", 2)),
                max_train_bytes=int(tok.get("max_train_bytes", 50_000_000)), log=_log)
            if self._bundle.codec.vocab_size > self.vocab_size:
                raise DataError(f"the cached tokenizer in {self._bundle.folder} has "
                                f"{self._bundle.codec.vocab_size} tokens, more than "
                                f"tokenizer.vocab_size={self.vocab_size}")
            self._codec = self._bundle.codec
        return self._bundle

    def _run_tokenizer_path(self) -> Path | None:
        out = self.cfg.get("trainer", {}).get("out_dir")
        return None if out is None or self.kind != "bpe" else Path(str(out)) / "tokenizer.json"

    def build_datasets(self):
        corpus, seed, seq_len = self.corpus(), int(self.cfg.trainer.seed), int(self.cfg.trainer.seq_len)
        _require_split(corpus, "train")
        if self.kind == "bytes":   # windows read the corpus cache directly
            ids = corpus.doc_ids("train")
            train = TrainWindows(symbols=corpus.data, starts=corpus.offsets[ids],
                                 lengths=[corpus.doc_len(i) for i in ids], seq_len=seq_len,
                                 bos=ByteCodec.bos, nbytes_table=None, seed=seed, what="bytes")
        else:
            b = self._bpe()
            docs = b.train_docs
            train = TrainWindows(symbols=MappedArray(b.train_tokens, b.dtype), starts=docs[:-1],
                                 lengths=docs[1:] - docs[:-1], seq_len=seq_len, bos=b.codec.bos,
                                 nbytes_table=b.codec.nbytes_table, seed=seed, what="tokens")
            self._save_tokenizer(b.folder / "tokenizer.json")
        held_out = [EvalSpans(corpus=corpus, split=s, span_bytes=self.eval_bytes,
                              max_spans=self.eval_max_spans, codec=self.codec, log=_log)
                    for s in ("valid", "test")]
        return (train, *held_out)

    def _save_tokenizer(self, src: Path) -> None:
        """A copy of the tokenizer in the run folder: eval/generate work without the corpus."""
        dst = self._run_tokenizer_path()
        if dst is None:
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dst, src.read_bytes())

    # -- model and metrics -----------------------------------------------------------------------
    def build_head(self, d_model: int) -> nn.Module:
        return LMHead(d_model, self.vocab_size)

    def loss_and_metrics(self, head_out: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        nll, n, _ = next_symbol_nll(head_out, batch["target"])          # (B, L, V), (B, L)
        nbytes = batch["nbytes"].sum()
        metrics = {"loss": (nll.detach(), n), "bits_per_byte": (nll.detach() / math.log(2), nbytes)}
        if self.kind == "bpe":
            metrics["bytes_per_token"] = (nbytes, n)
        return nll / n.clamp(min=1), metrics

    def summarize(self, totals: dict[str, tuple[float, float]]) -> dict[str, float]:
        out = super().summarize(totals)
        if self.kind == "bpe" and "loss" in out:
            out["token_perplexity"] = math.exp(min(out["loss"], 700.0))
        if "bits_per_byte" in totals:
            out["bytes"] = totals["bits_per_byte"][1]
        return out

    # -- generation ----------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        ids, _ = self.codec.encode(prompt.encode("utf-8"))
        return [self.codec.bos, *ids.tolist()]

    def write_samples(self, samples: list[list[int]], out: str | None) -> list[str]:
        """Printed (invalid UTF-8 shown as U+FFFD), or written as raw bytes to out/sample_K.txt."""
        texts = [self.codec.decode(s) for s in samples]
        if out is None:
            for k, t in enumerate(texts):
                print(f"--- sample {k} ({len(t)} bytes)\n{t.decode('utf-8', errors='replace')}")
            return []
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, t in enumerate(texts):
            path = folder / f"sample_{k}.txt"
            atomic_write(path, t)
            paths.append(str(path))
        return paths



def _require_split(corpus: Corpus, split: str) -> None:
    if corpus.split_bytes(split) == 0:
        raise DataError(f"task.data.path={corpus.spec!r}: the {split} split has no text "
                        f"({len(corpus)} documents, split by a hash of each file's name with "
                        f"task.split_fractions={list(corpus.fractions)}); add documents or "
                        f"raise the {split} fraction")
