"""PALM (Bi et al., 2020): a BART-shaped transformer encoder-decoder, the pointer-generator on the
decoder (eqs. 2-8, in `pointer_generator.py`) and a masked-LM head on the encoder (stage 1).

Parameter names are those of `transformers.BartForConditionalGeneration` without its `model.`
prefix (`shared`, `encoder.layers.0.self_attn.q_proj`, ..., `final_logits_bias`), so weights map
by name (`ctxlm.models.hf`). With `copy=False` the model is a plain BART.

The AliceMind release's architecture is a set of config options (`decoder_style="presumm"`,
`tie_decoder_embedding=False`, `copy_head="attention"`; `presumm_decoder.py`, `attention_copy_head.py`,
`ctxlm/official/palm.py`); the defaults are the paper's BART-shaped model.

Decoding speaks the `KVCache` protocol (see `generation.py`): `start_decoding` encodes the source
once (cross-attention keys/values and the copy head's W_m h included) and `decode_step` feeds one
token per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..families.palm import PalmConfig
from ..errors import CtxlmError
from ..objectives.masking import IGNORE_INDEX
from .attention_copy_head import AttentionCopyHead
from .dropout import dropout
from .layers import (
    KVCache,
    LearnedPositions,
    MaskedLMHead,
    PostLNDecoderLayer,
    PostLNEncoderLayer,
    embedding_scale,
    init_weights,
    key_padding_mask,
    tied_logits,
)
from .losses import batch_loss, label_counts, token_nll
from .pointer_generator import PointerGenerator, copy_token_nll
from .presumm_decoder import PresummDecoder
from .pretrained import PretrainedMixin
from .vocab_cross_entropy import linear_cross_entropy


def _layer_kwargs(cfg: PalmConfig) -> dict:
    return dict(
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        activation_name=cfg.activation_function,
        eps=cfg.layer_norm_eps,
    )


class Encoder(nn.Module):
    def __init__(self, cfg: PalmConfig):
        super().__init__()
        self.embed_positions = LearnedPositions(cfg.max_position_embeddings, cfg.d_model)
        self.layernorm_embedding = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(
            PostLNEncoderLayer(cfg.d_model, cfg.encoder_attention_heads, cfg.encoder_ffn_dim, **_layer_kwargs(cfg))
            for _ in range(cfg.encoder_layers)
        )
        self.dropout = cfg.dropout

    def forward(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = token_embeddings + self.embed_positions(token_embeddings.shape[1])
        x = dropout(self.layernorm_embedding(x), self.dropout, self.training)
        mask = key_padding_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class Decoder(nn.Module):
    def __init__(self, cfg: PalmConfig):
        super().__init__()
        self.embed_positions = LearnedPositions(cfg.max_position_embeddings, cfg.d_model)
        self.layernorm_embedding = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(
            PostLNDecoderLayer(cfg.d_model, cfg.decoder_attention_heads, cfg.decoder_ffn_dim, **_layer_kwargs(cfg))
            for _ in range(cfg.decoder_layers)
        )
        self.dropout = cfg.dropout

    def cross_kv(self, encoder_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.encoder_attn.project_kv(encoder_states) for layer in self.layers]

    def forward(self, token_embeddings, cross_kv, source_mask, cache: KVCache | None = None, position_ids=None):
        """`cross_kv`: per-layer keys and values (`cross_kv(encoder_states)`, decoding), or the
        encoder states themselves (each layer projects them). `position_ids` (B, T): explicit
        positions (MASS's span keeps its place in the sentence); default 0, 1, ... (after the
        cache's tokens when decoding)."""
        if position_ids is not None:
            positions = self.embed_positions
            if int(position_ids.max()) >= positions.max_positions:
                raise ValueError(
                    f"decoder position {int(position_ids.max())} exceeds max_position_embeddings "
                    f"{positions.max_positions}"
                )
            x = token_embeddings + F.embedding(position_ids + positions.offset, positions.weight)
        else:
            start = cache.length if cache is not None else 0
            x = token_embeddings + self.embed_positions(token_embeddings.shape[1], start)
        x = dropout(self.layernorm_embedding(x), self.dropout, self.training)
        cross_mask = key_padding_mask(source_mask)
        for i, layer in enumerate(self.layers):
            x = layer(
                x, cross_kv if isinstance(cross_kv, torch.Tensor) else cross_kv[i], cross_mask, cache=cache, layer=i
            )
        if cache is not None:
            cache.advance(token_embeddings.shape[1])
        return x


@dataclass
class Seq2SeqOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]  # detached per-objective losses and token counts
    log_probs: torch.Tensor | None = None
    loss_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # see `batch_loss`


