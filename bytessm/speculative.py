"""Speculative decoding: a small drafter proposes k symbols, the byte model checks them in one
parallel forward from its saved states (MambaByte, Wang et al. 2024, section 4; the
acceptance rule of Leviathan et al. 2023 and Chen et al. 2023).

One round, with c the last committed symbol (not yet consumed by either model):

    drafter:  step c, d_1, ..., d_k              -> d_1..d_k, q_1..q_k  (state kept after each)
    target:   forward [c, d_1..d_k] from T       -> p_1..p_{k+1}        (one parallel scan)
    accept d_i while  greedy: d_i == argmax p_i   |   sampling: u < p_i(d_i) / q_i(d_i)
    then one more symbol t: argmax p_{a+1} | a draw from norm(max(p_{a+1} - q_{a+1}, 0)),
                            or from p_{k+1} when all k were accepted
    committed += d_1..d_a, t

Resuming exactly from the first rejected symbol needs the target's state after c, d_1..d_a:
when all k were accepted it is the verification's returned state; otherwise the accepted
prefix is re-run from the saved state T (a parallel forward of a+1 symbols). The scan's
`initial_state` makes both resume without recomputing the prompt. The drafter keeps its
state after every position it consumed instead (it is small), so it never re-runs; it also
consumes d_k in the round (k+1 steps), so that nothing is left to do when all k pass.

A round is device work with one host sync (reading a and t): the draft (k+1 drafter
steps, sampling, snapshots), the verification (forward, acceptance of every position,
the candidate next symbol of every position) and the re-run of an accepted prefix of
length m = a+1 are functions of static buffers with fixed shapes. On CUDA each is captured
once as a CUDA graph (the re-run: one graph per m in 1..k, each a forward of m symbols)
and replayed; on the CPU the same functions run eagerly. The Mamba layers' states of each
model live in two flat buffers (conv windows, SSM states), so a snapshot, a restore or a
commit is two copies whatever the depth. CUDA graphs need both models to be Mamba-only
(a verification forward over a KV cache has a host-side length); hybrids run eagerly.

Greedy acceptance produces exactly the symbols plain greedy decoding produces (up to the
rounding differences between the parallel forward and the step, docs/generation.md);
sampling acceptance produces samples from the same distribution. One sequence at a time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from bytessm.generation import (capture_graphs, check_can_generate, has_attention, is_layered,
                                make_generator, model_step, new_states, prefill,
                                prepare_compiled_step)
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
    seconds: float = 0.0  # prefill and rounds
    prefill_s: float = 0.0  # of which the two prefills
    capture_s: float = 0.0  # warm-up and CUDA-graph capture (once per SpeculativeDecoder)

    @property
    def mean_accepted(self) -> float:
        """Drafted symbols accepted per round (0..k)."""
        return self.accepted / max(self.rounds, 1)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(self.drafted, 1)

    def as_dict(self) -> dict:
        return {"rounds": self.rounds, "drafted": self.drafted, "accepted": self.accepted,
                "generated": self.generated, "seconds": self.seconds, "prefill_s": self.prefill_s,
                "capture_s": self.capture_s,
                "mean_accepted": self.mean_accepted, "acceptance_rate": self.acceptance_rate,
                "symbols_per_s": self.generated / max(self.seconds, 1e-9)}


class _States:
    """One model's batch-1 decoding states at fixed addresses. The Mamba layers' states are
    views of two flat buffers, conv (n_mamba, 1, d_inner, d_conv-1) and ssm (n_mamba, 1,
    d_inner, d_state); `layers` holds those views and the attention layers' KVCaches."""

    def __init__(self, model: nn.Module, device, max_len: int):
        layers = new_states(model, 1, device, max_len, static=False)
        self.mamba = [i for i, s in enumerate(layers) if isinstance(s, MambaState)]
        self.conv = self.ssm = None
        if self.mamba:
            self.conv = torch.stack([layers[i].conv for i in self.mamba])
            self.ssm = torch.stack([layers[i].ssm for i in self.mamba])
            for j, i in enumerate(self.mamba):
                layers[i] = MambaState(self.conv[j], self.ssm[j])
        self.layers = layers

    def set(self, new: list) -> None:
        """Take the states a forward returned: copied into the flat buffers (Mamba; two
        kernels), taken as they are (KV caches: the same buffers, a new length)."""
        if self.mamba:
            torch.stack([new[i].conv for i in self.mamba], out=self.conv)
            torch.stack([new[i].ssm for i in self.mamba], out=self.ssm)
        for i, s in enumerate(new):
            if not isinstance(s, MambaState):
                self.layers[i] = s

    def lengths(self) -> list:
        return [s.length for s in self.layers if isinstance(s, KVCache)]

    def set_lengths(self, lengths: list) -> None:
        kv = [i for i, s in enumerate(self.layers) if isinstance(s, KVCache)]
        for i, n in zip(kv, lengths):
            s = self.layers[i]
            self.layers[i] = KVCache(s.k, s.v, n)


