"""PALM's pointer-generator (Bi et al., 2020, §2.3, eqs. 2-8), on top of the decoder.

For a query state s_t and memory states h_1..h_m of the copyable tokens x_1..x_m (PALM: the
decoder state and the encoder states of the source; GLM with `copy: true`: a Part B state and the
final states of Part A's tokens; UniLMv2: a target [P] state and the source segment's final states):

    P_v(y_t)  = softmax(W_e (W_v s_t + b_v))                     (2)  W_e tied to the input embedding
    e^c_tl    = w_c^T tanh(W_m h_l + W_s s_t + b_c)              (3)  additive copy attention
    α^c_t     = softmax(e^c_t)                                   (4)
    z^c_t     = Σ_l α^c_tl h_l                                   (5)
    P_c(y_t)  = Σ_{l: x_l = y_t} α^c_tl                          (6)  attention mass of equal tokens
    P(y_t)    = λ P_v(y_t) + (1 − λ) P_c(y_t)                    (7)
    λ         = sigmoid(w_z^T z^c_t + w_s^T s_t + b_m)           (8)

The "extended vocabulary" of the paper is the vocabulary plus the source's out-of-vocabulary words;
with a subword tokenizer every source token is in the vocabulary, so the two coincide here.

The mixture is taken in probability space and returned as log-probabilities computed stably:
log P = logaddexp(log λ + log P_v, log(1 − λ) + log P_c), with log P_c = −inf (and no gradient)
where no source token matches. A row whose memory has no copyable position at all (a GLM prompt
of special tokens only) gets λ = 1 and P_c = 0: P = P_v.

Eq. (3) is B×T×S×d elementwise work. With a = W_m h_l and b = W_s s_t + b_c, the identity
tanh(a + b) = 1 − 2 / (1 + e^{2a} e^{2b}) turns it into

    e^c_tl = Σ_d w_d − 2 Σ_d w_d / (1 + A_ld B_td),   A = e^{2a} (B×S×d), B = e^{2b} (B×T×d)

— still exactly eq. (3), but one multiply-add and one division per (t, l, d) instead of a tanh,
the exponentials costing only B×(S+T)×d. `additive_scores` evaluates this form as one fused
kernel through `torch.compile` (no B×T×S×d tensor in the forward or the backward pass) when the
work is large (training) and both |a| and |b| stay ≤ 40, where e^{2a} e^{2b} cannot overflow
before it saturates and the identity is as accurate in float32 as tanh itself (absolute error
≲ 2·10⁻⁷ per term). Otherwise — small shapes (decoding, tests), larger inputs, or no working
`torch.compile` — it evaluates tanh directly in chunks of target positions, recomputing each chunk
in the backward pass (memory O(B×T×S) plus one chunk).

Training needs log P only at the labels (and, with label smoothing, its mean over the
vocabulary): `label_log_likelihood` gets both without building the B×T×V mixture, since P_c is
zero outside the source tokens (see its docstring). `forward` builds the full distribution for
decoding and scoring; the tests check that the two agree.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _python_dispatch

from ..objectives.masking import IGNORE_INDEX
from .layers import tied_logits

# Elements of one (batch, target-chunk, source, d) block of eq. (3) evaluated at once (direct tanh).
CHUNK_ELEMENTS = 1 << 24
# B×T×S×d from which eq. (3) runs as the compiled kernel; False turns the kernel off.
FUSED_MIN_ELEMENTS: int | bool = 1 << 22
# |a|, |b| up to which e^{2a}·e^{2b} is safe in float32 (e^160 overflows to inf, which still gives tanh = 1).
FUSED_MAX_INPUT = 40.0


class _AdditiveScores(torch.autograd.Function):
    """e_tl = w_c · tanh(memory_l + query_t), chunked over t; the backward pass recomputes each
    chunk's tanh instead of storing the B×T×S×d activations (checkpointing, written out by hand
    with in-place operations: about 1.4× faster than autograd's recomputation)."""

    @staticmethod
    def forward(ctx, memory, query, w_c):
        step = _chunk(memory)
        w = w_c.to(memory.dtype)
        out = memory.new_empty(memory.shape[0], query.shape[1], memory.shape[1])
        for i in range(0, query.shape[1], step):
            out[:, i : i + step] = torch.tanh_(memory.unsqueeze(1) + query[:, i : i + step].unsqueeze(2)) @ w
        ctx.save_for_backward(memory, query, w_c)
        return out

    @staticmethod
    def backward(ctx, grad):
        memory, query, w_c = ctx.saved_tensors
        step, d = _chunk(memory), memory.shape[-1]
        w = w_c.to(memory.dtype)
        grad = grad.to(memory.dtype)
        acc = torch.promote_types(memory.dtype, torch.float32)  # accumulate bf16 chunks in float32
        grad_memory = torch.zeros_like(memory, dtype=acc)
        grad_query = torch.empty_like(query)
        grad_w = torch.zeros(d, dtype=acc, device=w_c.device)
        for i in range(0, query.shape[1], step):
            h = torch.tanh_(memory.unsqueeze(1) + query[:, i : i + step].unsqueeze(2))  # (B, Tc, S, d)
            g = grad[:, i : i + step].unsqueeze(-1)
            grad_w += (h.reshape(-1, d).t() @ g.reshape(-1)).to(acc)
            h.mul_(h).neg_().add_(1).mul_(g).mul_(w)  # ∂e/∂(memory + query) = g · w · (1 − tanh²)
            grad_memory += h.sum(1, dtype=acc)
            grad_query[:, i : i + step] = h.sum(2)
        return grad_memory.to(memory.dtype), grad_query, grad_w.to(w_c.dtype)


