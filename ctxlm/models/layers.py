"""Transformer building blocks shared by PALM, GLM and UniLMv2.

- `Attention`: multi-head attention on `torch.nn.functional.scaled_dot_product_attention`,
  with the q/k/v/out projection names of `transformers`' BART (so weights map by name), an
  optional additive bias (UniLMv2's relative positions) and a `KVCache` for incremental decoding.
- `KVCache`: the cache protocol every model shares: preallocated key/value buffers per layer,
  appended to in place and reordered along the batch for beam search.
- `PostLNEncoderLayer` / `PostLNDecoderLayer`: BART's (and BERT's) post-layer-norm blocks,
  parameters named as in transformers' BART.
- `LearnedPositions`: BART's learned positions with its offset of 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import attention_with_dropout, dropout
from .vocab_cross_entropy import linear_cross_entropy


def activation(name: str):
    if name == "gelu":
        return F.gelu  # exact (erf) GELU, as BERT, BART and GPT-2's "gelu" in transformers
    if name in ("gelu_new", "gelu_tanh", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unknown activation '{name}'")


class KVCache:
    """Key/value buffers for every layer of one decoder, preallocated to `max_length`.

    `keys[i]`/`values[i]` have shape (batch, heads, max_length, head_dim); `length` positions are
    filled. Layers call `append(i, k, v)` which writes at `[length, length + t)` and returns the
    filled prefix; the model calls `advance(t)` once per step after all layers ran.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        max_length: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        shape = (batch, heads, max_length, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0
        self.max_length = max_length
        self._spare: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # see `reorder`

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise RuntimeError(f"KV cache overflow: {end} > {self.max_length} positions")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, t: int) -> None:
        self.length += t

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search: the beams that survive a step; or rows repeated
        once per beam). Only the filled positions are copied, into a second set of buffers that
        then swaps with the first, so a beam-search step allocates nothing."""
        rows = index.shape[0]
        if self._spare is None or self._spare[0][0].shape[0] != rows:
            self._spare = tuple(
                [b.new_empty((rows, *b.shape[1:])) for b in store] for store in (self.keys, self.values)
            )
        for store, spare in zip((self.keys, self.values), self._spare):
            for i in range(len(store)):
                torch.index_select(store[i][:, :, : self.length], 0, index, out=spare[i][:, :, : self.length])
                store[i], spare[i] = spare[i], store[i]


class Attention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al., 2017) with BART's parameter names."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = d_model // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `memory` (cross-attention computes them once per source), laid out
        contiguously as (batch, heads, keys, head_dim) for the attention kernel."""
        return (self.split_heads(self.k_proj(memory)).contiguous(), self.split_heads(self.v_proj(memory)).contiguous())

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """`mask` is boolean (True = may attend) or additive float, broadcastable to
        (batch, heads, queries, keys). `kv` gives precomputed keys/values (cross-attention);
        otherwise they come from `x`, appended to `cache` when one is given.

        `kv` may hold fewer rows than `x` when consecutive groups of rows share their keys (the beams
        of one source in beam search): each group's queries are then stacked along the query axis
        and attend the shared keys in one call, reading them once per source instead of once per
        beam. `mask` then has one row per source."""
        b, t, _ = x.shape
        q = self.split_heads(self.q_proj(x))
        if kv is not None:
            k, v = kv
        else:
            k, v = self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))
            if cache is not None:
                k, v = cache.append(layer, k, v)
        group = b // k.shape[0]
        if group > 1:  # (sources·group, H, t, dh) → (sources, H, group·t, dh)
            q = q.reshape(k.shape[0], group, self.heads, t, self.head_dim).transpose(1, 2)
            q = q.reshape(k.shape[0], self.heads, group * t, self.head_dim)
        if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        if self.training and self.dropout > 0 and q.device.type == "cpu":  # SDPA's math path, faster dropout
            out = attention_with_dropout(q, k, v, mask, is_causal and mask is None, self.dropout)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=is_causal and mask is None,
                dropout_p=self.dropout if self.training else 0.0,
            )
        if group > 1:
            out = out.reshape(k.shape[0], self.heads, group, t, self.head_dim).transpose(1, 2)
        return self.out_proj(out.reshape(b, self.heads, t, self.head_dim).transpose(1, 2).reshape(b, t, -1))


def add_feed_forward(layer: nn.Module, d_model, ffn_dim, *, dropout, activation_dropout, activation_name, eps):
    """Give `layer` the FFN of a Transformer layer under BART's names (fc1, fc2, final_layer_norm) and its
    dropout rates; where the LayerNorm goes (before or after) is the layer's."""
    layer.fc1 = nn.Linear(d_model, ffn_dim)
    layer.fc2 = nn.Linear(ffn_dim, d_model)
    layer.final_layer_norm = nn.LayerNorm(d_model, eps=eps)
    layer.act = activation(activation_name)
    layer.dropout = dropout
    layer.activation_dropout = activation_dropout


