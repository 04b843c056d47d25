"""Recurrent generation: prompt prefill through the parallel scan, then one step per symbol.

    prompt x_1..x_n --parallel forward of x_1..x_{n-1} (return_states)--> per-layer states
    x_n -> step -> logits -> sample -> x_{n+1} -> step -> ...          (max_new steps)

The state of a Mamba layer is its conv window (B, d_inner, d_conv-1) and SSM state
(B, d_inner, d_state), float32, whatever the prompt's length: memory does not grow as
symbols are generated. Attention layers of a hybrid stack keep a KV cache preallocated
for prompt + max_new positions (`StaticKVCache`: its position is a device tensor).

All decode buffers of one batch size live in a `Decoder`: the current symbols, the states,
the seen-symbol mask (repetition penalty), the noise, the output and the stop flags. One
step reads and writes only those buffers, with fixed shapes and no host sync, so on CUDA
it is captured once as a CUDA graph and replayed: a step then costs GPU time, not the
40-260 us of kernel launches it costs eagerly. Eager decoding (CPU, tests) runs the very
same step function. Inside the graph a step still costs about a launch gap per kernel, so
on CUDA each block's step is first compiled with torch.compile (`compiled_block_step`:
7 kernels per Mamba layer instead of 13; docs/generation.md counts them), and its
matrix-vector products run on the Triton GEMV with the norm and the residual add fused in
and the conv step in in_proj's (`bytessm.nn.decode`: 4 kernels), launched with
programmatic dependent launch so that each kernel streams its weights while the one
before it finishes (`kernels/triton/pdl.py`).

Generation knows no modality: prompts and samples are lists of symbols; the task turns
strings into symbols (`Task.encode_prompt`) and symbols into output (`Task.write_samples`).
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

import bytessm.nn.decode as decode
from bytessm.nn.attention import Attention, StaticKVCache
from bytessm.nn.block import Block
from bytessm.nn.heads import head_step
from bytessm.nn.mamba import BiMamba, Mamba, MambaState, SSMBranch
from bytessm.nn.norm import RMSNorm
from bytessm.nn.stack import FusedStack, stack_blocker, use_fused_stack
from bytessm.sampling import SamplingParams, draw_noise, pick, process_logits
from bytessm.task import ConfigError


# -- model checks and inference precision ------------------------------------------------

def check_can_generate(model: nn.Module) -> int:
    """Raise ConfigError unless `model` (a SequenceModel) can decode symbol by symbol;
    returns its alphabet size."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(model, "step"):
        raise ConfigError(f"generation needs a SequenceModel (backbone + head), got "
                          f"{type(model).__name__}")
    if getattr(backbone, "bidirectional", False):
        raise ConfigError("this model is bidirectional (model.bidirectional=true): every "
                          "position sees the whole sequence, so it cannot generate one symbol "
                          "after another; train a causal model to generate")
    if not isinstance(backbone.encoder, nn.Embedding):
        raise ConfigError(f"generation feeds sampled symbols back as input, but this model "
                          f"reads {type(backbone.encoder).__name__} features, not symbols")
    return backbone.encoder.num_embeddings


def _cast_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].to(module.weight.dtype), *args[1:])


def _cast_mixer_input(module: nn.Module, args: tuple) -> tuple:
    # Mamba.forward multiplies by in_proj.weight directly (`linear_channels_first`), past
    # in_proj's own hook; cast where the step path's in_proj hook casts (same rounding)
    return (args[0].to(module.in_proj.weight.dtype), *args[1:])