def _chunk(memory: torch.Tensor) -> int:
    b, s, d = memory.shape
    return max(1, CHUNK_ELEMENTS // max(1, b * s * d))


def exp_form_scores(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eq. (3) from a = e^{2 W_m h} (B,S,d) and b = e^{2 (W_s s + b_c)} (B,T,d):
    e_tl = Σ_d w_d − 2 Σ_d w_d / (1 + a_ld b_td), since tanh(x + y) = 1 − 2 / (1 + e^{2x} e^{2y})."""
    return w.sum() - 2 * (w / (1 + a.unsqueeze(1) * b.unsqueeze(2))).sum(-1)


def exp_form_grads(a, b, w, grad):
    """The gradients of Σ grad·e with respect to W_m h, W_s s + b_c and w_c. With q = 1 / (1 + ab):
    tanh = 1 − 2q and tanh' = 1 − tanh² = 4q(1 − q). Two passes over (t, l, d), one division each
    (the sums over l share theirs)."""
    q = 1 / (1 + a.unsqueeze(1) * b.unsqueeze(2))  # (B, T, S, d), never materialised once compiled
    gq = grad.unsqueeze(-1) * q
    gq2 = gq * q
    over_l = gq.sum(2)
    return 4 * w * (gq - gq2).sum(1), 4 * w * (over_l - gq2.sum(2)), grad.sum() - 2 * over_l.sum((0, 1))


_kernels: dict = {}  # "forward" / "backward": exp_form_scores / exp_form_grads compiled on first use


def _compiled(name: str):
    if name not in _kernels:
        _kernels[name] = torch.compile({"forward": exp_form_scores, "backward": exp_form_grads}[name], dynamic=True)
    return _kernels[name]


class _FusedScores(torch.autograd.Function):
    """Eq. (3) by `exp_form_scores` and its backward by `exp_form_grads`, each one compiled kernel
    that keeps the B×T×S×d terms in registers; computed in float32 (or wider)."""

    @staticmethod
    def forward(ctx, memory, query, w_c):
        dtype = torch.promote_types(memory.dtype, torch.float32)
        a, b, w = torch.exp(2 * memory.to(dtype)), torch.exp(2 * query.to(dtype)), w_c.to(dtype)
        ctx.save_for_backward(a, b, w)
        ctx.dtypes = memory.dtype, query.dtype, w_c.dtype
        return _compiled("forward")(a, b, w)

    @staticmethod
    def backward(ctx, grad):
        a, b, w = ctx.saved_tensors
        grads = _compiled("backward")(a, b, w, grad.to(a.dtype).contiguous())
        return tuple(g.to(dtype) for g, dtype in zip(grads, ctx.dtypes))


_fused_usable: bool | None = None  # whether torch.compile works here (tried once, on a tiny case)


def _dispatch_mode_active() -> bool:
    """Whether a TorchDispatchMode (a FLOP counter, say) is active. torch.compile does not compile
    under one, and marks the kernels' code skipped for the rest of the process: they would then run
    eagerly, with B×T×S×d intermediates (~70× slower at PALM's training shapes, issue 20)."""
    on_stack = getattr(_python_dispatch, "any_torch_dispatch_mode_on_stack", None)  # recent torch
    return on_stack() if on_stack is not None else torch._C._len_torch_dispatch_stack() > 0


def _fused_applies(memory: torch.Tensor, query: torch.Tensor) -> bool:
    """Whether eq. (3) should run as the compiled kernel for these inputs."""
    global _fused_usable
    b, s, d = memory.shape
    if FUSED_MIN_ELEMENTS is False or _fused_usable is False or b * query.shape[1] * s * d < FUSED_MIN_ELEMENTS:
        return False
    if _dispatch_mode_active():
        return False
    with torch.no_grad():  # one host sync: are both inputs inside the identity's safe range?
        if float(torch.maximum(memory.abs().amax(), query.abs().amax())) > FUSED_MAX_INPUT:
            return False
    if _fused_usable is None:
        try:  # both kernels, before a training step depends on the backward one
            with torch.inference_mode(False), torch.enable_grad():
                trial = [
                    torch.rand(shape, device=memory.device, requires_grad=True)
                    for shape in ((2, 3, 4), (2, 5, 4), (4,))
                ]
                _FusedScores.apply(*trial).sum().backward()
            _fused_usable = True
        except Exception as error:  # no C++ compiler / Triton: the direct path
            warnings.warn(f"torch.compile of PALM's copy attention failed, using the direct tanh ({error})")
            _fused_usable = False
    return _fused_usable


def additive_scores(memory: torch.Tensor, query: torch.Tensor, w_c: torch.Tensor) -> torch.Tensor:
    """e_tl = w_c · tanh(memory_l + query_t) for memory (B,S,d) = W_m h, query (B,T,d) = W_s s + b_c."""
    if _fused_applies(memory, query):
        return _FusedScores.apply(memory, query, w_c)
    return _AdditiveScores.apply(memory, query, w_c)


def safe_log(p: torch.Tensor) -> torch.Tensor:
    """log p with −inf (and zero gradient, not NaN) where p == 0."""
    tiny = torch.finfo(p.dtype).tiny
    return torch.where(p > 0, p.clamp_min(tiny).log(), torch.full_like(p, float("-inf")))


class PointerGenerator(nn.Module):
    """The copy head. Parameter names follow the paper's symbols."""

    def __init__(self, d_model: int):
        super().__init__()
        self.W_v = nn.Linear(d_model, d_model)  # W_v, b_v of eq. (2)
        self.W_m = nn.Linear(d_model, d_model, bias=False)  # eq. (3)
        self.W_s = nn.Linear(d_model, d_model)  # W_s and b_c of eq. (3)
        self.w_c = nn.Parameter(torch.zeros(d_model))  # eq. (3)
        self.gate = nn.Linear(2 * d_model, 1)  # [w_z; w_s] and b_m of eq. (8), applied to [z_t; s_t]

    def reset_parameters(self, std: float) -> None:
        """W_v starts as the identity, so P_v starts as the tied-embedding softmax of plain BART."""
        with torch.no_grad():
            self.W_v.weight.copy_(torch.eye(self.W_v.in_features))
            self.W_v.bias.zero_()
            nn.init.normal_(self.W_m.weight, std=std)
            nn.init.normal_(self.W_s.weight, std=std)
            self.W_s.bias.zero_()
            nn.init.normal_(self.w_c, std=std)
            nn.init.normal_(self.gate.weight, std=std)
            self.gate.bias.zero_()

    def project_memory(self, memory_states: torch.Tensor) -> torch.Tensor:
        """W_m h_l: depends on the memory only, so decoding computes it once."""
        return self.W_m(memory_states)

    def copy_attention(self, s, memory_states, projected, memory_mask):
        """α (eqs. 3-4, float32) and the gate's log λ and log(1 − λ) (eqs. 5 and 8). A row with no
        copyable position gets α = 0, log λ = 0 and log(1 − λ) = −inf (P = P_v)."""
        scores = additive_scores(projected, self.W_s(s), self.w_c).float()  # eq. (3)
        valid = memory_mask.bool()
        empty = ~valid.any(-1)  # (B,): nothing to copy; its row of scores stays finite (no NaN)
        scores = scores.masked_fill(~(valid | empty[:, None])[:, None, :], float("-inf"))
        alpha = torch.softmax(scores, dim=-1) * valid[:, None, :]  # eq. (4); exactly 0 on masked positions
        z = alpha.to(memory_states.dtype) @ memory_states  # eq. (5)
        gate = self.gate(torch.cat([z, s], dim=-1)).float().squeeze(-1)  # eq. (8), before the sigmoid
        empty = empty[:, None]
        return alpha, F.logsigmoid(gate).masked_fill(empty, 0.0), F.logsigmoid(-gate).masked_fill(empty, float("-inf"))

    def label_log_likelihood(
        self,
        decoder_states,
        memory_states,
        projected,
        memory_ids,
        memory_mask,
        embedding,
        logits_bias,
        labels,
        smoothing: bool = False,
    ):
        """log P(y_t) at the labels (B, T) and, if `smoothing`, the mean of log P over the vocabulary
        (B, T) — without a B×T×V mixture.

        With a = log λ, b = log(1 − λ) and ℓ_v = log P_v(v): log P(v) = a + ℓ_v for every token v
        absent from the source, so Σ_v log P(v) = V·a + Σ_v ℓ_v + Σ_{v in source} softplus(b +
        log P_c(v) − a − ℓ_v); the last sum runs over source positions l weighted by 1/(occurrences
        of x_l), and P_c(x_l) = Σ_l' α_l' [x_l' = x_l]."""
        s, source_ids, source_mask = decoder_states, memory_ids, memory_mask
        hidden = self.W_v(s)
        vocab_logits = F.linear(hidden, embedding, logits_bias).float()  # eq. (2)
        alpha, a, b = self.copy_attention(s, memory_states, projected, memory_mask)
        target = labels.clamp_min(0)
        # log P_v(y): cross-entropy's fused log-softmax and gather (and its backward)
        log_pv_y = -F.cross_entropy(vocab_logits.flatten(0, -2), target.flatten(), reduction="none").view_as(target)
        p_copy_y = (alpha * (source_ids[:, None, :] == target[..., None])).sum(-1)  # eq. (6) at y
        log_p_y = torch.logaddexp(a + log_pv_y, b + safe_log(p_copy_y))  # eq. (7)
        if not smoothing:
            return log_p_y, None
        # x_y and x_l of the source tokens in one gather (one B×T×V scatter in the backward pass)
        index = torch.cat([target[..., None], source_ids[:, None, :].expand(-1, s.shape[1], -1)], dim=-1)
        picked = vocab_logits.gather(-1, index)
        lse = picked[..., 0] - log_pv_y  # log Σ_v e^{x_v} = x_y − log P_v(y): no second pass over B×T×V
        valid = source_mask.bool()
        same = (source_ids[:, :, None] == source_ids[:, None, :]) & valid[:, :, None] & valid[:, None, :]
        p_copy_src = alpha @ same.float()  # P_c(x_l) for every source position: (B, T, S)
        weight = valid.float() / same.sum(-1).clamp_min(1)  # each distinct source token counted once
        log_pv_src = picked[..., 1:] - lse[..., None]
        correction = F.softplus(b[..., None] + safe_log(p_copy_src) - a[..., None] - log_pv_src)
        vocab = vocab_logits.shape[-1]
        # Σ_v x_v = (W_v s)·Σ_v W_e[v] + Σ_v b_v, in float32 without a pass over B×T×V
        logit_sum = (hidden.float() * embedding.sum(0, dtype=torch.float32)).sum(-1)
        if logits_bias is not None:
            logit_sum = logit_sum + logits_bias.sum(dtype=torch.float32)
        total = vocab * a + logit_sum - vocab * lse + (correction * weight[:, None, :]).sum(-1)
        return log_p_y, total / vocab

    def forward(
        self,
        decoder_states: torch.Tensor,  # s: (B, T, d)
        memory_states: torch.Tensor,  # h: (B, S, d)
        projected: torch.Tensor,  # W_m h: (B, S, d)
        memory_ids: torch.Tensor,  # x: (B, S)
        memory_mask: torch.Tensor,  # (B, S) 1 for copyable tokens
        embedding: torch.Tensor,  # W_e: (V, d)
        logits_bias: torch.Tensor | None = None,  # (V,)
        embedding_t: torch.Tensor | None = None,  # W_e^T stored contiguously (decoding; see tied_logits)
    ) -> torch.Tensor:
        """log P(y_t) over the vocabulary: (B, T, V), float32."""
        s = decoder_states
        vocab_logits = tied_logits(self.W_v(s), embedding, logits_bias, embedding_t)  # eq. (2), before the softmax
        log_p_vocab = F.log_softmax(vocab_logits.float(), dim=-1)
        alpha, log_lambda, log_one_minus = self.copy_attention(s, memory_states, projected, memory_mask)
        b, t, _ = alpha.shape
        p_copy = alpha.new_zeros(b, t, embedding.shape[0])
        p_copy.scatter_add_(2, memory_ids[:, None, :].expand(b, t, -1), alpha)  # eq. (6)
        return torch.logaddexp(  # eq. (7), in log space
            log_lambda[..., None] + log_p_vocab,
            log_one_minus[..., None] + safe_log(p_copy),
        )


def copy_token_nll(
    pointer: PointerGenerator,
    decoder_states,
    memory_states,
    memory_ids,
    memory_mask,
    embedding,
    logits_bias,
    labels,
    label_smoothing: float = 0.0,
):
    """`losses.token_nll` of the eq. (7) mixture, computed at the labels (`label_log_likelihood`):
    the (label-smoothed) loss sum, the detached NLL sum and the number of labels ≠ IGNORE_INDEX."""
    log_p_y, mean_log_p = pointer.label_log_likelihood(
        decoder_states,
        memory_states,
        pointer.project_memory(memory_states),
        memory_ids,
        memory_mask,
        embedding,
        logits_bias,
        labels,
        smoothing=label_smoothing > 0,
    )
    keep = labels != IGNORE_INDEX
    count = keep.sum()
    nll = -log_p_y[keep]
    loss = nll.sum()
    if label_smoothing > 0:
        loss = (1 - label_smoothing) * loss - label_smoothing * mean_log_p[keep].sum()
    return loss, nll.detach().sum(), count


def select_positions(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The True positions of each row of `keep` (B, L), packed to the left in order: index (B, W),
    W the largest count, and valid (B, W), False past a row's count (where index points at one of
    its other positions). One-sequence models (GLM, UniLMv2) gather the copy memory and the query
    states out of their sequence with it."""
    counts = keep.sum(1)
    width = int(counts.max()) if keep.numel() else 0
    index = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    return index, torch.arange(width, device=keep.device) < counts[:, None]


def gather_positions(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[b, index[b, j]] for (B, L) or (B, L, d) `values`."""
    if values.dim() == 2:
        return values.gather(1, index)
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def gather_labelled(states: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The states (B, T, d) and labels (B, T) of each row's labelled positions (labels ≠
    IGNORE_INDEX) packed to the left; IGNORE_INDEX past a row's count."""
    index, valid = select_positions(labels != IGNORE_INDEX)
    return gather_positions(states, index), gather_positions(labels, index).masked_fill(~valid, IGNORE_INDEX)