class SpeculativeDecoder:
    """Static buffers of speculative decoding for one (target, drafter, k, sampling) and the
    three device functions of a round; `generate()` runs rounds for one prompt. With
    `cuda_graph` the functions are captured on the first `generate()` (before any state
    is loaded, so capturing disturbs nothing) and replayed; `compile_step` (default: on
    with CUDA graphs) compiles the drafter's block step as the Decoder does."""

    def __init__(self, target: nn.Module, drafter: nn.Module, *, k: int = 4,
                 params: SamplingParams = SamplingParams(), max_len: int = 4096,
                 cuda_graph: bool | None = None, compile_step: bool | None = None):
        vocab = check_can_generate(target)
        if check_can_generate(drafter) != vocab:
            raise ConfigError(f"the drafter's alphabet ({check_can_generate(drafter)} symbols) "
                              f"differs from the model's ({vocab})")
        for name, m in (("model", target), ("drafter", drafter)):
            if not is_layered(m):
                raise ConfigError(f"speculative decoding needs a stack of Mamba/attention blocks; "
                                  f"the {name} is a {type(m.backbone).__name__}")
        if k < 1:
            raise ConfigError(f"draft_k must be >= 1, got {k}")
        device = next(target.parameters()).device
        mamba_only = not (has_attention(target) or has_attention(drafter))
        if cuda_graph is None:
            cuda_graph = device.type == "cuda" and mamba_only
        if cuda_graph and (device.type != "cuda" or not mamba_only):
            raise ConfigError("speculative decoding with CUDA graphs needs a CUDA device and "
                              "Mamba-only models (attention layers verify over a KV cache whose "
                              "length lives on the host); use cuda_graph=False")
        self.target, self.drafter, self.k, self.params = target, drafter, k, params
        self.device, self.max_len, self.cuda_graph = device, max_len, cuda_graph
        self.block_step = prepare_compiled_step(drafter) \
            if (cuda_graph if compile_step is None else compile_step) else None
        self.T = _States(target, device, max_len)          # target, after the committed symbols
        self.after = _States(target, device, max_len)      # target, after [c, d_1..d_k]
        self.D = _States(drafter, device, max_len)         # drafter, stepping
        self.snap_conv = self.snap_ssm = None               # drafter after c, d_1..d_j
        if self.D.mamba:
            self.snap_conv = self.D.conv.new_zeros((k + 1, *self.D.conv.shape))
            self.snap_ssm = self.D.ssm.new_zeros((k + 1, *self.D.ssm.shape))
        self.snap_lengths: list = [[] for _ in range(k + 1)]
        long = dict(dtype=torch.long, device=device)
        self.inp = torch.zeros(1, k + 1, **long)            # [c, d_1..d_k]
        self.result = torch.zeros(2, **long)               # [a, t]
        self.seen = (torch.zeros(1, vocab, dtype=torch.bool, device=device)
                     if params.repetition_penalty != 1.0 else None)
        f32 = dict(dtype=torch.float32, device=device)
        sampling = not params.greedy
        self.q_probs = torch.zeros(k, vocab, **f32) if sampling else None
        self.draft_noise = torch.ones(k, vocab, **f32) if sampling else None
        self.resid_noise = torch.ones(k + 1, vocab, **f32) if sampling else None
        self.u = torch.zeros(k, **f32) if sampling else None
        self.graphs: dict | None = None

    # -- the three device functions of a round ----------------------------------------

    def _save(self, j: int) -> None:
        if self.D.mamba:
            self.snap_conv[j].copy_(self.D.conv)
            self.snap_ssm[j].copy_(self.D.ssm)
        self.snap_lengths[j] = self.D.lengths()   # host ints: eager (hybrid) only

    def _restore(self, j: int) -> None:
        if self.D.mamba:
            self.D.conv.copy_(self.snap_conv[j])
            self.D.ssm.copy_(self.snap_ssm[j])
        self.D.set_lengths(self.snap_lengths[j])

    def _draft(self) -> None:
        """The drafter consumes inp[0, j] for j = 0..k and writes d_{j+1} into inp[0, j+1]
        (and q_{j+1}); its state after inp[0, :j+1] is snapshot j."""
        params, k = self.params, self.k
        dseen = None if self.seen is None else self.seen.clone()
        for j in range(k + 1):
            logits = model_step(self.drafter, self.inp[:, j], self.D.layers, self.block_step)
            self._save(j)
            if j == k:
                break
            q = process_logits(logits, params, dseen)                          # (1, V)
            d = pick(q, params, None if params.greedy else self.draft_noise[j:j + 1])
            self.inp[:, j + 1].copy_(d)
            if not params.greedy:
                self.q_probs[j].copy_(q.softmax(-1)[0])
            if dseen is not None:
                dseen.scatter_(1, d[:, None], True)

    def _verify(self) -> None:
        """Target forward of inp from T -> `after`; result = [a, t]: a the accepted drafts,
        t the symbol that follows them (every position's candidate computed, one taken)."""
        params, k = self.params, self.k
        logits, after = self.target(self.inp, states=self.T.layers, return_states=True)
        self.after.set(after)
        pseen = None if self.seen is None else self.seen.clone()
        oks, cands = [], []
        for i in range(k + 1):
            p = process_logits(logits[:, i], params, pseen)                    # (1, V)
            if i == k:
                cands.append(pick(p, params, None if params.greedy else self.resid_noise[k:]))
                break
            d = self.inp[:, i + 1]                                             # (1,)
            if params.greedy:
                cands.append(p.argmax(-1))
                oks.append(cands[-1] == d)
            else:
                p_prob, q_prob = p.softmax(-1)[0], self.q_probs[i]
                oks.append((self.u[i] * q_prob[d] < p_prob[d]))
                residual = (p_prob - q_prob).clamp_min(0)          # a draw from it: argmax(r/E)
                cands.append((residual / self.resid_noise[i]).argmax(-1, keepdim=True))
            if pseen is not None:
                pseen = pseen.scatter(1, d[:, None], True)
        accepted = torch.cat(oks).long().cumprod(0).sum()                      # ()
        self.result[0].copy_(accepted)
        self.result[1].copy_(torch.cat(cands).gather(0, accepted[None])[0])

    def _rerun(self, m: int) -> None:
        """T <- the target's state after inp[0, :m] (c and the m-1 accepted drafts)."""
        _, new = self.target(self.inp[:, :m], states=self.T.layers, return_states=True)
        self.T.set(new)

    # -- graphs ---------------------------------------------------------------------------

    def _capture(self) -> None:
        """One graph per function of a round (`capture_graphs`). Runs before any state is
        loaded, so the warm-ups' writes are overwritten."""
        fns = {"draft": self._draft, "verify": self._verify}
        fns.update({m: (lambda m=m: self._rerun(m)) for m in range(1, self.k + 1)})
        self.graphs = capture_graphs(fns, self.device)

    def _call(self, name, fn) -> None:
        if self.graphs is not None:
            self.graphs[name].replay()
        else:
            fn()

    # -- one prompt -----------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt: Sequence[int], *, max_new: int, seed: int | None = None,
                 stop: Sequence[int] = ()) -> tuple[list[int], str, SpeculativeStats]:
        """Up to `max_new` symbols after `prompt` -> (symbols, "stop"|"length", stats); the
        stop symbol, when one is produced, ends the sample and is not included. stats.seconds
        counts prefill and rounds, not the one-time capture (capture_s)."""
        vocab = check_can_generate(self.target)
        if not prompt:
            raise ConfigError("a prompt encodes to no symbols: the model needs at least one symbol")
        bad = [int(x) for x in prompt if not 0 <= int(x) < vocab]
        if bad:
            raise ConfigError(f"prompt symbols must be in [0, {vocab}), got {bad[:5]}")
        if len(prompt) + max_new + 2 * (self.k + 1) > self.max_len and not self.cuda_graph:
            raise ConfigError(f"prompt ({len(prompt)}) + max_new ({max_new}) + drafts exceed the "
                              f"speculative decoder's max_len {self.max_len}")
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        stats, t0 = SpeculativeStats(), time.perf_counter()
        if self.cuda_graph and self.graphs is None:
            self._capture()
            sync()
        stats.capture_s, t_start = time.perf_counter() - t0, time.perf_counter()
        gen = make_generator(seed, self.device)
        params, k = self.params, self.k

        ctx = torch.tensor([list(prompt)], dtype=torch.long, device=self.device)   # (1, n)
        for model, states in ((self.target, self.T), (self.drafter, self.D)):
            fresh = new_states(model, 1, self.device, self.max_len, static=False)
            if ctx.shape[1] > 1:
                fresh = prefill(model, ctx[:, :-1], fresh)
            states.set(fresh)
        if self.seen is not None:
            self.seen.zero_()
            self.seen[0, ctx[0]] = True
        self.inp[0, 0] = ctx[0, -1]
        sync()
        stats.prefill_s = time.perf_counter() - t_start
        out: list[int] = []
        stop_set = {int(s) for s in stop}
        while len(out) < max_new:
            if not params.greedy:
                draw_noise(self.draft_noise, gen)
                draw_noise(self.resid_noise, gen)
                self.u.uniform_(generator=gen)
            self._call("draft", self._draft)
            self._call("verify", self._verify)
            accepted, nxt = self.result.tolist()                               # host sync
            new = self.inp[0, 1:accepted + 1].tolist() + [nxt]
            stats.rounds += 1
            stats.drafted += k
            stats.accepted += accepted
            # -- resume both models after c, d_1..d_a, with t pending
            if accepted == k:
                self.T.set(self.after.layers)   # the drafter consumed d_k: already in place
            else:
                self._call(accepted + 1, lambda m=accepted + 1: self._rerun(m))
                self._restore(accepted)
            if self.seen is not None:
                self.seen[0, torch.tensor(new, device=self.device)] = True
            self.inp[0, 0] = nxt
            for s in new:
                if s in stop_set:
                    stats.generated, stats.seconds = len(out), time.perf_counter() - t_start
                    return out, "stop", stats
                out.append(s)
                if len(out) == max_new:
                    break
        sync()
        stats.generated, stats.seconds = len(out), time.perf_counter() - t_start
        return out, "length", stats


@torch.no_grad()
def speculative_generate(target: nn.Module, drafter: nn.Module, prompt: Sequence[int], *,
                         max_new: int, k: int = 4, params: SamplingParams = SamplingParams(),
                         seed: int | None = None, stop: Sequence[int] = (),
                         cuda_graph: bool | None = None, compile_step: bool | None = None
                         ) -> tuple[list[int], str, SpeculativeStats]:
    """Generate up to `max_new` symbols after `prompt` -> (symbols, "stop"|"length", stats)
    with a one-off `SpeculativeDecoder` (CUDA graphs by default on CUDA for Mamba-only
    models). The stop symbol, when one is produced, ends the sample and is not included."""
    if not prompt:
        raise ConfigError("a prompt encodes to no symbols: the model needs at least one symbol")
    decoder = SpeculativeDecoder(target, drafter, k=k, params=params,
                                 max_len=len(prompt) + max_new + 2 * (k + 1),
                                 cuda_graph=cuda_graph, compile_step=compile_step)
    return decoder.generate(prompt, max_new=max_new, seed=seed, stop=stop)
