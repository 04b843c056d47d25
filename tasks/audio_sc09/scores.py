"""Sample-quality scores of generated SC09 clips, as in the SaShiMi protocol.

Definitions follow state-spaces/s4 `models/sashimi/sc09_classifier/test_speech_commands.py`
(which computes them with scipy); here in float64 torch. `probs` are a digit classifier's
softmax outputs (N, classes); `features` its penultimate activations (N, D).

- Inception Score (Salimans et al. 2016), SaShiMi's split-half form: shuffle with seed 0,
  IS = exp(mean over the first half of KL(p(y|x) || mean p(y) of the second half)).
  Higher is better; a classifier that is always uniform scores exactly 1.
- Modified IS (Gurumurthy et al. 2017): exp(E_{x, x'} KL(p(y|x) || p(y|x'))), x, x' drawn
  independently with replacement. SaShiMi estimates the expectation from 10,000 random
  pairs; we compute it exactly over all N^2 pairs.
- AM score (Zhou et al. 2018): KL(mean p_ref(y) || mean p_gen(y)) + mean entropy of
  p_gen(y|x). Lower is better.
- FID (Heusel et al. 2017): |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)) over the
  features; the trace of the matrix square root is computed from the eigenvalues of the
  symmetric S_r^(1/2) S_g S_r^(1/2), which equal those of S_r S_g.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _rows(p: Tensor) -> Tensor:
    """Probabilities (N, K) as float64 rows summing to one (scipy.stats.entropy normalises)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"expected probabilities of shape (N, classes), N >= 1, got {tuple(p.shape)}")
    if (p < 0).any():
        raise ValueError("probabilities must be non-negative")
    return p / p.sum(dim=1, keepdim=True)


def kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) along the last axis, nats; 0 log 0 = 0, p > 0 where q = 0 gives inf."""
    p, q = torch.broadcast_tensors(p, q)
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return terms.sum(-1)


def entropy(p: Tensor) -> Tensor:
    return -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(-1)


def inception_score(probs: Tensor) -> float:
    p = _rows(probs)
    if p.shape[0] < 2:
        raise ValueError("the split-half Inception Score needs at least 2 samples")
    perm = torch.from_numpy(np.random.RandomState(0).permutation(p.shape[0]))  # SaShiMi's seed-0 shuffle
    p = p[perm]
    half1, half2 = p[: p.shape[0] // 2], p[p.shape[0] // 2:]
    return float(torch.exp(kl(half1, half2.mean(0, keepdim=True)).mean()))


def modified_inception_score(probs: Tensor) -> float:
    p = _rows(probs)
    total = sum(float(kl(rows[:, None, :], p[None, :, :]).sum())        # (rows, N) per chunk
                for rows in p.split(256))
    return float(np.exp(total / p.shape[0] ** 2))


def am_score(probs_ref: Tensor, probs_gen: Tensor) -> float:
    ref, gen = _rows(probs_ref), _rows(probs_gen)
    return float(kl(ref.mean(0), gen.mean(0)) + entropy(gen).mean())


def _sqrt_psd(m: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def fid(features_ref: Tensor, features_gen: Tensor) -> float:
    r = torch.as_tensor(features_ref, dtype=torch.float64)
    g = torch.as_tensor(features_gen, dtype=torch.float64)
    if r.ndim != 2 or g.ndim != 2 or r.shape[1] != g.shape[1] or min(len(r), len(g)) < 2:
        raise ValueError(f"FID needs two feature sets (N >= 2, D) of the same D, got "
                         f"{tuple(r.shape)} and {tuple(g.shape)}")
    mu_r, mu_g = r.mean(0), g.mean(0)
    cov_r, cov_g = torch.cov(r.T), torch.cov(g.T)                        # (D, D) each
    root_r = _sqrt_psd(cov_r)
    cross = root_r @ cov_g @ root_r
    tr_sqrt = torch.linalg.eigvalsh((cross + cross.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_r - mu_g).pow(2).sum() + torch.trace(cov_r) + torch.trace(cov_g) - 2 * tr_sqrt
    return float(value.clamp(min=0))


def all_scores(*, probs_ref: Tensor, feats_ref: Tensor, probs_gen: Tensor,
               feats_gen: Tensor) -> dict[str, float]:
    """The four SaShiMi scores of generated clips against a reference set."""
    return {"fid": fid(feats_ref, feats_gen), "is": inception_score(probs_gen),
            "mis": modified_inception_score(probs_gen), "am": am_score(probs_ref, probs_gen)}
