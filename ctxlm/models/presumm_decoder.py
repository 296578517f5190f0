"""The decoder of AliceMind's PALM release (`PalmConfig.decoder_style = "presumm"`).

AliceMind's `PALM/models/decoder.py` is PreSumm's (OpenNMT's) transformer decoder, not BART's:

- input x = E[y]·√d + sinusoid(t) (`models/encoder.py PositionalEncoding`: sin on even, cos on odd
  dimensions, base 10000), no embedding LayerNorm;
- pre-LN layers (`TransformerDecoderLayer.forward`): h = LN1(x); x = x + SelfAttn(h) (keys and values
  are LN1's output too); x = x + CrossAttn(LN2(x), memory); x = x + W2·act(W1·LN_ff(x))
  (`neural.py PositionwiseFeedForward`, tanh GELU);
- a final LayerNorm (`TransformerDecoder.layer_norm`); every decoder LayerNorm has eps 1e-6.

Parameters keep the names of ctxlm's BART layers (`self_attn_layer_norm` = the release's `layer_norm_1`,
`encoder_attn_layer_norm` = `layer_norm_2`, `final_layer_norm` = `feed_forward.layer_norm`, `fc1`/`fc2` =
`w_1`/`w_2`), only the order of the operations differs. The last layer can also return its
cross-attention weights averaged over heads: the release's copy head reads them
(`attention_copy_head.py`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..families.palm import PalmConfig
from .dropout import dropout
from .layers import Attention, KVCache, add_feed_forward, key_padding_mask


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """PreSumm's `PositionalEncoding` rows for `positions` (any shape) → (*positions.shape, dim), float32:
    row p is sin(p·w_i) on even and cos(p·w_i) on odd dimensions, w_i = 10000^(−2i/dim)."""
    div_term = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float, device=positions.device) * -(math.log(10000.0) / dim)
    )
    angles = positions.reshape(-1, 1).float() * div_term
    table = torch.zeros(angles.shape[0], dim, device=positions.device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.view(*positions.shape, dim)


def attention_with_weights(
    attn: Attention,
    x: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    p: float,
    training: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`attn(x, kv=kv, mask=mask)` computed explicitly, with its attention probabilities averaged over
    heads (B, T, S), as `neural.py MultiHeadedAttention` returns them (before dropout). `kv` and `mask`
    may have one row per group of consecutive rows of `x` (the beams of a source)."""
    b, t, _ = x.shape
    k, v = kv
    group = b // k.shape[0]
    if group > 1:
        k, v, mask = (value.repeat_interleave(group, dim=0) for value in (k, v, mask))
    q = attn.split_heads(attn.q_proj(x)) / math.sqrt(attn.head_dim)
    scores = torch.matmul(q, k.transpose(2, 3)).masked_fill(~mask, torch.finfo(q.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    context = torch.matmul(dropout(probs, p, training), v)
    out = attn.out_proj(context.transpose(1, 2).reshape(b, t, -1))
    return out, probs.mean(dim=1)


class PreLNDecoderLayer(nn.Module):
    """One layer of `PALM/models/decoder.py TransformerDecoderLayer` (see the module docstring)."""

    def __init__(
        self, d_model, heads, ffn_dim, *, dropout, attention_dropout, activation_dropout, activation_name, eps
    ):
        super().__init__()
        self.self_attn = Attention(d_model, heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.encoder_attn = Attention(d_model, heads, attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model, eps=eps)
        add_feed_forward(
            self,
            d_model,
            ffn_dim,
            dropout=dropout,
            activation_dropout=activation_dropout,
            activation_name=activation_name,
            eps=eps,
        )

    def forward(self, x, cross_kv, cross_mask, *, cache=None, layer=0, need_weights=False):
        """`cross_kv`: this layer's cross-attention keys and values, or the encoder states to project.
        Without a cache the whole target is processed at once (causal); with one, x holds the newest
        position. Returns x, and the cross-attention weights (B, T, S) when `need_weights`."""
        if isinstance(cross_kv, torch.Tensor):
            cross_kv = self.encoder_attn.project_kv(cross_kv)
        h = self.self_attn(self.self_attn_layer_norm(x), is_causal=cache is None, cache=cache, layer=layer)
        x = x + dropout(h, self.dropout, self.training)
        query = self.encoder_attn_layer_norm(x)
        weights = None
        if need_weights:
            h, weights = attention_with_weights(
                self.encoder_attn, query, cross_kv, cross_mask, self.encoder_attn.dropout, self.training
            )
        else:
            h = self.encoder_attn(query, mask=cross_mask, kv=cross_kv)
        x = x + dropout(h, self.dropout, self.training)
        h = dropout(self.act(self.fc1(self.final_layer_norm(x))), self.activation_dropout, self.training)
        x = x + dropout(self.fc2(h), self.dropout, self.training)
        return x, weights


class PresummDecoder(nn.Module):
    """PreSumm's decoder with `Decoder`'s interface (`models/palm.py`); `forward` scales the token
    embeddings by √d itself, as the release's `PositionalEncoding` does."""

    def __init__(self, cfg: PalmConfig):
        super().__init__()
        eps = cfg.decoder_layer_norm_eps if cfg.decoder_layer_norm_eps is not None else cfg.layer_norm_eps
        act = cfg.decoder_activation_function or cfg.activation_function
        self.layers = nn.ModuleList(
            PreLNDecoderLayer(
                cfg.d_model,
                cfg.decoder_attention_heads,
                cfg.decoder_ffn_dim,
                dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout,
                activation_dropout=cfg.activation_dropout,
                activation_name=act,
                eps=eps,
            )
            for _ in range(cfg.decoder_layers)
        )
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=eps)
        self.scale = math.sqrt(cfg.d_model)
        self.dropout = cfg.dropout

    def cross_kv(self, encoder_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.encoder_attn.project_kv(encoder_states) for layer in self.layers]

    def forward(
        self,
        token_embeddings,
        cross_kv,
        source_mask,
        cache: KVCache | None = None,
        position_ids=None,
        need_attention: bool = False,
    ):
        """As `Decoder.forward`; with `need_attention`, returns (states, the last layer's cross-attention
        averaged over heads (B, T, S))."""
        if position_ids is None:
            start = cache.length if cache is not None else 0
            position_ids = torch.arange(start, start + token_embeddings.shape[1], device=token_embeddings.device)
        x = token_embeddings * self.scale + sinusoid(position_ids, token_embeddings.shape[-1]).to(token_embeddings)
        x = dropout(x, self.dropout, self.training)
        cross_mask = key_padding_mask(source_mask)
        weights = None
        for i, layer in enumerate(self.layers):
            last = need_attention and i == len(self.layers) - 1
            x, weights = layer(
                x,
                cross_kv if isinstance(cross_kv, torch.Tensor) else cross_kv[i],
                cross_mask,
                cache=cache,
                layer=i,
                need_weights=last,
            )
        if cache is not None:
            cache.advance(token_embeddings.shape[1])
        x = self.layer_norm(x)
        return (x, weights) if need_attention else x