def cast_for_inference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the weights in `dtype` (bf16 halves the bytes a decode step reads) except:

    - the SSM dynamics (A_log, D, dt bias), float32 as in mamba_ssm;
    - RMSNorm weights: d_model floats each, and a bf16 copy costs a cast kernel per norm
      per decode step (the norm computes in float32);
    - a small output head (at most 2^20 weights, e.g. a byte LM head: 256 x d_model): its
      float32 logits rarely tie, where bf16 logits (8 bits of mantissa) tie often enough
      that greedy argmax flips between decoding and verification (docs/generation.md).

    The residual stream stays float32; a forward pre-hook casts each Linear's (and each
    Mamba mixer's, for its in_proj) input to the weight dtype (no kernel when they agree).
    In place; returns the model. float32 is a no-op."""
    if dtype == torch.float32:
        return model
    keep = {id(p) for m in model.modules() if isinstance(m, SSMBranch)
            for p in (m.A_log, m.D, m.dt_proj.bias)}
    keep |= {id(m.weight) for m in model.modules() if isinstance(m, RMSNorm)}
    head = getattr(model, "head", None)
    if head is not None and sum(p.numel() for p in head.parameters()) <= 2**20:
        keep |= {id(p) for p in head.parameters()}
    for p in model.parameters():
        if id(p) not in keep:
            p.data = p.data.to(dtype)
    for m in model.modules():
        if getattr(m, "_casts_input", False):
            continue
        if isinstance(m, nn.Linear):
            m.register_forward_pre_hook(_cast_input)
            m._casts_input = True
        elif isinstance(m, (Mamba, BiMamba)):
            m.register_forward_pre_hook(_cast_mixer_input)
            m._casts_input = True
    return model


# -- the compiled decode step ------------------------------------------------------------

_COMPILED_BLOCK_STEP = None


def compiled_block_step():
    """`Block.step` through torch.compile (inductor, fullgraph, static shapes), compiled per
    block structure and batch size and reused by every block of the same structure, so a
    53-layer model compiles one layer. Inductor fuses the norm, the casts and the residual
    add; the conv / state steps stay opaque custom ops (`bytessm::mamba_*_step`). Returns
    the callable `(block, residual, state) -> residual`."""
    global _COMPILED_BLOCK_STEP
    if _COMPILED_BLOCK_STEP is None:
        import torch._dynamo
        # one cache entry per (block structure, batch, KV length): a benchmark sweep makes
        # more than the default 8, after which Dynamo would silently fall back to eager
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 128)
        _COMPILED_BLOCK_STEP = torch.compile(Block.step, fullgraph=True, dynamic=False)
    return _COMPILED_BLOCK_STEP


def prepare_compiled_step(model: nn.Module):
    """Fill the step caches eagerly (so the compiled graph reads them as constants) and
    return the compiled block step."""
    for m in model.modules():
        if isinstance(m, SSMBranch) and not m.reverse:
            m._step_A()
    return compiled_block_step()


def takes_block_step(model: nn.Module) -> bool:
    """Whether the backbone's step takes a `block_step` to run its blocks with (layered
    stacks, the pooled U-Net), so that the decoder can hand it a compiled one."""
    return "block_step" in inspect.signature(model.backbone.step).parameters


def model_step(model: nn.Module, symbols: Tensor, states: list, block_step=None,
               stack_step=None) -> Tensor:
    """`model.step(symbols, states)`, with `block_step` replacing `Block.step` or
    `stack_step` the whole stack of blocks (`bytessm.nn.stack.FusedStack`) when given."""
    if block_step is None and stack_step is None:
        return model.step(symbols, states)
    kw = {"stack_step": stack_step} if stack_step is not None else {"block_step": block_step}
    hidden = model.backbone.step(symbols, states, **kw)                      # (B, D)
    return head_step(model.head, hidden)


@functools.cache
def _warmup_stream(device: torch.device) -> torch.cuda.Stream:
    """One warm-up stream per GPU for every capture: cuBLAS keeps a workspace for each
    stream it has run on, so a new stream per capture would hold one more workspace each."""
    return torch.cuda.Stream(device)


def capture_graphs(fns: dict, device) -> dict:
    """CUDA graphs of argument-free functions of static buffers, by PyTorch's recipe: warm
    every function up twice on a side stream (Triton JIT, inductor, cuBLAS workspaces),
    then capture each. The warm-ups run the functions: callers capture before loading
    state, or save and restore what the functions write. Returns {name: CUDAGraph}."""
    current = torch.cuda.current_stream(device)
    side = _warmup_stream(current.device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for fn in fns.values():
            for _ in range(2):
                fn()
    current.wait_stream(side)
    graphs = {}
    for name, fn in fns.items():
        graphs[name] = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graphs[name]):
            fn()
    return graphs


# -- states ------------------------------------------------------------------------------

def _mixers(model: nn.Module) -> list[nn.Module]:
    return [block.mixer for block in model.backbone.blocks]


def is_layered(model: nn.Module) -> bool:
    """Whether the backbone is a stack of Mamba / attention blocks, whose states the decoder
    can build, broadcast and capture in a CUDA graph. Other causal backbones (the pooled
    U-Net) decode through their own `new_states` / `step`."""
    blocks = getattr(model.backbone, "blocks", None)
    return blocks is not None and all(isinstance(b.mixer, (Mamba, Attention)) for b in blocks)


def decode_period(model: nn.Module) -> int | None:
    """Steps after which a backbone's decode step repeats its Python-side control flow: 1 for
    a layered stack, prod(pool) for the pooled U-Net (`decode_phase` / `set_decode_phase`
    select the phase), None for a backbone whose step cannot be captured."""
    if is_layered(model):
        return 1
    return getattr(model.backbone, "decode_period", None)


def has_attention(model: nn.Module) -> bool:
    return is_layered(model) and any(isinstance(m, Attention) for m in _mixers(model))


def new_states(model: nn.Module, batch: int, device, max_len: int, *, static: bool) -> list:
    """Zero states: MambaState per Mamba layer; per attention layer a KV cache of `max_len`
    positions in the attention weights' dtype (`StaticKVCache` when `static`). A backbone
    that is not a plain stack builds its own (`backbone.new_states`)."""
    if not is_layered(model):
        return model.backbone.new_states(batch, device, max_len=max_len)
    states = []
    for mixer in _mixers(model):
        if isinstance(mixer, Attention):
            cache = mixer.new_state(batch, device, max_len=max_len, dtype=mixer.qkv.weight.dtype)
            states.append(StaticKVCache.from_cache(cache) if static else cache)
        else:
            states.append(mixer.new_state(batch, device))
    return states


def _tensors(obj) -> list[Tensor]:
    """Every tensor inside a (nested) state: tuples, lists, dicts, dataclasses."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    elif hasattr(obj, "__dataclass_fields__"):
        obj = [getattr(obj, f) for f in obj.__dataclass_fields__]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    return []


