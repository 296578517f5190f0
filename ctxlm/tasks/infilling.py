"""Text infilling with GLM (Du et al., 2021, §3.3 "Text Infilling", Table 5).

A text with any number of blanks of unknown length - each written `[MASK]` (or `[sMASK]` /
`[gMASK]`) - is Part A, `[CLS] text [eos]` as in pre-training. The blanks are filled left to right,
each as its own Part B span: `[sop]` at the blank's position with block positions 1, 2, ...,
decoded until `[eop]`; the spans filled before stay in Part B, so later blanks see them, exactly
as the blank-infilling objective trains the model (§2.1).

Evaluation follows the paper, which compares with the Blank Language Model (Shen et al., 2020) on
Yahoo Answers: for each (already tokenized) sentence, `int(n * ratio)` of its n words are masked
at random, consecutive masked words merge into one blank (THUDM/GLM's `BlankLMDataset.mask_text`),
the model fills the blanks, and corpus BLEU compares the filled sentences with the originals.
BLEU is sacreBLEU with `tokenize="none"`: the data is already tokenized (PTB style, lower-cased),
so the scored units are exactly its space-separated words. The unmasked words are copied from the
original line; each fill is written in the same style: WordPieces joined into words, `_UNK` for
the unknown token (the data's own marker, which the model reads as [UNK], as THUDM/GLM does), and
WordPiece's split contractions put back ("n ' t" -> "n't", "' s" -> "'s", "` `" -> "``", ...),
as THUDM/GLM's `blanklm_fix_tokenization` does before scoring. WordPiece also splits punctuation
inside words ("400,000", "u.s.a"), which is not put back: the true fills written this way score
about 99.3 BLEU (the first 2,000 Yahoo lines at ratio 0.5), the ceiling of this measurement.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..checkpoint import load_model_dir, resolve_model_dir
from ..config import GenerationConfig
from ..data.corpus import iter_lines
from ..device import for_inference, resolve_device
from ..errors import CtxlmError, where
from ..extras import require
from ..generation import generate
from ..models.glm import GlmModel, glm_tokens
from ..objectives.glm import GlmTokens, build_infilling_prompt, part_b_block

__all__ = [
    "infill",
    "merge_infilled",
    "encode_with_blanks",
    "fill_words",
    "infill_texts",
    "mask_words",
    "infill_bleu",
    "evaluate_infilling",
    "BLANK",
]

BLANK = "[MASK]"
_BLANK_RE = re.compile(r"(\[MASK\]|\[sMASK\]|\[gMASK\])")


# ---------------------------------------------------------------------------------------- decoding
@torch.no_grad()
def infill(
    model: GlmModel,
    ids_with_blanks: Sequence[int],
    cfg: GenerationConfig | None = None,
    *,
    tok: GlmTokens | None = None,
    add_cls: bool = True,
    add_eos: bool = True,
    max_tokens: Sequence[int] | None = None,
    continuation: torch.Tensor | None = None,
) -> list[list[int]]:
    """Fill every blank ([MASK], [sMASK] or [gMASK]) of one text, left to right (GLM §3.3).

    Part A is `[CLS] text [eos]` (`build_infilling_prompt`). Each blank is generated as its own Part B
    span, `[sop]` first, at the blank's position with block positions 1, 2, ..., until `[eop]` (or
    `cfg.max_new_tokens`, or blank i's `max_tokens[i]` tokens before `[eop]` where that is less); the
    blanks filled before it stay in Part B as `[sop] fill` blocks, as in pre-training. `continuation`
    (V,) marks the word pieces ("##"), which may not begin a fill. Returns the token ids of each
    blank's fill, `[eop]` removed.
    """
    tok = tok or glm_tokens(model.config)
    cfg = cfg or GenerationConfig()
    prompt = build_infilling_prompt(ids_with_blanks, tok, add_cls=add_cls, add_eos=add_eos)
    if len(prompt["input_ids"]) > model.config.max_position_embeddings:
        raise CtxlmError(
            f"{len(prompt['input_ids'])} tokens with its special tokens, more than the model's "
            f"{model.config.max_position_embeddings} positions; shorten the text"
        )
    device = next(model.parameters()).device
    input_ids = torch.as_tensor(prompt["input_ids"], device=device)[None]
    blocks: list[dict[str, np.ndarray]] = []
    fills = []
    for number, mask_position in enumerate(prompt["mask_positions"].tolist()):
        blank_cfg = cfg
        if max_tokens is not None and max_tokens[number] + 1 < cfg.max_new_tokens:  # + 1: the [eop]
            blank_cfg = dataclasses.replace(cfg, max_new_tokens=max_tokens[number] + 1)
        part_b = None
        if blocks:
            part_b = {
                k: np.concatenate([blk[k] for blk in blocks])
                for k in ("input_ids", "position_ids", "block_position_ids")
            }
        fill = generate(
            model, input_ids, None, blank_cfg, continuation=continuation, mask_positions=[mask_position], part_b=part_b
        ).tokens[0]
        if fill and fill[-1] == tok.eop:
            fill = fill[:-1]
        fills.append(fill)
        blocks.append(part_b_block(fill, mask_position, tok.sop, tok.eop))  # inputs `[sop] fill`
    return fills


def merge_infilled(ids_with_blanks: Sequence[int], fills: Sequence[Sequence[int]], tok: GlmTokens) -> list[int]:
    """The text with blank i replaced by `fills[i]` (blanks counted left to right)."""
    blanks = set(tok.blanks)
    count = sum(int(t) in blanks for t in ids_with_blanks)
    if count != len(fills):
        raise CtxlmError(f"merge_infilled: {count} blanks but {len(fills)} fills")
    out, fills = [], iter(fills)
    for token in ids_with_blanks:
        out.extend(next(fills) if int(token) in blanks else [int(token)])
    return out


# ---------------------------------------------------------------------------------------- text
def encode_with_blanks(tokenizer, text: str, tok: GlmTokens, *, unk_marker: str | None = None) -> list[int]:
    """Token ids of `text` with each typed `[MASK]` / `[sMASK]` / `[gMASK]` as the one blank id of the
    model (`tok`), whether or not the tokenizer knows the marker as a special token; `unk_marker`
    (e.g. the Yahoo data's `_UNK`) becomes the tokenizer's [UNK]."""
    ids: list[int] = []
    blank_ids = {"[MASK]": tok.mask, "[sMASK]": tok.smask, "[gMASK]": tok.gmask}
    for piece in _BLANK_RE.split(text):
        if piece in blank_ids:
            if blank_ids[piece] is None:
                raise CtxlmError(f"the text holds {piece}, which this model's vocabulary lacks; use [MASK]")
            ids.append(blank_ids[piece])
            continue
        chunks = piece.split(unk_marker) if unk_marker else [piece]
        for i, chunk in enumerate(chunks):
            if i:
                ids.append(tokenizer.unk_id)
            if chunk.strip():
                ids.extend(tokenizer.encode(chunk))
    return ids


_CONTRACTIONS = [
    (re.compile(r"n ' t\b"), "n't"),
    (re.compile(r"' (s|m|re|ll|ve|d)\b"), r"'\1"),
    (re.compile(r"` `"), "``"),
    (re.compile(r"' '"), "''"),
    (re.compile(r"\. \. \."), "..."),
    (re.compile(r"- -"), "--"),
]


def fill_words(tokenizer, ids: Sequence[int], *, unk_marker: str = "[UNK]") -> str:
    """A fill as space-separated words in the Yahoo data's style (see the module docstring):
    special tokens dropped, [UNK] written `unk_marker`, WordPieces ("##") joined, contractions
    rejoined. Tokenizers without "##" pieces fall back to `tokenizer.decode`."""
    special = set(int(i) for i in tokenizer.special_ids) - {tokenizer.unk_id}
    pieces = [
        unk_marker if int(i) == tokenizer.unk_id else tokenizer.id_to_token(int(i))
        for i in ids
        if int(i) not in special
    ]
    if type(tokenizer.backend.model).__name__ != "WordPiece":
        return " ".join(tokenizer.decode([i for i in ids if int(i) not in special]).split())
    words: list[str] = []
    for piece in pieces:
        if piece.startswith("##") and words:
            words[-1] += piece[2:]
        else:
            words.append(piece)
    text = " ".join(words)
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _load_glm(model_dir, device, bf16: bool):
    device = resolve_device(device)
    model, tokenizer = load_model_dir(model_dir, device=device)
    if tokenizer is None:
        raise CtxlmError(f"{model_dir}: the model directory has no tokenizer.json")
    model = getattr(model, "glm", model)  # a cloze model infills with its backbone
    if not isinstance(model, GlmModel):
        raise CtxlmError(f"{model_dir}: text infilling needs a GLM model, got a {type(model).__name__}")
    return for_inference(model, device, bf16), tokenizer


def word_pieces(tokenizer, model: GlmModel) -> torch.Tensor:
    """(V,) True at the tokenizer's word-continuing pieces ("##"), which may not begin a fill."""
    marks = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=next(model.parameters()).device)
    marks[[i for i in tokenizer.continuation_ids() if i < model.config.vocab_size]] = True
    return marks


