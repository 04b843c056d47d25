"""Optimizer groups, the lr schedule, tied embeddings, the resumable sampler."""
import math

import pytest

from bytessm.backbone import Backbone, SequenceModel
from bytessm.nn import LMHead
from bytessm.train.data import ResumableBatchSampler
from bytessm.train.optim import param_groups, warmup_cosine


def test_no_weight_decay_on_ssm_params_norms_and_biases():
    model = SequenceModel(Backbone(d_model=32, n_layer=2, vocab_size=256), LMHead(32, 256))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert any(n.endswith("A_log") for n in nd) and any(n.endswith(".D") for n in nd)
    assert any(n.endswith("dt_proj.bias") for n in nd) and any("norm" in n for n in nd)
    assert all(p.dim() >= 2 for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_tied_head_shares_the_embedding_and_is_counted_once():
    model = SequenceModel(Backbone(d_model=32, n_layer=1, vocab_size=256), LMHead(32, 256),
                          tie_embeddings=True)
    assert model.head.weight is model.backbone.encoder.weight
    groups = param_groups(model, 0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="tie_embeddings"):
        SequenceModel(Backbone(d_model=32, n_layer=1, vocab_size=256), LMHead(32, 300),
                      tie_embeddings=True)


def test_warmup_then_cosine():
    kw = dict(warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(9, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)


def test_sampler_resumes_mid_stream_and_splits_ranks():
    def take(n, **kw):
        it = iter(ResumableBatchSampler(10, seed=3, global_batch=4, micro_batch=2, **kw))
        return [next(it) for _ in range(n)]

    straight = take(10, rank=0, world_size=1)
    assert take(4, rank=0, world_size=1, start_step=2) == straight[4:8]
    # two ranks of micro-batch 2 read exactly what one rank reads in its two micro-batches
    r0, r1 = take(2, rank=0, world_size=2), take(2, rank=1, world_size=2)
    assert [r0[0], r1[0], r0[1], r1[1]] == straight[:4]
    flat = sum(straight, [])
    # a finite set is read as one permutation per epoch, each epoch a different one
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]
