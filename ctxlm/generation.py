"""Decoding for every model that speaks the decoding protocol:

    state = model.start_decoding(input_ids, attention_mask, num_beams=K, max_length=T, **prompt)
    log_probs = model.decode_step(state, tokens)    # tokens (N,), log P of the next token (N, V)
    model.reorder(state, index)                      # keep rows `index` (within each source)
    model.decoder_start_token_id, model.eos_token_id

Beam search follows transformers' `generate(num_beams=K)` step for step (the parity test checks
token ids): at each step the 2K best continuations over all beams are taken from the accumulated
log-probabilities; those ending in EOS (among the top K) become finished hypotheses scored with the
length penalty; the K best unfinished ones continue. Lengths count generated tokens without the
start token (`min_new_tokens` / `max_new_tokens`). Length penalties:

- "hf" (transformers and fairseq): score = sum log p / len ** α, len counting the EOS;
- "gnmt" (Wu et al., 2016): score = sum log p / ((5 + len) / 6) ** α.

`early_stopping`: False (transformers' default heuristic: stop once the best running beam, scored at
its current length, cannot beat the worst finished one), True (stop when K hypotheses are
finished), or "never" (the canonical bound; with α > 0 it assumes the longest possible length).
Everything inside a step is batched over sources and beams; the only Python loop is over steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import GenerationConfig

__all__ = [
    "GenerationConfig",
    "Generated",
    "generate",
    "beam_search",
    "greedy_or_sample",
    "sample_token",
    "ban_repeated_ngrams",
    "ban_subword_loops",
    "ban_word_repeats",
    "ban_unknown_words",
    "length_normalizer",
]

NEG_INF = -1.0e9  # transformers' "very negative" score for impossible beams


@dataclass
class Generated:
    tokens: list[list[int]]  # generated ids per input, without the start token, EOS included if produced
    scores: list[float]  # length-penalised log-probability (beam search) or summed log-probability


def length_normalizer(length, alpha: float, kind: str):
    """The divisor of a hypothesis' summed log-probability."""
    if kind == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    return length**alpha