def _generation(model_dir, cfg: GenerationConfig | None) -> GenerationConfig:
    from ..config import load_generation_config

    return cfg or load_generation_config(resolve_model_dir(model_dir)) or GenerationConfig()


def infill_texts(
    model_dir: str | Path,
    texts: Sequence[str],
    generation_config: GenerationConfig | None = None,
    *,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
) -> list[str]:
    """Fill the blanks (`[MASK]`, `[sMASK]`, `[gMASK]`) of each text: `ctxlm infill`. The text outside
    the blanks is kept as typed; each blank becomes its decoded fill. Decoding defaults to the
    model's `generation.json`, else `GenerationConfig()`. `device` and `bf16`: see `ctxlm.device`.

    Args:
        model_dir: a GLM model directory
        texts: texts with blanks, e.g. "the [MASK] sat on the [MASK] ."
    """
    model, tokenizer = _load_glm(model_dir, device, bf16)
    cfg, tok = _generation(model_dir, generation_config), glm_tokens(model.config)
    out = []
    for number, text in enumerate(texts, 1):
        pieces = _BLANK_RE.split(text)
        if len(pieces) == 1:
            raise CtxlmError(f"text {number}: no [MASK] (or [sMASK] / [gMASK]) blank to fill: {text[:60]!r}")
        try:
            fills = infill(
                model,
                encode_with_blanks(tokenizer, text, tok),
                cfg,
                tok=tok,
                continuation=word_pieces(tokenizer, model),
            )
        except CtxlmError as error:
            raise CtxlmError(f"text {number}: {error}") from None
        decoded = iter(tokenizer.decode(fill) for fill in fills)
        filled = "".join(next(decoded) if i % 2 else piece for i, piece in enumerate(pieces))
        out.append(re.sub(r" {2,}", " ", filled).strip())
    return out


