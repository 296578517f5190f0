"""UniLMv2 (Bao et al., 2020): a BERT-shaped post-LN transformer with T5-style bucketed relative
position bias, trained as a pseudo-masked LM (PMLM). Section, equation, figure and table numbers
refer to the paper (/work/shared/papers/unilmv2.md).

One stack serves every use:

* pre-training (§3.2-3.3): `forward(ae_labels=..., par_labels=...)` reads the autoencoding (AE)
  predictions at the in-place [M] positions and the partially autoregressive (PAR) predictions at
  the appended [P] positions of ONE forward pass; loss L_AE + L_PAR (eq. 7);
* sequence-to-sequence fine-tuning (§3.4): `forward(labels=...)` on the `build_seq2seq_example`
  layout, and decoding with a KV cache (`start_decoding` / `decode_step` / `reorder`);
* NLU fine-tuning (§3.4): `UnilmClassifier` (classification / regression on the [SOS] vector) and
  `UnilmQuestionAnswering` (extractive start/end over the passage).

Layouts and attention masks come from `ctxlm.objectives.unilm` (bool [B, L, L], True = the query
row may attend the key column). Position embeddings AND relative-position buckets come from
`position_ids`, never from array indices: an appended [P] or original token sits at the position
of the token it stands for (§3.2), so its distance to every other token is a difference of
position ids.

Copy head (`UnilmConfig.copy`, off by default; ctxlm's extension, not in the UniLMv2 paper): PALM's
pointer-generator (Bi et al., 2020, eqs. 2-8, `pointer_generator.py`) for the seq2seq `labels`
and decoding. The memory h_l are the final states of the source segment's ordinary tokens (segment
0; [SOS], [EOS], [M], [P] and padding are not copyable, so P_c gives mass only to source words);
the query s_t of target t is its [P]'s final state passed through the masked-LM head's transform
(dense, activation, LayerNorm: the vector the tied softmax reads), so that P_v = softmax(W_e (W_v
s_t + b_v) + bias) starts (W_v = I, b_v = 0) as UniLMv2's own softmax. Pre-training (AE, PAR) has
no source/target split and leaves the copy head out; seq2seq fine-tuning trains it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..families.unilm import UnilmConfig
from ..objectives.masking import IGNORE_INDEX
from .dropout import dropout
from .layers import KVCache, MaskedLMHead, PostLNEncoderLayer, init_weights
from .losses import batch_loss, label_counts, token_nll
from .pointer_generator import PointerGenerator, copy_token_nll, gather_labelled, gather_positions, select_positions
from .pretrained import PretrainedMixin


# ------------------------------------------------------------------------------ relative position
def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """T5's bidirectional bucketing (Raffel et al., 2019; §4.1 "relative position bias").

    `relative_position` = key position − query position. Half of the buckets hold keys after the
    query, half keys at or before it. Within a half, distances below half/2 get a bucket each; larger
    distances share logarithmically wider buckets up to `max_distance`; farther ones share the last.
    """
    half = num_buckets // 2
    bucket = (relative_position > 0).long() * half
    distance = relative_position.abs()
    exact = half // 2
    # log(d / exact) / log(max_distance / exact) spreads [exact, max_distance) over half − exact buckets
    scaled = torch.log(distance.clamp_min(exact).float() / exact) / math.log(max_distance / exact)
    far = (exact + (scaled * (half - exact)).long()).clamp_max(half - 1)
    return bucket + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """One (buckets × heads) table of scalar attention biases, shared by all layers (§4.1)."""

    def __init__(self, num_buckets: int, heads: int, max_distance: int):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, heads)

    def forward(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """(B, Q) and (B, K) position ids → additive bias (B, heads, Q, K)."""
        relative = key_positions[:, None, :] - query_positions[:, :, None]
        buckets = relative_position_bucket(relative, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------ pieces
class Embeddings(nn.Module):
    """BERT's input vector (§2.2): token + absolute position + segment embedding, LayerNorm, dropout."""

    def __init__(self, cfg: UnilmConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.d_model)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = cfg.dropout

    def forward(self, input_ids, position_ids, token_type_ids, token_embeddings=None) -> torch.Tensor:
        """`token_embeddings` replaces the looked-up token vectors (the leak tests differentiate
        with respect to them)."""
        if token_embeddings is None:
            token_embeddings = self.word_embeddings(input_ids)
        x = token_embeddings + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return dropout(self.layer_norm(x), self.dropout, self.training)