@dataclass
class DecodingState:
    """What `decode_step` needs: the self-attention cache has batch × beams rows; the encoder
    states, source and cross-attention keys/values one row per source."""

    cache: KVCache
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]
    encoder_states: torch.Tensor
    source_ids: torch.Tensor
    source_mask: torch.Tensor
    copy_inputs: tuple | None  # the copy head's (h, x, source mask, W_m h), one row per beam (the release's
    # attention copy head: (h, x))
    embedding_t: torch.Tensor | None = None  # the output embedding transposed (see layers.tied_logits)


def check_release_options(cfg: PalmConfig) -> None:
    if cfg.decoder_style not in ("bart", "presumm"):
        raise CtxlmError(f"PalmConfig.decoder_style is '{cfg.decoder_style}'; expected 'bart' or 'presumm'")
    if cfg.copy_head not in ("pointer", "attention"):
        raise CtxlmError(f"PalmConfig.copy_head is '{cfg.copy_head}'; expected 'pointer' or 'attention'")
    if cfg.copy and cfg.copy_head == "attention" and cfg.decoder_style != "presumm":
        raise CtxlmError("PalmConfig.copy_head 'attention' reads the cross-attention of decoder_style 'presumm'")
    if cfg.decoder_style == "bart" and (
        cfg.decoder_layer_norm_eps is not None or cfg.decoder_activation_function is not None
    ):
        raise CtxlmError(
            "PalmConfig.decoder_layer_norm_eps / decoder_activation_function apply to decoder_style 'presumm' only"
        )


