"""Tiny models for the generation tests (float32, reference scan, CPU)."""
import torch

from bytessm.backbone import Backbone, SequenceModel
from bytessm.nn.heads import LMHead

# relative error ||out - ref|| / ||ref|| allowed between step-by-step and parallel, per dtype.
# bf16 (weights cast by cast_for_inference, CPU): measured 0 (Mamba) and 5.1e-6 (hybrid) with
# both paths rounding at the same points; 7.6e-3 when the step rounded the conv output only
# after its SiLU (the parallel path rounds before and after).
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-5}


def tiny(seed: int = 0, *, attn=(), n_layer: int = 3, d_model: int = 32, vocab: int = 256,
         bidirectional: bool = False) -> SequenceModel:
    torch.manual_seed(seed)
    backbone = Backbone(d_model=d_model, n_layer=n_layer, vocab_size=vocab, attn_layers=attn,
                        attn_heads=4, attn_mlp_ratio=2.0, d_state=8, d_conv=4,
                        bidirectional=bidirectional, scan_backend="reference")
    model = SequenceModel(backbone, LMHead(d_model, vocab)).eval()
    with torch.no_grad():  # sharper logits than the init's, so greedy choices are not near-ties
        model.head.proj.weight.mul_(8.0)
    return model


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


@torch.no_grad()
def greedy_by_recompute(model, prompt: list[int], n: int) -> list[int]:
    """Greedy continuation by re-running the whole sequence every step (the plain reference)."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]