def ban_repeated_ngrams(sequences: torch.Tensor, log_probs: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already present in its sequence.

    sequences (N, L) includes the start token; log_probs (N, V), modified in place and returned."""
    length = sequences.shape[1]
    if n <= 0 or length < n:
        return log_probs
    suffix = sequences[:, length - n + 1 :]  # the n−1 last tokens
    windows = sequences.unfold(1, n, 1)  # (N, L−n+1, n): every n-gram so far
    rows, starts = (windows[..., :-1] == suffix[:, None, :]).all(-1).nonzero(as_tuple=True)
    log_probs[rows, windows[rows, starts, -1]] = float("-inf")  # the n-grams' last tokens
    return log_probs


def ban_subword_loops(sequences: torch.Tensor, log_probs: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """Forbid a word piece that already occurs in the word being written.

    `continuation` (V,) marks the pieces that continue a word (WordPiece's "##"). The current word is
    the sequence's suffix from its last non-continuation token; the continuation pieces in it may not
    come again. This stops the copy head's piece loops ("ms ##ps ##ps ##ps", "dis ##qu ##qu ##qu")
    and leaves real words alone: a word rarely holds the same piece twice. log_probs is modified in
    place and returned."""
    is_piece = continuation[sequences]  # (N, L)
    positions = torch.arange(sequences.shape[1], device=sequences.device)
    word_start = torch.where(is_piece, -1, positions).amax(1, keepdim=True)  # the word's first token
    rows, cols = (is_piece & (positions >= word_start)).nonzero(as_tuple=True)
    log_probs[rows, sequences[rows, cols]] = float("-inf")
    return log_probs


def ban_word_repeats(sequences: torch.Tensor, log_probs: torch.Tensor, word_start: torch.Tensor) -> torch.Tensor:
    """Forbid a one-piece word right after itself ("share share", "indian indian").

    `word_start` (V,) marks the tokens that begin a word and hold a letter. When the last token is one
    of them, it may not come next (that would end the last word as this one piece and write it
    again). A repeated word of several pieces is a repeated bigram, which `no_repeat_ngram_size` 2
    forbids. log_probs is modified in place and returned."""
    last = sequences[:, -1]
    rows = word_start[last].nonzero(as_tuple=True)[0]
    log_probs[rows, last[rows]] = float("-inf")
    return log_probs


def ban_unknown_words(sequences: torch.Tensor, log_probs: torch.Tensor, lexicon) -> torch.Tensor:
    """Forbid a "##" piece that would make the current word one the `lexicon` (`ctxlm.lexicon.
    WordLexicon`) does not hold: the word so far is the sequence's suffix from its last piece that
    does not continue a word. log_probs is modified in place and returned."""
    ban = torch.zeros(log_probs.shape[-1], dtype=torch.bool, device=log_probs.device)
    ban[[i for i in lexicon.continuation if i < len(ban)]] = True
    ban = ban.expand_as(log_probs).clone()
    for row, sequence in enumerate(sequences.tolist()):
        allowed = lexicon.allowed_after(lexicon.words(sequence)[-1])
        if allowed:
            ban[row, list(allowed)] = False
    return log_probs.masked_fill_(ban, float("-inf"))


def _process(
    log_probs, sequences, step, cfg: GenerationConfig, eos: int, continuation=None, word_start=None, lexicon=None
):
    """The logits processors (min length; no word piece first; n-gram, subword-loop and word-repeat
    blocking; known words) on fresh log-probs, in place."""
    if step < cfg.min_new_tokens:
        log_probs[:, eos] = float("-inf")
    if step == 0 and continuation is not None:  # a text never starts inside a word ("##om india")
        log_probs.masked_fill_(continuation[: log_probs.shape[-1]], float("-inf"))
    if cfg.no_repeat_ngram_size:
        log_probs = ban_repeated_ngrams(sequences, log_probs, cfg.no_repeat_ngram_size)
    if cfg.block_subword_loops and continuation is not None:
        log_probs = ban_subword_loops(sequences, log_probs, continuation)
    if cfg.block_word_repeats and word_start is not None:
        log_probs = ban_word_repeats(sequences, log_probs, word_start)
    if lexicon is not None:
        log_probs = ban_unknown_words(sequences, log_probs, lexicon)
    return log_probs


@torch.inference_mode()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    cfg: GenerationConfig | None = None,
    *,
    continuation: torch.Tensor | None = None,
    word_start: torch.Tensor | None = None,
    lexicon=None,
    **inputs: torch.Tensor,
) -> Generated:
    """Decode a batch of prompts. `inputs` are further prompt tensors the model's
    `start_decoding` takes (GLM's positions, UniLMv2's segment ids, ...); `continuation` (V,) marks
    the tokenizer's word-continuing pieces, which may not come first, and for
    `cfg.block_subword_loops`; `word_start` (V,) its
    word-beginning pieces that hold a letter, for `cfg.block_word_repeats`; `lexicon` (a
    `ctxlm.lexicon.WordLexicon`) the words of several pieces that may be written."""
    cfg = cfg or GenerationConfig()
    constraints = dict(continuation=continuation, word_start=word_start, lexicon=lexicon)
    if cfg.num_beams == 1:
        return greedy_or_sample(model, input_ids, attention_mask, cfg, **constraints, **inputs)
    return beam_search(model, input_ids, attention_mask, cfg, **constraints, **inputs)


@torch.inference_mode()
def greedy_or_sample(
    model,
    input_ids,
    attention_mask,
    cfg: GenerationConfig,
    *,
    continuation=None,
    word_start=None,
    lexicon=None,
    **inputs,
) -> Generated:
    b = input_ids.shape[0]
    eos = model.eos_token_id
    state = model.start_decoding(input_ids, attention_mask, num_beams=1, max_length=cfg.max_new_tokens + 1, **inputs)
    generator = None
    if cfg.do_sample and cfg.seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(cfg.seed)
    sequences = torch.full((b, 1), model.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
    finished = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    total = torch.zeros(b, device=input_ids.device)
    for step in range(cfg.max_new_tokens):
        log_probs = _process(
            model.decode_step(state, sequences[:, -1]), sequences, step, cfg, eos, continuation, word_start, lexicon
        )
        if cfg.do_sample:
            token = sample_token(log_probs, cfg, generator)
        else:
            token = log_probs.argmax(-1)
        total += torch.where(finished, 0.0, log_probs.gather(1, token[:, None]).squeeze(1))
        token = torch.where(finished, eos, token)
        sequences = torch.cat([sequences, token[:, None]], dim=1)
        finished |= token == eos
        if bool(finished.all()):
            break
    tokens = []
    for row in sequences[:, 1:].tolist():
        tokens.append(row[: row.index(eos) + 1] if eos in row else row)
    return Generated(tokens=tokens, scores=total.tolist())


def sample_token(log_probs: torch.Tensor, cfg: GenerationConfig, generator=None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering, then a multinomial draw."""
    logits = log_probs / max(cfg.temperature, 1e-6)
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        remove = probs.cumsum(-1) - probs >= cfg.top_p  # the smallest set whose mass reaches top_p
        remove[:, 0] = False  # the best token always stays
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


@torch.inference_mode()
def beam_search(
    model,
    input_ids,
    attention_mask,
    cfg: GenerationConfig,
    *,
    continuation=None,
    word_start=None,
    lexicon=None,
    **inputs,
) -> Generated:
    b, k = input_ids.shape[0], cfg.num_beams
    eos, device = model.eos_token_id, input_ids.device
    max_len = cfg.max_new_tokens + 1  # + the start token
    state = model.start_decoding(input_ids, attention_mask, num_beams=k, max_length=max_len, **inputs)
    keep = 2 * k  # candidates per step: enough that K survive even if K of them end in EOS
    alpha, kind = cfg.length_penalty, cfg.length_penalty_type

    running = torch.full((b, k, max_len), eos, dtype=torch.long, device=device)
    running[:, :, 0] = model.decoder_start_token_id
    finished_seqs = running.clone()
    running_scores = torch.zeros(b, k, device=device)
    running_scores[:, 1:] = NEG_INF  # all beams start identical: only the first may expand
    finished_scores = torch.full((b, k), NEG_INF, device=device)
    is_finished = torch.zeros(b, k, dtype=torch.bool, device=device)
    improvable = torch.ones(b, 1, dtype=torch.bool, device=device)
    top_k_mask = torch.arange(keep, device=device) < k
    batch_offset = torch.arange(b, device=device)[:, None] * k

    cur = 1  # filled positions of `running`
    while True:
        flat = running[:, :, :cur].reshape(b * k, cur)
        log_probs = model.decode_step(state, flat[:, -1]).float()
        log_probs = _process(log_probs, flat, cur - 1, cfg, eos, continuation, word_start, lexicon)
        # a source's 2K best continuations are among the 2K best of each of its beams (adding the
        # beam's score keeps a beam's order): two small top-k's instead of one over K × vocabulary
        per_beam = min(keep, log_probs.shape[-1])
        beam_scores, beam_tokens = torch.topk(log_probs, per_beam, dim=1)  # (b·k, per_beam)
        totals = (beam_scores.view(b, k, per_beam) + running_scores[:, :, None]).view(b, k * per_beam)
        cand_scores, cand = torch.topk(totals, keep, dim=1)
        cand_beam, cand_token = cand // per_beam, beam_tokens.view(b, k * per_beam).gather(1, cand)
        cand_seqs = torch.take_along_dim(running, cand_beam[:, :, None], dim=1)
        cand_seqs[:, :, cur] = cand_token
        ends = (cand_token == eos) | (cur + 1 >= max_len)

        # the K best candidates that go on
        alive_scores = cand_scores + ends.float() * NEG_INF
        order = torch.topk(alive_scores, k, dim=1).indices
        running = torch.take_along_dim(cand_seqs, order[:, :, None], dim=1)
        running_scores = torch.take_along_dim(alive_scores, order, dim=1)
        parent = torch.take_along_dim(cand_beam, order, dim=1)

        # candidates among the top K that just ended join the finished hypotheses
        just_done = ends & top_k_mask[None, :]
        done_scores = cand_scores / length_normalizer(cur, alpha, kind)
        full = is_finished.all(-1, keepdim=True) & (cfg.early_stopping is True)
        done_scores = done_scores + (full | ~improvable).float() * NEG_INF + (~just_done).float() * NEG_INF
        merged_scores = torch.cat([finished_scores, done_scores], dim=1)
        best = torch.topk(merged_scores, k, dim=1).indices
        finished_seqs = torch.take_along_dim(torch.cat([finished_seqs, cand_seqs], 1), best[:, :, None], dim=1)
        finished_scores = torch.take_along_dim(merged_scores, best, dim=1)
        is_finished = torch.take_along_dim(torch.cat([is_finished, just_done], 1), best, dim=1)

        model.reorder(state, (parent + batch_offset).view(-1))
        cur += 1

        # can a running beam still beat the worst finished hypothesis?
        if cfg.early_stopping == "never" and alpha > 0:
            best_length = max_len - 1
        else:
            best_length = cur - 1
        best_possible = running_scores[:, :1] / length_normalizer(best_length, alpha, kind)
        worst_done = torch.where(is_finished, finished_scores.min(1, keepdim=True).values, NEG_INF)
        improvable = improvable & (best_possible > worst_done).any(-1, keepdim=True)
        open_beams = not (bool(is_finished.all()) and cfg.early_stopping is True)
        if not (bool(improvable.any()) and open_beams and not bool(ends.all())):
            break

    tokens = []
    for row in finished_seqs[:, 0, 1:].tolist():
        tokens.append(row[: row.index(eos) + 1] if eos in row else row)
    return Generated(tokens=tokens, scores=finished_scores[:, 0].tolist())