# ---------------------------------------------------------------------------------------- evaluation
def mask_words(words: Sequence[str], ratio: float, rng: np.random.Generator) -> tuple[list[str], list[list[str]]]:
    """Mask `int(len(words) * ratio)` words drawn uniformly without replacement and merge runs of
    masked words into one `[MASK]` (Shen et al., 2020; THUDM/GLM `mask_text`). Returns the words with
    blanks and the masked words of each blank, left to right."""
    if not 0.0 < ratio < 1.0:
        raise CtxlmError(f"mask ratio must be in (0, 1), got {ratio}")
    count = int(len(words) * ratio)
    masked = set(rng.choice(len(words), size=count, replace=False).tolist()) if count else set()
    out: list[str] = []
    spans: list[list[str]] = []
    for i, word in enumerate(words):
        if i not in masked:
            out.append(word)
        elif i - 1 in masked:
            spans[-1].append(word)
        else:
            out.append(BLANK)
            spans.append([word])
    return out, spans


def infill_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) of whitespace-tokenized texts: sacreBLEU with `tokenize="none"` (`force`
    silences its warning about tokenized input, which is what this data is)."""
    sacrebleu = require("sacrebleu", extra="eval", purpose="infilling BLEU")
    if len(hypotheses) != len(references) or not hypotheses:
        raise CtxlmError(f"{len(hypotheses)} filled texts for {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="none", force=True).score)


def evaluate_infilling(
    model_dir: str | Path,
    path: str | Path,
    *,
    mask_ratio: float,
    seed: int = 0,
    limit: int | None = None,
    generation_config: GenerationConfig | None = None,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
    output: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """BLEU of a model's fills on a file of tokenized sentences (one a line; e.g. Yahoo Answers'
    `valid.txt`), masked with `mask_words` at `mask_ratio`. Line i's mask is drawn from
    `numpy.random.default_rng([seed, i])`, so a run is deterministic for a seed and `limit` (the
    first lines only) does not change the masks. Lines with no masked word (`int(n * ratio) == 0`)
    stay as they are, as in THUDM/GLM. Each blank's fill is at most as many tokens as the words
    masked there, plus `[eop]` (a model that repeats a word stops there, not at `max_new_tokens`).
    `output` writes a JSONL of masked / filled / reference lines.
    Returns `bleu`, `lines`, `blanks`, `masked_words`, `words`.

    Args:
        path: the file scored: mask `mask_ratio` of each line's words, fill, BLEU against the line
        mask_ratio: the share of each line's words masked
        limit: score the first N lines only
        output: write each line's masked, filled and original text here (JSONL)
    """
    path = Path(path)
    if not path.is_file():
        raise CtxlmError(f"{path}: no such file")
    model, tokenizer = _load_glm(model_dir, device, bf16)
    cfg, tok = _generation(model_dir, generation_config), glm_tokens(model.config)
    pieces = word_pieces(tokenizer, model)
    lines = [(number, text.split()) for number, text, _ in iter_lines(path) if text.strip()]  # file:line errors
    lines = lines[:limit] if limit is not None else lines
    if not lines:
        raise CtxlmError(f"{path}: no lines to evaluate")
    if progress:
        from tqdm.auto import tqdm

        lines = tqdm(lines, desc="infill", unit="line")
    hypotheses, references, records = [], [], []
    blanks = masked_words = words_total = 0
    for number, words in lines:
        if BLANK in words:
            raise CtxlmError(f"{where(path, number)}: the text itself holds {BLANK}")
        masked, spans = mask_words(words, mask_ratio, np.random.default_rng([seed, number]))
        filled = list(masked)
        if spans:
            ids = encode_with_blanks(tokenizer, " ".join(masked), tok, unk_marker="_UNK")
            if sum(i in tok.blanks for i in ids) != len(spans):
                raise CtxlmError(f"{where(path, number)}: the text holds a blank token of its own")
            lengths = [len(encode_with_blanks(tokenizer, " ".join(span), tok, unk_marker="_UNK")) for span in spans]
            try:
                fills = iter(
                    fill_words(tokenizer, fill, unk_marker="_UNK")
                    for fill in infill(model, ids, cfg, tok=tok, max_tokens=lengths, continuation=pieces)
                )
            except CtxlmError as error:
                raise CtxlmError(f"{where(path, number)}: {error}") from None
            filled = [next(fills) if word == BLANK else word for word in masked]
        hypotheses.append(" ".join(" ".join(filled).split()))
        references.append(" ".join(words))
        blanks += len(spans)
        masked_words += sum(map(len, spans))
        words_total += len(words)
        if output is not None:
            records.append(
                {"line": number, "masked": " ".join(masked), "prediction": hypotheses[-1], "reference": references[-1]}
            )
    if output is not None:
        Path(output).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return {
        "bleu": infill_bleu(hypotheses, references),
        "lines": len(references),
        "blanks": blanks,
        "masked_words": masked_words,
        "words": words_total,
        "mask_ratio": mask_ratio,
    }