def state_bytes(states) -> int:
    """Bytes held by the decoding states (every tensor in them)."""
    seen, total = set(), 0
    for t in _tensors(states):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


@torch.no_grad()
def prefill(model: nn.Module, symbols: Tensor, states: list | None = None,
            max_len: int | None = None) -> list:
    """Run symbols (B, L) through the parallel forward from `states` (zero states when None,
    with KV caches of `max_len` positions, default L) and return the states after them."""
    if states is None:
        states = new_states(model, symbols.shape[0], symbols.device,
                            max(max_len or symbols.shape[1], 1), static=False)
    if symbols.shape[1] == 0:
        return states
    _, states = model.backbone(symbols, states=states, return_states=True)
    return states


def _load_rows(dst: list, src: list, rows: Tensor) -> None:
    """Copy batch-1 (or len(rows)-batch) states `src` into rows `rows` of decode states."""
    for d, s in zip(dst, src):
        if isinstance(d, MambaState):
            d.conv[rows] = s.conv.to(d.conv.dtype)
            d.ssm[rows] = s.ssm.to(d.ssm.dtype)
        else:
            n = s.length
            d.k[rows, :, :n] = s.k[:, :, :n].to(d.k.dtype)
            d.v[rows, :, :n] = s.v[:, :, :n].to(d.v.dtype)
            d.pos.fill_(n)


# -- the decoder -------------------------------------------------------------------------

def default_programmatic_launch(cuda_graph: bool, batch: int) -> bool:
    """A Decoder's default: PDL in captured steps whose products run on the GEMV kernels
    (batch <= decode.MAX_ROWS, unless BYTESSM_DECODE_GEMV=off); see `Decoder`."""
    return cuda_graph and batch <= decode.MAX_ROWS and decode.DECODE_GEMV != "off"