class PalmModel(PretrainedMixin, nn.Module):
    def __init__(self, cfg: PalmConfig):
        super().__init__()
        check_release_options(cfg)
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_token_id)
        self.embed_scale = embedding_scale(cfg.d_model, cfg.scale_embedding)
        self.encoder = Encoder(cfg)
        self.decoder = PresummDecoder(cfg) if cfg.decoder_style == "presumm" else Decoder(cfg)
        if cfg.tie_decoder_embedding:
            self.register_buffer("final_logits_bias", torch.zeros(1, cfg.vocab_size))
        else:  # the release: `decoder.embeddings` is its own matrix and the output layer's bias is trained
            self.decoder.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_token_id)
            self.final_logits_bias = nn.Parameter(torch.zeros(1, cfg.vocab_size))
        self.pointer = PointerGenerator(cfg.d_model) if cfg.copy and cfg.copy_head == "pointer" else None
        self.attention_copy = AttentionCopyHead(cfg.d_model) if cfg.copy and cfg.copy_head == "attention" else None
        self.mlm_head = MaskedLMHead(cfg.d_model, cfg.vocab_size, cfg.mlm_head_activation, cfg.layer_norm_eps)
        init_weights(self, cfg.init_std)
        if self.pointer is not None:
            self.pointer.reset_parameters(cfg.init_std)
        if self.attention_copy is not None:
            self.attention_copy.reset_parameters()

    # ----------------------------------------------------------------------------- pieces
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.shared(ids) * self.embed_scale

    def embed_target(self, ids: torch.Tensor) -> torch.Tensor:
        """The decoder's input embedding (a presumm decoder scales it by √d itself)."""
        table = self.shared if self.config.tie_decoder_embedding else self.decoder.embed_tokens
        return table(ids) if self.config.decoder_style == "presumm" else table(ids) * self.embed_scale

    @property
    def output_embedding(self) -> torch.Tensor:
        """E of the output layer x·Eᵀ + b: the shared embedding, or the decoder's own."""
        return self.shared.weight if self.config.tie_decoder_embedding else self.decoder.embed_tokens.weight

    def run_decoder(self, decoder_input_ids, cross, source_mask, cache=None, position_ids=None):
        """(decoder states, the last layer's head-averaged cross-attention or None): the attention is
        returned only for the release's copy head, which reads it."""
        embedded = self.embed_target(decoder_input_ids)
        if self.attention_copy is None:
            return self.decoder(embedded, cross, source_mask, cache, position_ids=position_ids), None
        return self.decoder(embedded, cross, source_mask, cache, position_ids=position_ids, need_attention=True)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        return self.encoder(self.embed(input_ids), attention_mask)

    @property
    def copies(self) -> bool:
        return self.pointer is not None or self.attention_copy is not None

    def output_scores(
        self,
        decoder_states,
        encoder_states,
        source_ids,
        source_mask,
        copy_memory=None,
        embedding_t=None,
        attention=None,
    ):
        """Next-token scores: logits of the output softmax (copy off, as transformers' BART) or the
        log-probabilities of a copy mixture (eq. 7, or the release's; `attention`: its decoder
        cross-attention, see `run_decoder`). Either is a valid input to cross-entropy and to a
        log-softmax. `embedding_t`: see `layers.tied_logits`."""
        if self.attention_copy is not None:
            return self.attention_copy(
                decoder_states,
                attention,
                encoder_states,
                source_ids,
                self.output_embedding,
                self.final_logits_bias[0],
                embedding_t,
            )
        if self.pointer is None:
            return tied_logits(decoder_states, self.output_embedding, self.final_logits_bias[0], embedding_t)
        if copy_memory is None:
            copy_memory = self.pointer.project_memory(encoder_states)
        return self.pointer(
            decoder_states,
            encoder_states,
            copy_memory,
            source_ids,
            source_mask,
            self.output_embedding,
            self.final_logits_bias[0],
            embedding_t,
        )

    def output_log_probs(
        self,
        decoder_states,
        encoder_states,
        source_ids,
        source_mask,
        copy_memory=None,
        embedding_t=None,
        attention=None,
    ):
        """log P(y_t | y_<t, x) over the vocabulary, float32."""
        scores = self.output_scores(
            decoder_states, encoder_states, source_ids, source_mask, copy_memory, embedding_t, attention
        )
        return scores.float() if self.copies else F.log_softmax(scores.float(), dim=-1)

    def logits(self, input_ids, decoder_input_ids, attention_mask=None) -> torch.Tensor:
        """`output_scores` for a whole decoder input (B, T, V)."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        enc = self.encode(input_ids, attention_mask)
        dec, attention = self.run_decoder(decoder_input_ids, enc, attention_mask)
        return self.output_scores(dec, enc, input_ids, attention_mask, attention=attention)

    def copy_loss(self, decoder_states, encoder_states, source_ids, source_mask, labels, label_smoothing=0.0):
        """`token_nll` of the eq. (7) mixture, computed at the labels (`label_log_likelihood`)."""
        return copy_token_nll(
            self.pointer,
            decoder_states,
            encoder_states,
            source_ids,
            source_mask,
            self.output_embedding,
            self.final_logits_bias[0],
            labels,
            label_smoothing,
        )

    def mlm_logits(self, encoder_states: torch.Tensor) -> torch.Tensor:
        return self.mlm_head(encoder_states, self.shared.weight)

    # ----------------------------------------------------------------------------- training
    LABEL_FIELDS = {"mlm": "mlm_labels", "lm": "labels"}

    def target_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Labelled tokens per objective of a batch (the `<name>_tokens` that `forward` reports)."""
        return label_counts(batch, self.LABEL_FIELDS)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        mlm_weight: float = 1.0,
        label_smoothing: float = 0.0,
        return_log_probs: bool = False,
        copy_source_ids: torch.Tensor | None = None,
        decoder_position_ids: torch.Tensor | None = None,
    ) -> Seq2SeqOutput:
        """Stage 1 (MLM): pass `mlm_labels` only. Stage 2 / fine-tuning: `decoder_input_ids` and
        `labels` (eq. 1), optionally with `mlm_labels` weighted by `mlm_weight`. `copy_source_ids`:
        the tokens x_l the copy head copies (eq. 6) when `input_ids` is a masked source (default:
        `input_ids`; see `objectives.palm`). `decoder_position_ids`: explicit decoder positions
        (MASS, `objectives.mass`; default 0, 1, ...)."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        enc = self.encode(input_ids, attention_mask)
        sums: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        log_probs = None
        if mlm_labels is not None:
            keep = mlm_labels != IGNORE_INDEX
            mlm_loss, mlm_sum, mlm_count = self.mlm_head.loss(enc[keep], self.shared.weight, mlm_labels[keep])
            sums["mlm"] = (mlm_weight if labels is not None else 1.0) * mlm_loss
            metrics.update(mlm_nll_sum=mlm_sum, mlm_tokens=mlm_count)
        if labels is not None:
            if decoder_input_ids is None:
                raise ValueError("labels need decoder_input_ids")
            dec, attention = self.run_decoder(decoder_input_ids, enc, attention_mask, position_ids=decoder_position_ids)
            copied = input_ids if copy_source_ids is None else copy_source_ids
            if self.pointer is not None and not return_log_probs:  # PALM's mixture, at the labels only
                lm_loss, lm_sum, lm_count = self.copy_loss(dec, enc, copied, attention_mask, labels, label_smoothing)
            elif self.attention_copy is None and not return_log_probs:  # the softmax's loss without B×T×V logits
                lm_loss, lm_sum, lm_count = linear_cross_entropy(
                    dec, self.output_embedding, self.final_logits_bias[0], labels, label_smoothing
                )
            else:  # the release's copy head builds its B×T×V mixture, as the official loss does
                scores = self.output_scores(dec, enc, copied, attention_mask, attention=attention)
                lm_loss, lm_sum, lm_count = token_nll(scores, labels, label_smoothing)
                if return_log_probs:
                    log_probs = scores.float() if self.copies else F.log_softmax(scores.float(), -1)
            sums["lm"] = lm_loss
            metrics.update(lm_nll_sum=lm_sum, lm_tokens=lm_count)
        loss = batch_loss(sums, {name: metrics[f"{name}_tokens"] for name in sums})
        if loss is None:
            loss = enc.new_zeros((), dtype=torch.float32)
        return Seq2SeqOutput(loss=loss, metrics=metrics, log_probs=log_probs, loss_sums=sums)

    # ----------------------------------------------------------------------------- decoding
    def start_decoding(self, input_ids, attention_mask=None, *, num_beams: int = 1, max_length: int = 128):
        """Encode the source once. The self-attention cache has batch × num_beams rows; the encoder
        states, cross-attention keys/values and the copy head's W_m h stay one row per source
        (the beams of a source share them; see `Attention`)."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        enc = self.encode(input_ids, attention_mask)
        cfg = self.config
        cache = KVCache(
            cfg.decoder_layers,
            enc.shape[0] * num_beams,
            cfg.decoder_attention_heads,
            cfg.d_model // cfg.decoder_attention_heads,
            max_length,
            enc.dtype,
            enc.device,
        )
        copy_inputs = None
        if self.pointer is not None:  # one query per beam row: expand the copy head's inputs once
            copy_inputs = tuple(
                t.repeat_interleave(num_beams, dim=0)
                for t in (enc, input_ids, attention_mask, self.pointer.project_memory(enc))
            )
        elif self.attention_copy is not None:
            copy_inputs = tuple(t.repeat_interleave(num_beams, dim=0) for t in (enc, input_ids))
        return DecodingState(
            cache,
            self.decoder.cross_kv(enc),
            enc,
            input_ids,
            attention_mask,
            copy_inputs,
            self.output_embedding.t().contiguous(),
        )

    def decode_step(self, state: DecodingState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed `tokens` (N,) — one per row — and return log P of the next token (N, V)."""
        dec, attention = self.run_decoder(tokens[:, None], state.cross_kv, state.source_mask, state.cache)
        if self.attention_copy is not None:
            encoder_states, source_ids = state.copy_inputs
            return self.output_log_probs(
                dec, encoder_states, source_ids, None, embedding_t=state.embedding_t, attention=attention
            )[:, -1]
        if self.pointer is None:
            return self.output_log_probs(dec, None, None, None, embedding_t=state.embedding_t)[:, -1]
        return self.output_log_probs(dec, *state.copy_inputs, embedding_t=state.embedding_t)[:, -1]

    def reorder(self, state: DecodingState, index: torch.Tensor) -> None:
        """Beam search kept rows `index`: only the self-attention cache depends on the history
        (the rows of one source share its encoder states, so those need no reordering)."""
        state.cache.reorder(index)

    @property
    def decoder_start_token_id(self) -> int:
        return self.config.decoder_start_token_id

    @property
    def eos_token_id(self) -> int:
        return self.config.eos_token_id
