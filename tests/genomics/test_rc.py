"""Reverse-complement equivariance of the Caduceus-PS model and its heads; MCC."""
import pytest
import torch

from bytessm.tasks.genomics import (VOCAB_SIZE, RCLMHead, RCPositionClassifier, RCPSBackbone,
                                    matthews_corrcoef, rc_hidden, reverse_complement)
from bytessm.tasks.genomics.alphabet import MASK, PAD, complement_table

from dna_fixtures import random_dna


def dna_batch(B=2, L=21):
    x = torch.tensor([list(random_dna(L, s).encode()) for s in range(B)])
    x[0, 3], x[1, 10], x[1, 11] = ord("N"), MASK, ord("a")
    return x


def make(bidirectional=True):
    torch.manual_seed(0)
    return RCPSBackbone(d_model=32, n_layer=2, vocab_size=VOCAB_SIZE,
                        bidirectional=bidirectional, scan_backend="reference").eval()


@pytest.fixture(scope="module")
def backbone():
    return make()


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal-inner", "bidi-inner"])
def test_backbone_is_rc_equivariant(bidirectional):
    backbone = make(bidirectional)
    x = dna_batch()
    with torch.no_grad():
        h, h_rc = backbone(x), backbone(reverse_complement(x))              # (B, L, D)
    assert h.shape == (2, 21, 32)
    assert rel_err(h_rc, rc_hidden(h)) < 1e-5
    # and not trivially: the output does depend on the strand
    assert rel_err(h_rc, h) > 0.1


def test_lm_head_logits_are_rc_equivariant(backbone):
    head = RCLMHead(32, VOCAB_SIZE)
    comp = complement_table()
    x = dna_batch()
    with torch.no_grad():
        y, y_rc = head(backbone(x)), head(backbone(reverse_complement(x)))  # (B, L, V)
    # RC of logits: flip positions, permute the vocabulary by the complement
    assert rel_err(y_rc, y.flip(1)[..., comp]) < 1e-5


def test_pooled_classifier_is_rc_invariant(backbone):
    head = RCPositionClassifier(32, 5)
    x = dna_batch()
    with torch.no_grad():
        p, p_rc = head(backbone(x)).mean(1), head(backbone(reverse_complement(x))).mean(1)
    assert rel_err(p_rc, p) < 1e-5


def test_plain_backbone_is_not_equivariant():
    """The property is the wrapper's doing: a plain Backbone does not have it."""
    from bytessm.backbone import Backbone
    torch.manual_seed(0)
    m = Backbone(d_model=32, n_layer=2, vocab_size=VOCAB_SIZE, bidirectional=True,
                 scan_backend="reference").eval()
    x = dna_batch()
    with torch.no_grad():
        assert rel_err(m(reverse_complement(x)), rc_hidden(m(x))) > 0.1


def test_rcps_gradients_flow_into_the_shared_backbone():
    backbone = make()
    x = dna_batch()
    backbone(x).sum().backward()
    assert all(p.grad is not None for p in backbone.inner.parameters() if p.requires_grad)


def test_rcps_rejects_odd_width_and_state():
    with pytest.raises(ValueError, match="d_model must be even"):
        RCPSBackbone(d_model=33, n_layer=1, vocab_size=VOCAB_SIZE)
    m = RCPSBackbone(d_model=8, n_layer=1, vocab_size=VOCAB_SIZE)
    with pytest.raises(RuntimeError, match="no recurrent state"):
        m(dna_batch(), return_states=True)


def test_complement_table_leaves_specials():
    comp = complement_table()
    assert comp[MASK] == MASK and comp[PAD] == PAD and comp[ord("N")] == ord("N")
    assert torch.equal(comp[comp], torch.arange(VOCAB_SIZE))


def test_mcc_hand_computed():
    # binary: TP=5, FN=1, FP=2, TN=4 -> (5*4 - 2*1) / sqrt(7 * 6 * 5 * 6) = 18 / sqrt(1260)
    m = torch.tensor([[4, 2], [1, 5]])          # rows: true (neg, pos); columns: predicted
    assert matthews_corrcoef(m) == pytest.approx(18 / 1260 ** 0.5)
    # 3 classes: c=6, s=9, t=(3,3,3), p=(4,2,3): (54 - 27) / sqrt((81-29)(81-27))
    m3 = torch.tensor([[2, 1, 0], [1, 2, 0], [1, 0, 2]])
    assert matthews_corrcoef(m3) == pytest.approx(27 / (52 * 54) ** 0.5)
    assert matthews_corrcoef(torch.eye(4) * 3) == pytest.approx(1.0)
    assert matthews_corrcoef(torch.tensor([[3, 0], [2, 0]])) == 0.0   # one predicted class


def test_species_metrics_count_the_confusion_matrix():
    """loss_and_metrics' (true, predicted) counts, summed and summarised: the hand-computed
    three-class MCC above, from logits whose argmax gives that matrix."""
    from bytessm.tasks.genomics.task import GenomicsSpeciesTask

    task = object.__new__(GenomicsSpeciesTask)   # only what the metrics read
    task.classes, task.pool = ["a", "b", "c"], "mean"
    pairs = [(0, 0)] * 2 + [(0, 1), (1, 0)] + [(1, 1)] * 2 + [(2, 0)] + [(2, 2)] * 2
    label = torch.tensor([t for t, _ in pairs])
    head_out = torch.nn.functional.one_hot(torch.tensor([p for _, p in pairs]), 3).float()
    batch = {"label": label, "keep": torch.ones(len(pairs), 1)}
    _, metrics = task.loss_and_metrics(head_out[:, None, :], batch)
    totals = {k: (float(s), float(c)) for k, (s, c) in metrics.items()}
    assert totals["_cm_2_0"] == (1.0, 9.0) and totals["_cm_0_0"][0] == 2.0
    assert task.summarize(totals)["mcc"] == pytest.approx(27 / (52 * 54) ** 0.5)