class Decoder:
    """Static decode buffers for `batch` sequences and the step that advances them.

    `load()` puts prefilled states and the pending (last prompt) symbols in place; `run()`
    then takes up to `max_new` steps, each: logits = model.step(tok) -> sampled symbol ->
    out[:, i], stop flags, seen mask, tok. On CUDA (`cuda_graph=True`) the step is
    captured as a CUDA graph on the first `run()` and replayed; the graph bakes in the
    sampling parameters and stop symbols. A backbone whose step repeats with a period (the
    pooled U-Net: its levels pool every 4 and 16 positions) gets one graph per phase, and
    `run()` replays them in turn.

    With `fused_stack` (default `bytessm.nn.stack.use_fused_stack`: off unless
    DECODE_STACK says otherwise; a plain Mamba stack at batch 1) every block's step runs as
    one persistent kernel (`bytessm.nn.stack.FusedStack`, experimental), and nothing is
    compiled. Otherwise, with `compile_step` (default: on with CUDA graphs, for layered
    stacks; the pooled U-Net takes it too; ignored where the switch fuses the stack) each
    block's step goes through torch.compile first (`compiled_block_step`): fewer, fused
    kernels inside the graph.
    With `programmatic_launch` the step's GEMV, conv-step and state-step kernels are
    captured with programmatic dependent launch on Hopper and later
    (`kernels/triton/pdl.py`): each loads its weights and state while the kernel before it
    still runs. Default (`default_programmatic_launch`): on with CUDA graphs where the
    products run on the GEMV, batch <= `decode.MAX_ROWS` (the 353M model's batch-1 step:
    0.63 instead of 0.85 ms on an H200); off above, where cuBLAS runs them (2.30 instead
    of 2.16 ms at batch 128; not profiled why).

    A Decoder can be loaded and run again; it captures the model as it is (weights changed
    afterwards need a new Decoder).
    """

    def __init__(self, model: nn.Module, *, batch: int, max_len: int, max_new: int,
                 params: SamplingParams, stop: Sequence[int] = (), device=None,
                 cuda_graph: bool = False, compile_step: bool | None = None,
                 programmatic_launch: bool | None = None, fused_stack: bool | None = None):
        vocab = check_can_generate(model)
        device = torch.device(device or next(model.parameters()).device)
        self.layered = is_layered(model)
        self.period = decode_period(model)
        if cuda_graph and device.type != "cuda":
            raise ConfigError(f"CUDA graphs need a CUDA device, got {device}")
        if cuda_graph and self.period is None:
            raise ConfigError(f"{type(model.backbone).__name__} decodes eagerly (its step keeps "
                              f"Python-side buffers); use cuda_graph=False")
        self.model, self.params, self.device = model, params, device
        self.batch, self.max_len, self.max_new = batch, max_len, max_new
        self.states = new_states(model, batch, device, max_len, static=True)
        blocks = list(model.backbone.blocks) if self.layered else []
        if fused_stack is None:
            fused_stack = self.layered and use_fused_stack(blocks, batch, device)
        elif fused_stack:
            why = stack_blocker(blocks) if self.layered else "not a stack of blocks"
            if why is not None:
                raise ConfigError(f"fused_stack=True: {type(model.backbone).__name__} cannot "
                                  f"decode as one fused stack ({why})")
            if batch != 1:
                raise ConfigError(f"fused_stack=True decodes one sequence at a time, got batch "
                                  f"{batch}")
            if compile_step:
                raise ConfigError("fused_stack=True and compile_step=True exclude each other: "
                                  "the fused kernel runs every block's step")
        self.stack = FusedStack(blocks, self.states) if fused_stack else None
        if self.stack is not None:
            compile_step = False
        elif compile_step is None:
            compile_step = cuda_graph and self.layered
        if compile_step and not takes_block_step(model):
            raise ConfigError(f"{type(model.backbone).__name__} has no per-block step to compile; "
                              f"use compile_step=False")
        self.cuda_graph, self.graphs = cuda_graph, None
        self.pdl = (default_programmatic_launch(cuda_graph, batch) if programmatic_launch is None
                    else programmatic_launch)
        self.block_step = prepare_compiled_step(model) if compile_step else None
        long = dict(dtype=torch.long, device=device)
        self.tok = torch.zeros(batch, **long)                     # pending input symbols
        self.out = torch.zeros(batch, max(max_new, 1), **long)    # generated symbols
        self.index = torch.zeros((), **long)                      # steps taken
        self.limit = torch.full((batch,), max_new, **long)        # per-row max_new
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.stop = torch.tensor(sorted(set(stop)), **long) if stop else None
        self.seen = (torch.zeros(batch, vocab, dtype=torch.bool, device=device)
                     if params.repetition_penalty != 1.0 else None)
        self.noise = (None if params.greedy else
                      torch.empty(batch, vocab, dtype=torch.float32, device=device))

    def load(self, prompts: Sequence[Sequence[int]], limits: Sequence[int] | None = None) -> None:
        """Prefill every distinct prompt once (batch 1) and copy its states into its rows."""
        if len(prompts) != self.batch:
            raise ValueError(f"Decoder was built for batch {self.batch}, got {len(prompts)} prompts")
        lengths = {len(p) for p in prompts}
        vocab = check_can_generate(self.model)
        bad = [int(x) for p in prompts for x in p if not 0 <= int(x) < vocab]
        if bad:
            raise ConfigError(f"prompt symbols must be in [0, {vocab}), got {bad[:5]}")
        if min(lengths) == 0:
            raise ConfigError("a prompt encodes to no symbols: the model needs at least one "
                              "symbol to condition on")
        if len(lengths) > 1 and (has_attention(self.model) or not self.layered):
            raise ConfigError(f"prompts of different lengths {sorted(lengths)} in one batch: "
                              f"this model's states (KV cache, {type(self.model.backbone).__name__}) "
                              f"need equal lengths; generate them in separate batches")
        if max(lengths) - 1 + self.max_new > self.max_len:
            raise ConfigError(f"prompt ({max(lengths)} symbols) + max_new ({self.max_new}) exceeds "
                              f"the decoder's max_len {self.max_len}")
        if self.layered:
            for s in self.states:  # rows of a short prompt start from zero
                for t in ((s.conv, s.ssm) if isinstance(s, MambaState) else (s.pos,)):
                    t.zero_()
            groups: dict[tuple, list[int]] = {}
            for row, p in enumerate(prompts):
                groups.setdefault(tuple(int(x) for x in p), []).append(row)
            for prompt, rows in groups.items():
                ctx = torch.tensor([prompt[:-1]], dtype=torch.long, device=self.device)
                if ctx.shape[1]:
                    _load_rows(self.states, prefill(self.model, ctx),
                               torch.tensor(rows, device=self.device))
        else:  # prefilled as one batch, in place, in the backbone's own states
            for t in _tensors(self.states):
                t.zero_()
            self._set_phase(0)
            ctx = torch.tensor([list(p[:-1]) for p in prompts], dtype=torch.long, device=self.device)
            states = prefill(self.model, ctx, self.states)
            if states is not self.states and self.graphs is not None:
                raise RuntimeError(f"{type(self.model.backbone).__name__}'s prefill replaced "
                                   f"the states its captured decode graphs read")
            self.states = states
        self.tok.copy_(torch.tensor([p[-1] for p in prompts]))
        self.index.zero_()
        self.done.zero_()
        self.out.zero_()
        self.limit.copy_(torch.tensor(limits if limits is not None else [self.max_new] * self.batch))
        if self.seen is not None:
            self.seen.zero_()
            for row, p in enumerate(prompts):
                self.seen[row, torch.tensor(list(p), device=self.device)] = True

    @torch.no_grad()
    def _step(self) -> None:
        logits = model_step(self.model, self.tok, self.states, self.block_step,
                            self.stack)                                            # (B, V)
        chosen = pick(process_logits(logits, self.params, self.seen), self.params, self.noise)
        self.out.index_copy_(1, self.index.reshape(1), chosen[:, None])       # out[:, i] = chosen
        if self.stop is not None:
            self.done |= torch.isin(chosen, self.stop)
        self.done |= self.index + 1 >= self.limit
        if self.seen is not None:
            self.seen.scatter_(1, chosen[:, None], True)
        self.tok.copy_(chosen)
        self.index.add_(1)

    def _snapshot(self) -> list[Tensor]:
        """The buffers a step changes that the next step reads (KV rows past pos are
        rewritten before they are read, so only pos is kept)."""
        keep = [self.tok, self.index, self.done]
        keep += [] if self.seen is None else [self.seen]
        if not self.layered:
            return keep + _tensors(self.states)
        for s in self.states:
            keep += [s.conv, s.ssm] if isinstance(s, MambaState) else [s.pos]
        return keep

    def _phase(self) -> int:
        return 0 if self.period == 1 else self.model.backbone.decode_phase(self.states)

    def _set_phase(self, n: int) -> None:
        if self.period not in (None, 1):
            self.model.backbone.set_decode_phase(self.states, n % self.period)

    def capture(self) -> None:
        """Warm up on a side stream, then capture the step (PyTorch's CUDA graph recipe):
        one graph, or one per phase of a periodic backbone (the pooled U-Net: prod(pool)
        graphs, each with its levels' pooling steps baked in). The buffers and the phase are
        restored afterwards, so capturing does not advance decoding."""
        saved, phase = [t.clone() for t in self._snapshot()], self._phase()
        if self.noise is not None:
            self.noise.fill_(1.0)

        def step_at(k: int):
            def step():
                self._set_phase(k)
                self._step()
            return step

        from bytessm.kernels.triton.pdl import programmatic_launch
        with programmatic_launch(self.pdl):
            graphs = capture_graphs({k: step_at(k) for k in range(self.period)}, self.device)
        for t, s in zip(self._snapshot(), saved):
            t.copy_(s)
        self._set_phase(phase)
        self.graphs = [graphs[k] for k in range(self.period)]

    def run(self, generator: torch.Generator | None = None, check_every: int = 16,
            max_steps: int | None = None) -> int:
        """Take steps until every row is done or max_new (or max_steps) steps; returns the
        steps taken. Rows are checked for completion every `check_every` steps on CUDA
        (a host sync), every step on the CPU."""
        if self.cuda_graph and self.graphs is None:
            self.capture()
        steps, until = 0, min(self.max_new, max_steps or self.max_new)
        while steps < until:
            if self.noise is not None:
                draw_noise(self.noise, generator)
            if self.graphs is not None:
                phase = self._phase()
                self.graphs[phase].replay()
                self._set_phase(phase + 1)
            else:
                self._step()
            steps += 1
            if (steps % check_every == 0 or self.device.type == "cpu") and bool(self.done.all()):
                break
        return steps


