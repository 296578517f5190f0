"""GLM (Du et al., 2021, arXiv 2103.10360): one transformer trained by autoregressive blank infilling.

The input is Part A (the corrupted text, each blank one mask token) followed by Part B (the blanked
spans, each `[sop] s1 .. sk`); see `ctxlm.objectives.glm` for the layout. The model (§2.3, "Model
Architecture"):

* token embedding + two learned position tables, both added: `position_ids` (position in the
  corrupted text; a Part B token takes its mask's position) and `block_position_ids` (0 over Part A,
  1, 2, ... inside a Part B span) - the "2D positional encoding";
* pre-LN transformer layers (GLM rearranges LayerNorm and the residual: x + Attn(LN(x)),
  x + FFN(LN(x))), GeLU, a final LayerNorm, and a single linear output layer tied to the embedding;
* self-attention (Figure 2(d)): Part A attends to all of Part A and nothing of Part B, Part B to
  Part A and to the Part B tokens up to itself. The mask is built per example from `part_a_length`
  and handed to `scaled_dot_product_attention`.

Decoding (§2.3: "the given context constitutes Part A with a mask token appended at the end; the
model generates Part B autoregressively") speaks the `KVCache` protocol of `ctxlm.generation`:
Part A is encoded once into the cache, then every Part B token is appended at the mask's position
with block positions 1, 2, ... Text infilling (`ctxlm.tasks.infilling`) and cloze scoring (`ctxlm.tasks.cloze`)
build on it.

THUDM's releases (`ctxlm.official.glm`) need three options, all off by default: `decode_blank "first"`
(their code fills a prompt's first blank), `smask_token_id` / `gmask_token_id` None (glm-large has
neither: seq2seq prompts end in [MASK]) and an explicit (B, 1, T, T) 0/1 `attention_mask` that replaces
the mask built from `part_a_length` (multiple-choice and multi-span inputs).

Copy head (`GlmConfig.copy`, off by default; ctxlm's extension, not in the GLM paper): PALM's
pointer-generator (Bi et al., 2020, eqs. 2-8, `pointer_generator.py`) on top of the last layer, so
that GLM can be compared with PALM at equal output heads. The query s_t is a Part B position's
final state (the vector the tied output layer reads); the memory h_l are the final states of Part
A's tokens, the context Part B is generated from. Only ordinary tokens are copyable: [MASK],
[sMASK], [gMASK], [sop], [eop], [CLS], [SEP] and padding get no copy attention (P_c gives mass
only to tokens actually in Part A), unlike PALM, whose copy head also attends its source's [CLS]
and [SEP]: in GLM the end token [eop] is never in Part A, so copying a special token could only
waste probability. (The sentinel ablation's sentinel ids are not in the config and stay copyable.)
Part B tokens of earlier blanks are not in the memory. P_v = softmax(W_e (W_v s_t + b_v)) starts
(W_v = I, b_v = 0) as GLM's own tied softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..families.glm import GlmConfig
from ..errors import CtxlmError
from ..objectives.glm import GlmTokens
from ..objectives.masking import IGNORE_INDEX
from .dropout import dropout
from .layers import Attention, KVCache, activation, init_weights
from .losses import batch_loss, label_counts
from .pointer_generator import PointerGenerator, copy_token_nll, gather_labelled, gather_positions, select_positions
from .pretrained import PretrainedMixin
from .vocab_cross_entropy import linear_cross_entropy


def glm_tokens(cfg: GlmConfig) -> GlmTokens:
    """The special-token ids of a GLM config, as the objectives take them."""
    return GlmTokens(
        mask=cfg.mask_token_id,
        smask=cfg.smask_token_id,
        gmask=cfg.gmask_token_id,
        sop=cfg.sop_token_id,
        eop=cfg.eop_token_id,
        cls=cfg.bos_token_id,
        eos=cfg.eos_token_id,
        pad=cfg.pad_token_id,
    )


def glm_attention_mask(
    part_a_length: torch.Tensor, length: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """GLM's self-attention mask (Figure 2(d)), boolean (B, 1, T, T), True where a query may attend.

    Query q of example b sees key k if k < part_a_length[b] (all of Part A), or if q is in Part B and
    k <= q (causal Part B). `attention_mask` (B, T) of 1/0 removes padding keys. Every query keeps
    itself, so a padding row never has all keys masked (which would make SDPA return NaN); real
    tokens always see themselves anyway.

    Right padding after Part B needs no `attention_mask`: no Part A query looks past Part A and no
    Part B query looks ahead, so trailing padding is never attended.
    """
    index = torch.arange(length, device=part_a_length.device)
    query, key = index[:, None], index[None, :]
    sep = part_a_length.view(-1, 1, 1)
    allowed = (key < sep) | ((query >= sep) & (key <= query))
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, :]
    return (allowed | (query == key))[:, None]


def explicit_attention_mask(matrix: torch.Tensor) -> torch.Tensor:
    """A caller's (B, 1, T, T) 0/1 mask (THUDM's multiple-choice / multi-span inputs; 1 = may attend)
    as a boolean mask. THUDM computes `scores * m - 65504 * (1 - m)`, the same softmax as leaving the
    masked keys out on every row that sees a key; a row that sees none (padding) keeps its own key,
    so that SDPA returns no NaN (THUDM's row is uniform there)."""
    if matrix.dim() != 4 or matrix.shape[1] != 1 or matrix.shape[2] != matrix.shape[3]:
        raise CtxlmError(f"a GLM attention matrix must be (B, 1, T, T), got {tuple(matrix.shape)}")
    allowed = matrix.bool()
    empty = ~allowed.any(-1, keepdim=True)
    eye = torch.eye(matrix.shape[-1], dtype=torch.bool, device=matrix.device)
    return allowed | (empty & eye)


def key_padding(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The (B, T) key mask of `attention_mask`, None for an explicit (B, 1, T, T) matrix."""
    return attention_mask if attention_mask is None or attention_mask.dim() == 2 else None


@dataclass
class GlmOutput:
    loss: torch.Tensor | None
    metrics: dict[str, torch.Tensor]  # lm_nll_sum, lm_tokens (detached)
    hidden_states: torch.Tensor | None = None
    loss_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # see `losses.batch_loss`


@dataclass
class GlmDecodingState:
    """What `decode_step` needs, for batch × beams rows."""

    cache: KVCache
    key_mask: torch.Tensor  # (N, cache capacity): False for Part A padding keys
    mask_position: torch.Tensor  # (N,) first position of the Part B tokens (the blank's index)
    step: int = 0  # Part B tokens fed so far; the next one has block position step + 1
    copy_inputs: tuple | None = None  # the copy head's (h, W_m h, x, mask) of Part A, one row per beam


class GlmLayer(nn.Module):
    """One pre-LN transformer layer (GLM §2.3): x + Attn(LN(x)), then x + FFN(LN(x)) with GeLU."""

    def __init__(self, cfg: GlmConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attention = Attention(cfg.d_model, cfg.num_heads, cfg.attention_dropout)
        self.post_attention_layernorm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.d_model)
        self.act = activation(cfg.activation_function)
        self.dropout = cfg.dropout

    def forward(self, x, mask, cache: KVCache | None = None, layer: int = 0):
        h = self.attention(self.input_layernorm(x), mask=mask, cache=cache, layer=layer)
        x = x + dropout(h, self.dropout, self.training)
        h = self.fc2(self.act(self.fc1(self.post_attention_layernorm(x))))
        return x + dropout(h, self.dropout, self.training)


class GlmModel(PretrainedMixin, nn.Module):
    def __init__(self, cfg: GlmConfig):
        super().__init__()
        self.config = cfg
        if cfg.decode_blank not in ("first", "last"):
            raise CtxlmError(f"GlmConfig.decode_blank must be 'first' or 'last', got {cfg.decode_blank!r}")
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.d_model)
        self.block_position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.d_model)
        self.layers = nn.ModuleList(GlmLayer(cfg) for _ in range(cfg.num_layers))
        self.final_layernorm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        init_weights(self, cfg.init_std)
        # GPT-2 / Megatron (as THUDM/GLM): layers writing into the residual start at std / sqrt(2L)
        for layer in self.layers:
            for linear in (layer.attention.out_proj, layer.fc2):
                nn.init.normal_(linear.weight, std=cfg.init_std / math.sqrt(2 * cfg.num_layers))
        self.pointer = None  # made last: the other weights are those of the same seed without copy
        if cfg.copy:
            self.pointer = PointerGenerator(cfg.d_model)
            self.pointer.reset_parameters(cfg.init_std)

    # ----------------------------------------------------------------------------- pieces
    def embed(self, input_ids, position_ids, block_position_ids, inputs_embeds=None) -> torch.Tensor:
        """Token embedding + the two position embeddings (§2.3, 2D positional encoding), dropout."""
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.position_embeddings(position_ids) + self.block_position_embeddings(block_position_ids)
        return dropout(x, self.config.dropout, self.training)

    def run(self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The layers and the final LayerNorm; with a cache, `x` is appended to it."""
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache, i)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.final_layernorm(x)

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The single linear output layer, tied to the token embedding (§2.3)."""
        return F.linear(hidden, self.word_embeddings.weight)

    def copyable(self, ids: torch.Tensor) -> torch.Tensor:
        """Whether the copy head may copy each token: all but GLM's special tokens and padding."""
        cfg = self.config
        special = [
            cfg.pad_token_id,
            cfg.bos_token_id,
            cfg.eos_token_id,
            cfg.mask_token_id,
            cfg.sop_token_id,
            cfg.eop_token_id,
            cfg.smask_token_id,
            cfg.gmask_token_id,
        ]
        special = torch.tensor([i for i in special if i is not None], device=ids.device)
        return ~torch.isin(ids, special)

    def copy_memory(self, hidden, input_ids, part_a_length, attention_mask=None):
        """The copy head's memory: final states (B, A, d), ids (B, A) and mask (B, A) of each row's
        copyable Part A tokens (positions < part_a_length), packed to the left."""
        keep = torch.arange(input_ids.shape[1], device=input_ids.device) < part_a_length.view(-1, 1)
        keep = keep & self.copyable(input_ids)
        attention_mask = key_padding(attention_mask)
        if attention_mask is not None:
            keep = keep & attention_mask.bool()
        index, valid = select_positions(keep)
        return gather_positions(hidden, index), gather_positions(input_ids, index), valid

    def copy_inputs(self, hidden, input_ids, part_a_length, attention_mask=None) -> tuple:
        """(h, W_m h, x, mask) of `copy_memory`, as `PointerGenerator.forward` takes them."""
        states, ids, mask = self.copy_memory(hidden, input_ids, part_a_length, attention_mask)
        return states, self.pointer.project_memory(states), ids, mask

    def next_token_log_probs(self, hidden: torch.Tensor, copy_inputs: tuple | None = None) -> torch.Tensor:
        """log P of the next token (B, T, V), float32: the tied softmax, or with the copy head the
        eq. (7) mixture over `copy_inputs`."""
        if self.pointer is None:
            return F.log_softmax(self.output_logits(hidden).float(), dim=-1)
        return self.pointer(hidden, *copy_inputs, self.word_embeddings.weight)

    def hidden_states(
        self, input_ids, position_ids, block_position_ids, part_a_length, attention_mask=None, inputs_embeds=None
    ) -> torch.Tensor:
        """Final hidden states (B, T, d). `inputs_embeds` replaces the token embeddings.

        `attention_mask` is either (B, T) 1/0 key padding on top of GLM's mask from `part_a_length`,
        or an explicit (B, 1, T, T) 0/1 matrix (`explicit_attention_mask`) that replaces it."""
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            # every position id of a GLM example is below its length (Part B reuses Part A's)
            raise ValueError(
                f"sequence of {length} tokens exceeds max_position_embeddings {self.config.max_position_embeddings}"
            )
        x = self.embed(input_ids, position_ids, block_position_ids, inputs_embeds)
        if attention_mask is not None and attention_mask.dim() == 4:
            return self.run(x, explicit_attention_mask(attention_mask))
        return self.run(x, glm_attention_mask(part_a_length, length, attention_mask))

    def log_probs(
        self, input_ids, position_ids, block_position_ids, part_a_length, attention_mask=None
    ) -> torch.Tensor:
        """log P(next token) at every position (B, T, V), float32 (with the copy head: eq. 7)."""
        h = self.hidden_states(input_ids, position_ids, block_position_ids, part_a_length, attention_mask)
        copy_inputs = None
        if self.pointer is not None:
            copy_inputs = self.copy_inputs(h, input_ids, part_a_length, attention_mask)
        return self.next_token_log_probs(h, copy_inputs)

    def label_log_probs(
        self, input_ids, position_ids, block_position_ids, part_a_length, labels, attention_mask=None
    ) -> torch.Tensor:
        """log p(labels[b, t]) (B, T), float32, 0 where labels == IGNORE_INDEX; logits are computed
        at labelled positions only."""
        h = self.hidden_states(input_ids, position_ids, block_position_ids, part_a_length, attention_mask)
        keep = labels != IGNORE_INDEX
        out = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        if self.pointer is not None:  # eq. (7) at the labels, query by query
            index, valid = select_positions(keep)
            queries, targets = gather_positions(h, index), gather_positions(labels, index)
            inputs = self.copy_inputs(h, input_ids, part_a_length, attention_mask)
            log_p_y, _ = self.pointer.label_log_likelihood(queries, *inputs, self.word_embeddings.weight, None, targets)
            return out.scatter_(1, index, log_p_y.masked_fill(~valid, 0.0))
        log_probs = F.log_softmax(self.output_logits(h[keep]).float(), dim=-1)
        out[keep] = log_probs.gather(1, labels[keep][:, None]).squeeze(1)
        return out

    # ----------------------------------------------------------------------------- training
    def target_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Labelled Part B tokens of a batch (the `lm_tokens` that `forward` reports)."""
        return label_counts(batch, {"lm": "labels"})

    def forward(
        self,
        input_ids,
        position_ids,
        block_position_ids,
        part_a_length,
        labels=None,
        attention_mask=None,
        label_smoothing: float = 0.0,
        **ignored,
    ) -> GlmOutput:
        """Autoregressive blank infilling loss (§2.1): mean NLL of the Part B labels. Extra batch
        keys (`mask_position`, ...) are ignored."""
        h = self.hidden_states(input_ids, position_ids, block_position_ids, part_a_length, attention_mask)
        if labels is None:
            return GlmOutput(loss=None, metrics={}, hidden_states=h)
        if self.pointer is not None:  # eq. (7) at the labels, memory = Part A's copyable tokens
            queries, targets = gather_labelled(h, labels)
            loss_sum, nll_sum, count = copy_token_nll(
                self.pointer,
                queries,
                *self.copy_memory(h, input_ids, part_a_length, attention_mask),
                self.word_embeddings.weight,
                None,
                targets,
                label_smoothing,
            )
        else:
            loss_sum, nll_sum, count = linear_cross_entropy(  # Part A has no labels: it costs nothing
                h, self.word_embeddings.weight, None, labels, label_smoothing
            )
        return GlmOutput(
            loss=batch_loss({"lm": loss_sum}, {"lm": count}),
            metrics={"lm_nll_sum": nll_sum, "lm_tokens": count},
            loss_sums={"lm": loss_sum},
        )

    # ----------------------------------------------------------------------------- decoding
    def blank_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) index of the blank ([MASK]/[sMASK]/[gMASK]) each row fills among its real tokens: the
        last (GLM §2.3) or, with `decode_blank` "first", the first (the hub's `build_inputs_for_generation`)."""
        cfg = self.config
        blanks = torch.tensor(glm_tokens(cfg).blanks, device=input_ids.device)
        is_blank = torch.isin(input_ids, blanks) & attention_mask
        missing = (~is_blank.any(1)).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"prompt row(s) {missing} have no [MASK]/[sMASK]/[gMASK] for Part B to fill")
        index = torch.arange(input_ids.shape[1], device=input_ids.device)
        if cfg.decode_blank == "first":
            return torch.where(is_blank, index, input_ids.shape[1]).min(1).values
        return torch.where(is_blank, index, -1).max(1).values

    def start_decoding(
        self,
        input_ids,
        attention_mask=None,
        *,
        num_beams: int = 1,
        max_length: int = 128,
        mask_positions=None,
        part_b: dict | None = None,
    ) -> GlmDecodingState:
        """Encode Part A (`input_ids`, right-padded prompts) once into a KV cache, expanded to
        batch × num_beams rows; padding keys are never attended.

        `mask_positions` (B,) names the blank each row fills (default: `blank_positions`). `part_b`
        optionally holds a Part B prefix shared by all rows - `input_ids`, `position_ids`,
        `block_position_ids`, each (P,) or (B, P) - such as blanks already filled (`infill`); it is
        causal and sees all of Part A, exactly as in training. `max_length` is the number of Part B
        tokens `decode_step` may still feed.
        """
        cfg = self.config
        b, t = input_ids.shape
        device = input_ids.device
        if t > cfg.max_position_embeddings:
            raise ValueError(f"prompt of {t} tokens exceeds max_position_embeddings {cfg.max_position_embeddings}")
        key_mask = input_ids.ne(cfg.pad_token_id) if attention_mask is None else attention_mask.bool()
        if mask_positions is None:
            mask_positions = self.blank_positions(input_ids, key_mask)
        mask_positions = torch.as_tensor(mask_positions, dtype=torch.long, device=device).reshape(b)
        ids = input_ids
        positions = torch.arange(t, device=device).expand(b, t)
        blocks = torch.zeros(b, t, dtype=torch.long, device=device)
        if part_b is not None:
            extra = [
                torch.as_tensor(part_b[k], dtype=torch.long, device=device).expand(b, -1)
                for k in ("input_ids", "position_ids", "block_position_ids")
            ]
            if extra[2].numel() and int(extra[2].max()) >= cfg.max_position_embeddings:
                raise ValueError("part_b block positions exceed max_position_embeddings")
            ids, positions, blocks = (torch.cat([a, e], 1) for a, e in zip((ids, positions, blocks), extra))
            key_mask = torch.cat([key_mask, torch.ones_like(extra[0], dtype=torch.bool)], 1)
        width = ids.shape[1]
        x = self.embed(ids, positions, blocks)
        cache = KVCache(
            cfg.num_layers, b, cfg.num_heads, cfg.d_model // cfg.num_heads, width + max_length, x.dtype, device
        )
        part_a = torch.full((b,), t, device=device)  # the padded prompt is all Part A
        h = self.run(x, glm_attention_mask(part_a, width, key_mask), cache)
        copy_inputs = None
        if self.pointer is not None:  # Part A's memory (not the part_b prefix), as in training
            copy_inputs = self.copy_inputs(h[:, :t], input_ids, part_a, key_mask[:, :t])
        if num_beams > 1:
            rows = torch.arange(b, device=device).repeat_interleave(num_beams)
            cache.reorder(rows)
            key_mask, mask_positions = key_mask[rows], mask_positions[rows]
            if copy_inputs is not None:  # one row per beam; `reorder` stays within a source, so never moves them
                copy_inputs = tuple(value[rows] for value in copy_inputs)
        key_mask = torch.cat([key_mask, key_mask.new_ones(key_mask.shape[0], max_length)], 1)
        return GlmDecodingState(cache=cache, key_mask=key_mask, mask_position=mask_positions, copy_inputs=copy_inputs)

    def decode_step(self, state: GlmDecodingState, tokens: torch.Tensor) -> torch.Tensor:
        """Append one Part B token per row - first position the mask's, block position 1, 2, ... -
        and return log P of the next token (N, V), float32."""
        state.step += 1
        if state.step >= self.config.max_position_embeddings:
            raise ValueError(f"Part B longer than max_position_embeddings {self.config.max_position_embeddings}")
        block = torch.full_like(tokens[:, None], state.step)
        x = self.embed(tokens[:, None], state.mask_position[:, None], block)
        end = state.cache.length + 1
        h = self.run(x, state.key_mask[:, None, None, :end], state.cache)
        if self.pointer is not None:
            return self.next_token_log_probs(h[:, -1:], state.copy_inputs)[:, -1]
        return F.log_softmax(self.output_logits(h[:, -1]).float(), dim=-1)

    def reorder(self, state: GlmDecodingState, index: torch.Tensor) -> None:
        """Beam search kept rows `index`."""
        state.cache.reorder(index)
        state.key_mask = state.key_mask.index_select(0, index)
        state.mask_position = state.mask_position.index_select(0, index)

    @property
    def decoder_start_token_id(self) -> int:
        return self.config.sop_token_id

    @property
    def eos_token_id(self) -> int:
        return self.config.eop_token_id
