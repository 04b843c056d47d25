"""Speculative decoding: a small drafter proposes k symbols, the byte model checks them in one
parallel forward from its saved states (MambaByte, Wang et al. 2024, section 4; the
acceptance rule of Leviathan et al. 2023 and Chen et al. 2023).

One round, with c the last committed symbol (not yet consumed by either model):

    drafter:  step c, d_1, ..., d_{k-1}          -> d_1..d_k, q_1..q_k  (states kept per position)
    target:   forward [c, d_1..d_k] from T       -> p_1..p_{k+1}        (one parallel scan)
    accept d_i while  greedy: d_i == argmax p_i   |   sampling: u < p_i(d_i) / q_i(d_i)
    then one more symbol t: argmax p_{a+1} | a draw from norm(max(p_{a+1} - q_{a+1}, 0)),
                            or from p_{k+1} when all k were accepted
    committed += d_1..d_a, t

Resuming exactly from the first rejected symbol needs the target's state after c, d_1..d_a:
when all k were accepted it is the verification's returned state; otherwise the accepted
prefix is re-run from the saved state T (a parallel forward of a+1 symbols). The scan's
`initial_state` makes both resume without recomputing the prompt. The drafter keeps its
state after every drafted position instead (it is small), so it never re-runs.

Greedy acceptance produces exactly the symbols plain greedy decoding produces; sampling
acceptance produces samples from the same distribution. One sequence at a time, eager.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from bytessm.generation import check_can_generate, is_layered, make_generator, new_states, prefill
from bytessm.nn.attention import KVCache
from bytessm.nn.mamba import MambaState
from bytessm.sampling import SamplingParams, draw_noise, pick, process_logits
from bytessm.task import ConfigError


@dataclass
class SpeculativeStats:
    rounds: int = 0
    drafted: int = 0      # symbols proposed by the drafter
    accepted: int = 0     # of those, accepted by the target
    generated: int = 0    # symbols committed (accepted + one per round)
    seconds: float = 0.0

    @property
    def mean_accepted(self) -> float:
        """Drafted symbols accepted per round (0..k)."""
        return self.accepted / max(self.rounds, 1)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(self.drafted, 1)

    def as_dict(self) -> dict:
        return {"rounds": self.rounds, "drafted": self.drafted, "accepted": self.accepted,
                "generated": self.generated, "seconds": self.seconds,
                "mean_accepted": self.mean_accepted, "acceptance_rate": self.acceptance_rate,
                "symbols_per_s": self.generated / max(self.seconds, 1e-9)}


def _snapshot(states: list) -> list:
    """A copy that later in-place steps do not change (KV buffers are shared: steps only
    write past the snapshot's length, which a restore then ignores)."""
    return [MambaState(s.conv.clone(), s.ssm.clone()) if isinstance(s, MambaState)
            else KVCache(s.k, s.v, s.length) for s in states]


def _seen_with(seen: Tensor | None, symbol: Tensor) -> Tensor | None:
    if seen is None:
        return None
    seen = seen.clone()
    seen[0, symbol] = True
    return seen


@torch.no_grad()
def speculative_generate(target: nn.Module, drafter: nn.Module, prompt: Sequence[int], *,
                         max_new: int, k: int = 4, params: SamplingParams = SamplingParams(),
                         seed: int | None = None, stop: Sequence[int] = ()
                         ) -> tuple[list[int], str, SpeculativeStats]:
    """Generate up to `max_new` symbols after `prompt` -> (symbols, "stop"|"length", stats).
    The stop symbol, when one is produced, ends the sample and is not included."""
    vocab = check_can_generate(target)
    if check_can_generate(drafter) != vocab:
        raise ConfigError(f"the drafter's alphabet ({check_can_generate(drafter)} symbols) differs "
                          f"from the model's ({vocab})")
    for name, m in (("model", target), ("drafter", drafter)):
        if not is_layered(m):
            raise ConfigError(f"speculative decoding needs a stack of Mamba/attention blocks; the "
                              f"{name} is a {type(m.backbone).__name__}")
    if k < 1:
        raise ConfigError(f"draft_k must be >= 1, got {k}")
    if not prompt:
        raise ConfigError("a prompt encodes to no symbols: the model needs at least one symbol")
    device = next(target.parameters()).device
    gen = make_generator(seed, device)
    stats = SpeculativeStats()
    t_start = time.perf_counter()

    ctx = torch.tensor([list(prompt)], dtype=torch.long, device=device)         # (1, n)
    max_len = ctx.shape[1] + max_new + k + 1
    T = prefill(target, ctx[:, :-1], new_states(target, 1, device, max_len, static=False))
    D = prefill(drafter, ctx[:, :-1], new_states(drafter, 1, device, max_len, static=False))
    seen = None
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(1, vocab, dtype=torch.bool, device=device)
        seen[0, ctx[0]] = True
    pending = ctx[:, -1]                                                         # (1,)
    out: list[int] = []
    stop_set = set(int(s) for s in stop)

    def draw(processed: Tensor) -> Tensor:
        noise = None if params.greedy else draw_noise(torch.empty_like(processed), gen)
        return pick(processed, params, noise)

    while len(out) < max_new:
        kk = min(k, max_new - len(out) - 1)
        # -- draft: the drafter steps c, d_1, ..., d_{kk-1}; its state after each is kept
        snaps, drafts, q_probs = [_snapshot(D)], [], []
        prev, dseen = pending, seen
        for _ in range(kk):
            q = process_logits(drafter.step(prev, D), params, dseen)          # (1, V)
            snaps.append(_snapshot(D))
            d = draw(q)
            drafts.append(d)
            q_probs.append(q.softmax(-1))
            dseen, prev = _seen_with(dseen, d), d
        # -- verify all drafts in one parallel forward from the saved state T
        inp = torch.cat([pending, *drafts])[None]                               # (1, kk+1)
        logits, T_after = target(inp, states=T, return_states=True)            # (1, kk+1, V)
        accepted, pseen, nxt = 0, seen, None
        for i in range(kk):
            p = process_logits(logits[:, i], params, pseen)
            d = drafts[i]
            if params.greedy:
                ok = bool(p.argmax(-1) == d)
            else:
                p_prob = p.softmax(-1)
                u = torch.rand(1, generator=gen, device=device)
                ok = bool(u * q_probs[i][0, d] < p_prob[0, d])
            if not ok:
                if params.greedy:
                    nxt = p.argmax(-1)
                else:
                    residual = (p_prob - q_probs[i]).clamp_min(0)
                    nxt = torch.multinomial(residual / residual.sum(), 1, generator=gen)[0]
                break
            accepted += 1
            pseen = _seen_with(pseen, d)
        if nxt is None:  # every draft accepted: the target's own next symbol
            nxt = draw(process_logits(logits[:, kk], params, pseen))
        new = [int(d) for d in drafts[:accepted]] + [int(nxt)]
        stats.rounds += 1
        stats.drafted += kk
        stats.accepted += accepted
        # -- resume both models after c, d_1..d_a, with nxt pending
        if accepted == kk:
            T = T_after
            drafter.step(prev, D)          # the drafter has not consumed d_kk (or c) yet
        else:
            T = prefill(target, inp[:, : accepted + 1], T)
            D = snaps[accepted + 1]
        for s in new:
            seen = _seen_with(seen, torch.tensor(s, device=device))
        pending = nxt.reshape(1)
        for s in new:
            if s in stop_set:
                stats.generated = len(out)
                stats.seconds = time.perf_counter() - t_start
                return out, "stop", stats
            out.append(s)
            if len(out) == max_new:
                break
    stats.generated = len(out)
    stats.seconds = time.perf_counter() - t_start
    return out, "length", stats