# -- the public entry point --------------------------------------------------------------

@dataclass
class GenerationResult:
    samples: list[list[int]]    # generated symbols per prompt (the prompt and stop symbol excluded)
    finished: list[str]         # per sample: "stop" (a stop symbol) or "length" (max_new)
    stats: dict = field(default_factory=dict)


def _trim(row: list[int], limit: int, stop: set[int]) -> tuple[list[int], str]:
    row = row[:limit]
    for i, s in enumerate(row):
        if s in stop:
            return row[:i], "stop"
    return row, "length"


def make_generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g


@torch.no_grad()
def generate(model: nn.Module, prompts: Sequence[Sequence[int]], *, max_new: int | Sequence[int],
             params: SamplingParams = SamplingParams(), seed: int | None = None,
             stop: Sequence[int] = (), cuda_graph: bool | None = None,
             compile_step: bool | None = None, fused_stack: bool | None = None
             ) -> GenerationResult:
    """Generate after each prompt (lists of symbols) with one batched decoder.

    `max_new` is one limit or one per prompt; a sequence also stops at the first symbol in
    `stop`. `cuda_graph` defaults to True on CUDA for every backbone whose step can be
    captured (layered stacks: one graph; the pooled U-Net: one graph per pooling phase,
    `decode_period`). `fused_stack` and `compile_step` as `Decoder`'s. Stats:
    prefill_s, capture_s (compilation included), decode_s, steps, symbols (kept),
    symbols_per_s (batch * steps / decode_s), state_bytes.
    """
    check_can_generate(model)
    device = next(model.parameters()).device
    limits = [int(max_new)] * len(prompts) if isinstance(max_new, int) else [int(m) for m in max_new]
    if len(limits) != len(prompts) or min(limits, default=0) < 0:
        raise ConfigError(f"max_new must be one integer >= 0 or one per prompt, got {max_new}")
    if not prompts or max(limits) == 0:
        return GenerationResult([[] for _ in prompts], ["length"] * len(prompts))
    longest = max(len(p) for p in prompts)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda" and decode_period(model) is not None
    decoder = Decoder(model, batch=len(prompts), max_len=max(longest - 1 + max(limits), 1),
                      max_new=max(limits), params=params, stop=stop, device=device,
                      cuda_graph=cuda_graph, compile_step=compile_step, fused_stack=fused_stack)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    decoder.load(prompts, limits)
    sync()
    t1 = time.perf_counter()
    if decoder.cuda_graph:
        decoder.capture()
        sync()
    t2 = time.perf_counter()
    steps = decoder.run(make_generator(seed, device))
    out = decoder.out[:, :steps].tolist()
    t3 = time.perf_counter()
    kept = [_trim(row, lim, set(stop)) for row, lim in zip(out, limits)]
    stats = {"prefill_s": t1 - t0, "capture_s": t2 - t1, "decode_s": t3 - t2, "steps": steps,
             "symbols": sum(len(s) for s, _ in kept),
             "symbols_per_s": len(prompts) * steps / max(t3 - t2, 1e-9),
             "state_bytes": state_bytes(decoder.states), "cuda_graph": decoder.cuda_graph,
             "compiled_step": decoder.block_step is not None,
             "fused_stack": decoder.stack is not None}
    return GenerationResult([s for s, _ in kept], [f for _, f in kept], stats)