@dataclass
class UnilmOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]  # detached <name>_nll_sum / <name>_tokens (and mse_* for regression)
    log_probs: torch.Tensor | None = None  # seq2seq: (labelled tokens, V), row-major order
    logits: torch.Tensor | None = None  # NLU heads
    loss_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # see `losses.batch_loss`


@dataclass
class DecodingState:
    """Everything `decode_step` needs, for batch × beams rows.

    `key_positions` / `key_valid` describe every cache slot (position id; whether a query may attend
    it: False for source padding); `target_start` is each row's source length S, so target token t
    sits at position S + t; `step` counts `decode_step` calls."""

    cache: KVCache
    key_positions: torch.Tensor  # (N, capacity) long
    key_valid: torch.Tensor  # (N, capacity) bool
    target_start: torch.Tensor  # (N,) long
    step: int = 0
    copy_inputs: tuple | None = None  # the copy head's (h, W_m h, x, mask) of the source, one row per beam


def full_attention_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int) -> torch.Tensor:
    """Bool (B, L, L), True = may attend, from the objective's 3-D mask or a 2-D key padding mask.

    Key padding (pad ids) is always masked. A query row left with no key at all (padding added by
    `training.collate`, which fills whole rows with False) attends itself, so softmax stays finite;
    such rows carry no label and are never attended."""
    valid = input_ids.ne(pad_id)
    if attention_mask is None:
        attention_mask = valid
    attention_mask = attention_mask.bool()
    if attention_mask.dim() == 2:  # (B, L) key padding: bidirectional (NLU)
        attention_mask = attention_mask[:, None, :].expand(-1, input_ids.shape[1], -1)
    mask = attention_mask & valid[:, None, :]
    empty = ~mask.any(-1)
    eye = torch.eye(input_ids.shape[1], dtype=torch.bool, device=input_ids.device)
    return mask | (empty[:, :, None] & eye)


