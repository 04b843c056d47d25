"""Sample-quality scores on distributions whose values are known by hand."""
import math

import numpy as np
import pytest
import torch

from bytessm.tasks.audio_sc09.scores import (am_score, fid, inception_score,
                                             modified_inception_score)


def onehot(labels, k=10):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), k).double()


def test_uniform_classifier_scores_one():
    p = torch.full((64, 10), 0.1, dtype=torch.float64)
    assert inception_score(p) == pytest.approx(1.0, abs=1e-12)
    assert modified_inception_score(p) == pytest.approx(1.0, abs=1e-12)


def test_confident_and_diverse():
    # 10 classes, each predicted with certainty by 20 samples: each half of any shuffle has
    # a mean distribution m; IS = exp(mean over half 1 of -log m[c]), computed by hand here.
    labels = np.repeat(np.arange(10), 20)
    p = onehot(labels)
    perm = np.random.RandomState(0).permutation(200)
    h1, h2 = labels[perm][:100], labels[perm][100:]
    m = np.bincount(h2, minlength=10) / 100
    assert inception_score(p) == pytest.approx(math.exp(np.mean(-np.log(m[h1]))), rel=1e-12)
    # every sample predicting the same class: no diversity, IS = 1
    assert inception_score(onehot([3] * 50)) == pytest.approx(1.0)


def test_modified_inception_score_by_hand():
    pa, pb = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    probs = torch.tensor(np.stack([pa, pb, pa, pb]))
    kl_ab = np.sum(pa * np.log(pa / pb))
    kl_ba = np.sum(pb * np.log(pb / pa))
    # pairs drawn with replacement: half the pairs are equal (KL 0), a quarter each way
    assert modified_inception_score(probs) == pytest.approx(math.exp((kl_ab + kl_ba) / 4), rel=1e-12)


def test_am_score():
    ref = onehot(np.repeat(np.arange(10), 3))
    assert am_score(ref, ref) == pytest.approx(0.0, abs=1e-12)
    uniform = torch.full((7, 10), 0.1, dtype=torch.float64)
    assert am_score(ref, uniform) == pytest.approx(math.log(10), rel=1e-12)   # entropy term
    skew = onehot([0] * 6 + [1] * 4)                       # mean (0.6, 0.4, 0, ...), entropy 0
    assert am_score(onehot([0, 1]), skew) == pytest.approx(
        0.5 * math.log(0.5 / 0.6) + 0.5 * math.log(0.5 / 0.4), rel=1e-12)


def test_fid():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = torch.arange(8, dtype=torch.float64)
    assert fid(x, x + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-9)
    # cov(2x) = 4 S: tr(S + 4S - 2 (4 S^2)^(1/2)) = tr(S); means differ by mu
    mu, cov = x.mean(0), torch.cov(x.T)
    assert fid(x, 2 * x) == pytest.approx(float(mu.pow(2).sum() + torch.trace(cov)), rel=1e-8)


def test_bad_shapes():
    with pytest.raises(ValueError, match="same D"):
        fid(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="probabilities"):
        inception_score(torch.zeros(4))