class _PostLNBlock(nn.Module):
    """Holds the FFN of a post-LN layer under BART's names (fc1, fc2, final_layer_norm)."""

    def __init__(self, d_model, ffn_dim, *, dropout, activation_dropout, activation_name, eps):
        super().__init__()
        add_feed_forward(
            self,
            d_model,
            ffn_dim,
            dropout=dropout,
            activation_dropout=activation_dropout,
            activation_name=activation_name,
            eps=eps,
        )

    def residual(self, x: torch.Tensor, h: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        return norm(x + dropout(h, self.dropout, self.training))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = dropout(self.act(self.fc1(x)), self.activation_dropout, self.training)
        return self.residual(x, self.fc2(h), self.final_layer_norm)


class PostLNEncoderLayer(_PostLNBlock):
    """x = LN(x + SelfAttn(x)); x = LN(x + FFN(x)) — BART's encoder layer, and BERT's."""

    def __init__(
        self, d_model, heads, ffn_dim, *, dropout, attention_dropout, activation_dropout, activation_name, eps
    ):
        super().__init__(
            d_model,
            ffn_dim,
            dropout=dropout,
            activation_dropout=activation_dropout,
            activation_name=activation_name,
            eps=eps,
        )
        self.self_attn = Attention(d_model, heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.residual(x, self.self_attn(x, mask=mask), self.self_attn_layer_norm)
        return self.feed_forward(x)


class PostLNDecoderLayer(_PostLNBlock):
    """BART's decoder layer: causal self-attention, cross-attention, FFN, each post-LN."""

    def __init__(
        self, d_model, heads, ffn_dim, *, dropout, attention_dropout, activation_dropout, activation_name, eps
    ):
        super().__init__(
            d_model,
            ffn_dim,
            dropout=dropout,
            activation_dropout=activation_dropout,
            activation_name=activation_name,
            eps=eps,
        )
        self.self_attn = Attention(d_model, heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.encoder_attn = Attention(d_model, heads, attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x, cross_kv, cross_mask, *, self_mask=None, cache=None, layer=0):
        # Without a cache the whole target is processed at once: causal self-attention. With a
        # cache, x holds the newest position(s) and attends to every cached key (a multi-token
        # chunk on top of a cache must then pass an explicit `self_mask`).
        # `cross_kv`: this layer's cross-attention keys and values, or the encoder states to project
        # here (training: inside the layer's own forward, where FSDP has gathered its weights)
        if isinstance(cross_kv, torch.Tensor):
            cross_kv = self.encoder_attn.project_kv(cross_kv)
        causal = cache is None and self_mask is None
        h = self.self_attn(x, mask=self_mask, is_causal=causal, cache=cache, layer=layer)
        x = self.residual(x, h, self.self_attn_layer_norm)
        x = self.residual(x, self.encoder_attn(x, mask=cross_mask, kv=cross_kv), self.encoder_attn_layer_norm)
        return self.feed_forward(x)


class LearnedPositions(nn.Embedding):
    """Learned absolute positions with BART's offset: position p uses row p + 2.

    (fairseq reserved rows 0 and 1 for padding; RoBERTa's table has the same offset, which makes
    RoBERTa's table load as is and BERT's load shifted by two.)
    """

    offset = 2

    def __init__(self, max_positions: int, d_model: int):
        super().__init__(max_positions + self.offset, d_model)
        self.max_positions = max_positions

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        if start + length > self.max_positions:
            raise ValueError(
                f"sequence of {start + length} positions exceeds max_position_embeddings {self.max_positions}"
            )
        positions = torch.arange(start, start + length, device=self.weight.device) + self.offset
        return super().forward(positions)


class MaskedLMHead(nn.Module):
    """BERT's (and RoBERTa's) masked-LM head: dense → activation → LayerNorm → the tied token
    embedding + a bias (PALM's stage 1, UniLMv2's AE and PAR predictions)."""

    def __init__(self, d_model: int, vocab_size: int, activation_name: str, eps: float):
        super().__init__()
        self.act = activation(activation_name)
        self.dense = nn.Linear(d_model, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.act(self.dense(x)))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(x), embedding, self.bias)

    def loss(self, x: torch.Tensor, embedding: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0):
        """`token_nll` of `forward`'s logits, without them (`linear_cross_entropy`)."""
        return linear_cross_entropy(self.transform(x), embedding, self.bias, labels, label_smoothing)


def tied_logits(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, weight_t: torch.Tensor | None = None
) -> torch.Tensor:
    """x W^T + b over the vocabulary. Decoding passes `weight_t`, W^T stored contiguously (made once
    per `generate` call): with a few rows per step the product is bound by reading W, and the
    transposed layout reads it faster."""
    if weight_t is None:
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1])
    out = torch.addmm(bias, flat, weight_t) if bias is not None else flat @ weight_t
    return out.view(*x.shape[:-1], weight_t.shape[1])


def key_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, keys) 1/0 → boolean (batch, 1, 1, keys), True where a key may be attended."""
    return attention_mask.bool()[:, None, None, :]


def init_weights(module: nn.Module, std: float) -> None:
    """BERT/BART initialisation: normal(0, std) for linear and embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def embedding_scale(d_model: int, scale: bool) -> float:
    return math.sqrt(d_model) if scale else 1.0