# ------------------------------------------------------------------------------ the model
class UnilmModel(PretrainedMixin, nn.Module):
    def __init__(self, cfg: UnilmConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(
            PostLNEncoderLayer(
                cfg.d_model,
                cfg.num_heads,
                cfg.ffn_dim,
                dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout,
                activation_dropout=0.0,
                activation_name=cfg.activation_function,
                eps=cfg.layer_norm_eps,
            )
            for _ in range(cfg.num_layers)
        )
        if not cfg.key_bias:  # the unilm2 release's fused qkv_linear: q and v biases only
            for layer in self.layers:
                layer.self_attn.k_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.rel_pos_bias = (
            RelativePositionBias(cfg.relative_buckets, cfg.num_heads, cfg.relative_max_distance)
            if cfg.relative_position_bias
            else None
        )
        self.mlm_head = MaskedLMHead(cfg.d_model, cfg.vocab_size, cfg.activation_function, cfg.layer_norm_eps)
        init_weights(self, cfg.init_std)
        self.pointer = None  # made last: the other weights are those of the same seed without copy
        if cfg.copy:
            self.pointer = PointerGenerator(cfg.d_model)
            self.pointer.reset_parameters(cfg.init_std)

    # ----------------------------------------------------------------------------- pieces
    def attention_bias(self, mask: torch.Tensor, query_positions, key_positions) -> torch.Tensor:
        """Eq. (2)'s M (0 / −inf from the bool mask) plus the relative-position bias: an additive
        float mask (B, heads, Q, K) for SDPA; the bool mask (B, 1, Q, K) when the bias is off."""
        mask = mask[:, None]
        if self.rel_pos_bias is None:
            return mask
        bias = self.rel_pos_bias(query_positions, key_positions)
        return bias.masked_fill(~mask, float("-inf"))

    def run_layers(self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Eq. (1): H^l = Transformer_l(H^{l−1}). With a cache, keys/values of `x` are appended to it
        and the queries attend every cached key that `mask` allows."""
        for i, layer in enumerate(self.layers):
            if cache is None:
                x = layer(x, mask)
            else:  # PostLNEncoderLayer's computation, with the self-attention reading the cache
                h = layer.self_attn(x, mask=mask, cache=cache, layer=i)
                x = layer.feed_forward(layer.residual(x, h, layer.self_attn_layer_norm))
        return x

    def hidden_states(
        self, input_ids, position_ids=None, token_type_ids=None, attention_mask=None, token_embeddings=None
    ) -> torch.Tensor:
        """H^L (B, L, d) of a whole layout. `attention_mask`: bool (B, L, L) from the objective, or a
        (B, L) key padding mask (bidirectional), or None (bidirectional over non-pad tokens)."""
        b, length = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).expand(b, -1)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = full_attention_mask(input_ids, attention_mask, self.config.pad_token_id)
        x = self.embeddings(input_ids, position_ids, token_type_ids, token_embeddings)
        return self.run_layers(x, self.attention_bias(mask, position_ids, position_ids))

    def lm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The tied softmax classifier (§4.1) over the given hidden states."""
        return self.mlm_head(states, self.embeddings.word_embeddings.weight)

    def lm_states(self, states: torch.Tensor) -> torch.Tensor:
        """The masked-LM head's transform (dense, activation, LayerNorm): the copy head's s_t."""
        return self.mlm_head.transform(states)

    def copy_memory(self, states, input_ids, source):
        """The copy head's memory: final states (B, S, d), ids (B, S) and mask (B, S) of the
        copyable tokens where `source` (B, L) is True, packed to the left."""
        cfg = self.config
        special = torch.tensor(
            [cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.mask_token_id, cfg.pseudo_token_id],
            device=input_ids.device,
        )
        index, valid = select_positions(source.bool() & ~torch.isin(input_ids, special))
        return gather_positions(states, index), gather_positions(input_ids, index), valid

    def copy_lm_loss(self, states, input_ids, token_type_ids, labels, label_smoothing: float, return_log_probs: bool):
        """The seq2seq loss with the copy head: `token_nll` of the eq. (7) mixture at the [P]s'
        labels, memory = the source segment (token type 0). Returns the loss sum, NLL sum, count and,
        if `return_log_probs`, log P (labelled tokens, V) in row-major order."""
        if token_type_ids is None:
            raise ValueError("the copy head needs token_type_ids to find the source segment (type 0)")
        memory = self.copy_memory(states, input_ids, token_type_ids == 0)
        queries, targets = gather_labelled(self.lm_states(states), labels)
        embedding, bias = self.embeddings.word_embeddings.weight, self.mlm_head.bias
        if not return_log_probs:
            return (*copy_token_nll(self.pointer, queries, *memory, embedding, bias, targets, label_smoothing), None)
        mem_states, ids, mask = memory
        log_probs = self.pointer(
            queries, mem_states, self.pointer.project_memory(mem_states), ids, mask, embedding, bias
        )
        return (*token_nll(log_probs, targets, label_smoothing), log_probs[targets != IGNORE_INDEX])

    # ----------------------------------------------------------------------------- training
    LABEL_FIELDS = {"ae": "ae_labels", "par": "par_labels", "lm": "labels"}

    def target_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Labelled tokens per objective of a batch (the `<name>_tokens` that `forward` reports)."""
        return label_counts(batch, self.LABEL_FIELDS)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        ae_labels: torch.Tensor | None = None,
        par_labels: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        return_log_probs: bool = False,
    ) -> UnilmOutput:
        """Pre-training: `ae_labels` (at the in-place [M]s) and/or `par_labels` (at the [P]s), one
        pass, loss L_AE + L_PAR (eq. 7; each a token mean: eqs. 3 and 6). Seq2seq fine-tuning:
        `labels` at the [P]s (§3.4), with optional label smoothing (Table 10). The softmax is
        computed at labelled positions only. Metrics: `ae_*`, `par_*`, `lm_*` `_nll_sum`/`_tokens`."""
        states = self.hidden_states(input_ids, position_ids, token_type_ids, attention_mask)
        sums: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        log_probs = None
        for name, target, smoothing in (
            ("ae", ae_labels, 0.0),
            ("par", par_labels, 0.0),
            ("lm", labels, label_smoothing),
        ):
            if target is None:
                continue
            if name == "lm" and self.pointer is not None:
                sums[name], nll_sum, count, log_probs = self.copy_lm_loss(
                    states, input_ids, token_type_ids, target, smoothing, return_log_probs
                )
                metrics[f"{name}_nll_sum"], metrics[f"{name}_tokens"] = nll_sum, count
                continue
            keep = target != IGNORE_INDEX
            if name == "lm" and return_log_probs:
                logits = self.lm_logits(states[keep])
                sums[name], nll_sum, count = token_nll(logits, target[keep], smoothing)
                log_probs = F.log_softmax(logits.float(), dim=-1)
            else:  # the loss without the logits
                sums[name], nll_sum, count = self.mlm_head.loss(
                    states[keep], self.embeddings.word_embeddings.weight, target[keep], smoothing
                )
            metrics[f"{name}_nll_sum"], metrics[f"{name}_tokens"] = nll_sum, count
        loss = batch_loss(sums, {name: metrics[f"{name}_tokens"] for name in sums})
        if loss is None:
            loss = states.new_zeros((), dtype=torch.float32)
        return UnilmOutput(loss=loss, metrics=metrics, log_probs=log_probs, loss_sums=sums)

    # ----------------------------------------------------------------------------- decoding (§3.4)
    def start_decoding(self, input_ids, attention_mask=None, *, num_beams: int = 1, max_length: int = 128):
        """Encode the prompts `[SOS] SRC [EOS]` (`build_seq2seq_prompt`, padded anywhere: positions
        count the real tokens) once, bidirectionally, into a `KVCache`; then expand to batch ×
        num_beams rows (a `KVCache.reorder` with each row repeated). `max_length` counts the
        decoder start token, as in `generation.py`."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        valid = attention_mask.bool()
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        b, s = input_ids.shape
        mask = valid[:, None, :].expand(b, s, s)
        x = self.embeddings(input_ids, positions, torch.zeros_like(input_ids))
        cfg = self.config
        capacity = s + max_length + 1  # source, ≤ max_length − 1 targets, one [P]
        cache = KVCache(cfg.num_layers, b, cfg.num_heads, cfg.d_model // cfg.num_heads, capacity, x.dtype, x.device)
        h = self.run_layers(x, self.attention_bias(mask, positions, positions), cache)
        cache.advance(s)
        key_positions = positions.new_zeros(b, capacity)
        key_positions[:, :s] = positions
        key_valid = torch.zeros(b, capacity, dtype=torch.bool, device=x.device)
        key_valid[:, :s] = valid
        rows = torch.arange(b, device=x.device).repeat_interleave(num_beams)
        cache.reorder(rows)
        copy_inputs = None
        if self.pointer is not None:  # one row per beam; `reorder` stays within a source, so never moves them
            states, ids, source_mask = self.copy_memory(h, input_ids, valid)
            copy_inputs = tuple(
                value[rows] for value in (states, self.pointer.project_memory(states), ids, source_mask)
            )
        return DecodingState(cache, key_positions[rows], key_valid[rows], valid.sum(1)[rows], copy_inputs=copy_inputs)

    def decode_step(self, state: DecodingState, tokens: torch.Tensor) -> torch.Tensor:
        """Log P (N, V) of target token t (t = the number of earlier calls), read from a [P] at
        position S + t that attends the source, targets < t and itself (§3.4,
        `build_seq2seq_example`'s mask). `tokens` (N,) is target t − 1, fed first as a real target
        token (segment 1, position S + t − 1, attending the source and targets ≤ t − 1) and kept in
        the cache; the [P] is not kept (its slot is overwritten next step). At t = 0 `tokens` holds
        the start placeholder (`decoder_start_token_id`) and only the [P] is fed."""
        cfg, cache, t = self.config, state.cache, state.step
        pseudo = torch.full_like(tokens, cfg.pseudo_token_id)
        new = pseudo[:, None] if t == 0 else torch.stack([tokens, pseudo], dim=1)
        q = new.shape[1]
        query_positions = state.target_start[:, None] + torch.arange(t + 1 - q, t + 1, device=new.device)
        if int(query_positions.max()) >= cfg.max_position_embeddings:
            raise ValueError(
                f"target position {int(query_positions.max())} exceeds max_position_embeddings "
                f"{cfg.max_position_embeddings}: shorten the source or max_new_tokens"
            )
        start, end = cache.length, cache.length + q
        state.key_positions[:, start:end] = query_positions
        state.key_valid[:, start:end] = True
        mask = state.key_valid[:, None, :end].expand(-1, q, -1).clone()
        if q == 2:
            mask[:, 0, end - 1] = False  # the target token does not see the [P]
        x = self.embeddings(new, query_positions, torch.ones_like(new))
        x = self.run_layers(x, self.attention_bias(mask, query_positions, state.key_positions[:, :end]), cache)
        cache.advance(q - 1)  # keep the target token, drop the [P]
        state.step += 1
        if self.pointer is not None:  # eq. (7) at the [P]
            return self.pointer(
                self.lm_states(x[:, -1:]),
                *state.copy_inputs,
                self.embeddings.word_embeddings.weight,
                self.mlm_head.bias,
            )[:, -1]
        return F.log_softmax(self.lm_logits(x[:, -1]).float(), dim=-1)

    def reorder(self, state: DecodingState, index: torch.Tensor) -> None:
        """Beam search kept rows `index` (within each source): the rows of one source share
        positions, validity and source length, so only the cache is reordered."""
        state.cache.reorder(index)

    @property
    def decoder_start_token_id(self) -> int:
        """A placeholder: the first decoding step feeds only a [P] (there is no previous target
        token), so the start token is never embedded. [P] is used so it never equals a real token."""
        return self.config.pseudo_token_id

    @property
    def eos_token_id(self) -> int:
        return self.config.eos_token_id


# ------------------------------------------------------------------------------ NLU heads (§3.4)
class UnilmClassifier(PretrainedMixin, nn.Module):
    """Text classification / regression on the [SOS] vector (§3.4: "We use the encoding vector of
    [SOS] as the representation of input, and then feed it to a randomly initialized softmax
    classifier"): dropout → linear. `pooler=True` inserts BERT's dense + tanh pooler first (as
    BERT's `BertForSequenceClassification`; UniLMv2 pre-training has no objective that trains it).

    `num_labels == 1` is regression (STS-B): MSE loss, metrics `mse_sum` / `mse_count`; otherwise
    cross-entropy, metrics `cls_nll_sum` / `cls_tokens` (one "token" per example) and the share of
    right answers, `cls_accuracy_sum` / `cls_accuracy_count`."""

    def __init__(self, model: UnilmModel | UnilmConfig, num_labels: int, pooler: bool = False):
        super().__init__()
        self.unilm = model if isinstance(model, UnilmModel) else UnilmModel(model)
        cfg = self.unilm.config
        self.config, self.num_labels = cfg, num_labels
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model) if pooler else None
        self.classifier = nn.Linear(cfg.d_model, num_labels)
        init_weights(self.classifier, cfg.init_std)
        if self.pooler is not None:
            init_weights(self.pooler, cfg.init_std)

    def head_config(self) -> dict:
        """What `ctxlm.checkpoint` saves as head.json to rebuild this model."""
        return {"type": "unilm-classifier", "num_labels": self.num_labels, "pooler": self.pooler is not None}

    def target_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Examples per batch: `mse` (regression) or `cls` (classes ≠ IGNORE_INDEX), as `forward`."""
        if self.num_labels == 1:
            return {"mse": torch.tensor(len(batch["labels"]), device=batch["labels"].device)}
        return label_counts(batch, {"cls": "labels"})

    def forward(
        self, input_ids, position_ids=None, token_type_ids=None, attention_mask=None, labels=None
    ) -> UnilmOutput:
        states = self.unilm.hidden_states(input_ids, position_ids, token_type_ids, attention_mask)
        sos = states[:, 0]
        if self.pooler is not None:
            sos = torch.tanh(self.pooler(sos))
        logits = self.classifier(dropout(sos, self.config.dropout, self.training)).float()
        loss, metrics, sums = logits.new_zeros(()), {}, {}
        if labels is not None:
            if self.num_labels == 1:
                errors = (logits[:, 0] - labels.float()) ** 2
                sums["mse"] = errors.sum()
                metrics = {"mse_sum": errors.sum().detach(), "mse_count": torch.tensor(len(errors))}
                loss = batch_loss(sums, {"mse": metrics["mse_count"]})
            else:
                sums["cls"], nll_sum, count = token_nll(logits, labels)
                correct = (logits.argmax(-1) == labels).sum()  # IGNORE_INDEX labels never match
                metrics = {
                    "cls_nll_sum": nll_sum,
                    "cls_tokens": count,
                    "cls_accuracy_sum": correct.detach(),
                    "cls_accuracy_count": count,
                }
                loss = batch_loss(sums, {"cls": count})
        return UnilmOutput(loss=loss, metrics=metrics, logits=logits, loss_sums=sums)


class UnilmQuestionAnswering(PretrainedMixin, nn.Module):
    """Extractive QA (SQuAD, Table 2): a linear layer gives each token a start and an end score.

    Input `[SOS] question [EOS] passage [EOS]` (`build_classification_input`). `answer_mask` (B, L)
    bool marks the tokens an answer may start or end at (the passage; add the [SOS] at index 0 and
    point unanswerable questions there for SQuAD 2.0, BERT's convention); other positions get −inf.
    Loss: the mean of the start and end cross-entropies; metrics `qa_nll_sum` / `qa_tokens` (two
    boundaries per example)."""

    def __init__(self, model: UnilmModel | UnilmConfig):
        super().__init__()
        self.unilm = model if isinstance(model, UnilmModel) else UnilmModel(model)
        self.config = self.unilm.config
        self.qa_outputs = nn.Linear(self.config.d_model, 2)
        init_weights(self.qa_outputs, self.config.init_std)

    def head_config(self) -> dict:
        """What `ctxlm.checkpoint` saves as head.json to rebuild this model."""
        return {"type": "unilm-qa"}

    def target_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Answer boundaries per batch (two per example), as `forward`'s `qa_tokens`."""
        if batch.get("start_positions") is None or batch.get("end_positions") is None:
            return {}
        both = torch.stack([batch["start_positions"], batch["end_positions"]])
        return {"qa": (both != IGNORE_INDEX).sum()}

    def forward(
        self,
        input_ids,
        position_ids=None,
        token_type_ids=None,
        attention_mask=None,
        answer_mask=None,
        start_positions=None,
        end_positions=None,
    ) -> UnilmOutput:
        states = self.unilm.hidden_states(input_ids, position_ids, token_type_ids, attention_mask)
        logits = self.qa_outputs(states).float()  # (B, L, 2)
        if answer_mask is not None:
            logits = logits.masked_fill(~answer_mask.bool()[..., None], float("-inf"))
        loss, metrics, sums = logits.new_zeros(()), {}, {}
        if start_positions is not None and end_positions is not None:
            scores = logits.permute(0, 2, 1).reshape(-1, logits.shape[1])  # (B·2, L): start, end per row
            target = torch.stack([start_positions, end_positions], dim=1).reshape(-1)
            sums["qa"], nll_sum, count = token_nll(scores, target)
            metrics = {"qa_nll_sum": nll_sum, "qa_tokens": count}
            loss = batch_loss(sums, {"qa": count})
        return UnilmOutput(loss=loss, metrics=metrics, logits=logits, loss_sums=sums)
