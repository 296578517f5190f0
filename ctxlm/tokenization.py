"""Tokenizers: train an uncased BERT-style WordPiece, or load any HF ``tokenizer.json``.

`train_tokenizer` builds the WordPiece tokenizer PALM, GLM and UniLMv2 share; its special
tokens `SPECIAL_TOKENS` get ids 0..9. `TextTokenizer` wraps a `tokenizers.Tokenizer` and finds
the role tokens (pad/unk/cls/sep/mask) by name, so BERT-style (``[PAD]``...) and
RoBERTa/BART-style (``<pad>``...) files both work. `encode` never adds special tokens; the
objectives place them.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from ctxlm.data.corpus import expand_corpus_paths, iter_blocks
from ctxlm.errors import CtxlmError

SPECIAL_TOKENS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",  # BERT / PALM
    "[sop]", "[eop]", "[sMASK]", "[gMASK]",  # GLM: span start/end, sentence and generation masks
    "[P]",  # UniLMv2 pseudo mask
]  # fmt: skip
# GLM's sentinel ablation (§3.1 Table 6: distinct blanks instead of one shared [MASK]), T5-style:
# a tokenizer we train reserves them right after SPECIAL_TOKENS (ids 10..109).
SENTINEL_TOKENS = [f"[S{i}]" for i in range(100)]
TOKENIZER_FILE = "tokenizer.json"
# How Gigaword, WikiText and the Penn Treebank write a word their makers replaced: a tokenizer we train
# keeps it one ordinary token (WordPiece would cut it into "<", "un", "##k", ">": four cheap pieces
# that beam search's length normalisation favours and the copy head repeats).
UNKNOWN_WORD_MARKER = "<unk>"
MAX_TOKEN_ID = 2**32 - 1  # the Rust library's ids are u32
_SURROGATE = re.compile("[\ud800-\udfff]")

# Names a role token may have: BERT style first, then RoBERTa/BART style (GPT-2's, as GLM's code uses it, last).
ROLE_TOKEN_NAMES: dict[str, tuple[str, ...]] = {
    "[PAD]": ("[PAD]", "<pad>", "<|endoftext|>"),
    "[UNK]": ("[UNK]", "<unk>"),
    "[CLS]": ("[CLS]", "<s>"),
    "[SEP]": ("[SEP]", "</s>"),
    "[MASK]": ("[MASK]", "<mask>"),
}


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the ids of the tokens the objectives need."""

    def __init__(self, tokenizer: Tokenizer, source: str = TOKENIZER_FILE):
        """Wrap ``tokenizer``; ``source`` names it in error messages (its path when loaded)."""
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.backend = tokenizer
        self.source = source
        self._vocab = tokenizer.get_vocab(with_added_tokens=True)
        highest_id = max(self._vocab.values(), default=-1)
        self.vocab_size = max(tokenizer.get_vocab_size(with_added_tokens=True), highest_id + 1)

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Load a ``tokenizer.json`` file, or the one inside directory ``path``.

        Args:
            path: tokenizer.json or its directory
        """
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise CtxlmError(f"{file}: tokenizer file not found")
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as error:  # tokenizers raises plain Exception on bad JSON / schema
            lines = str(error).strip().splitlines()
            reason = lines[0] if lines else type(error).__name__
            raise CtxlmError(f"{file}: not a valid tokenizer.json ({reason})") from None
        return cls(tokenizer, str(file))

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` (creating the directory) and return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        file = directory / TOKENIZER_FILE
        self.backend.save(str(file))
        return file

    @functools.cached_property
    def content_sha256(self) -> str:
        """SHA-256 of the tokenizer's JSON serialization (identifies it in cache keys)."""
        return hashlib.sha256(self.backend.to_str().encode("utf-8")).hexdigest()

    def special_id(self, name: str) -> int:
        """Id of special token ``name`` (role names also match their RoBERTa/BART spelling)."""
        for candidate in ROLE_TOKEN_NAMES.get(name, (name,)):
            token_id = self._vocab.get(candidate)
            if token_id is not None:
                return token_id
        spellings = " or ".join(ROLE_TOKEN_NAMES.get(name, (name,)))
        raise CtxlmError(
            f"{self.source} has no {spellings} token; train a tokenizer with ctxlm "
            f"(which adds {', '.join(SPECIAL_TOKENS)}) or add it as a special token"
        )

    @property
    def pad_id(self) -> int:
        return self.special_id("[PAD]")

    @property
    def unk_id(self) -> int:
        return self.special_id("[UNK]")

    @property
    def cls_id(self) -> int:
        """[CLS] / <s>: also the beginning-of-sequence id."""
        return self.special_id("[CLS]")

    @property
    def sep_id(self) -> int:
        """[SEP] / </s>: also the end-of-sequence id."""
        return self.special_id("[SEP]")

    @property
    def bos_id(self) -> int:
        return self.cls_id

    @property
    def eos_id(self) -> int:
        return self.sep_id

    @property
    def mask_id(self) -> int:
        return self.special_id("[MASK]")

    @functools.cached_property
    def special_ids(self) -> np.ndarray:
        """Sorted int64 ids of all special tokens: added specials, role tokens, `SPECIAL_TOKENS`."""
        ids = {i for i, token in self.backend.get_added_tokens_decoder().items() if token.special}
        ids.update(self._vocab[name] for name in SPECIAL_TOKENS if name in self._vocab)
        for role in ROLE_TOKEN_NAMES:  # the spelling this tokenizer uses (not a data marker like "<unk>")
            try:
                ids.add(self.special_id(role))
            except CtxlmError:
                pass
        return np.array(sorted(ids), dtype=np.int64)

    @functools.cached_property
    def sentinel_ids(self) -> list[int]:
        """Ids of `[S0]`, `[S1]`, ... as far as the tokenizer has them (GLM's sentinel ablation)."""
        ids = []
        for name in SENTINEL_TOKENS:
            if name not in self._vocab:
                break
            ids.append(self._vocab[name])
        return ids

    @functools.cached_property
    def replace_pool(self) -> np.ndarray:
        """Sorted int64 ids of all non-special tokens (BERT's random-replacement candidates)."""
        ids = np.array(sorted(set(self._vocab.values())), dtype=np.int64)
        return np.setdiff1d(ids, self.special_ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        try:
            return self.backend.encode(text, add_special_tokens=False).ids
        except TypeError:
            _check_texts([text])
            raise

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens), encoded in parallel by the Rust library."""
        texts = list(texts)
        try:
            encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False)
        except TypeError:
            _check_texts(texts)
            raise
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list or array); ids the vocabulary lacks decode to nothing."""
        ids = [int(i) for i in ids]
        if ids and not (0 <= min(ids) and max(ids) <= MAX_TOKEN_ID):
            bad = next(i for i in ids if not 0 <= i <= MAX_TOKEN_ID)
            raise CtxlmError(f"{self.source}: cannot decode token id {bad} (ids are 0 to {MAX_TOKEN_ID})")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def continuation_ids(self) -> list[int]:
        """The ids of the pieces that continue a word (WordPiece's "##" prefix)."""
        return sorted(i for token, i in self._vocab.items() if token.startswith("##") and len(token) > 2)

    def lettered_word_start_ids(self) -> list[int]:
        """The ids of the pieces that begin a word and hold a letter ("share", not "##s", "#" or ",")."""
        special = set(self.special_ids.tolist())
        return sorted(
            i
            for token, i in self._vocab.items()
            if not token.startswith("##") and any(c.isalpha() for c in token) and i not in special
        )

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(int(token_id))

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"TextTokenizer({self.source!r}, vocab_size={self.vocab_size})"


def _check_texts(texts: Sequence) -> None:
    """Raise `CtxlmError` for the first text the Rust tokenizer cannot take (not a string, or
    holding an unpaired surrogate, which has no UTF-8 encoding)."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise CtxlmError(f"text {index + 1} is not a string (got {type(text).__name__})")
        surrogate = _SURROGATE.search(text)
        if surrogate:
            raise CtxlmError(
                f"text {index + 1} holds an unpaired surrogate U+{ord(surrogate.group()):04X} at "
                f"character {surrogate.start() + 1} (not encodable as UTF-8)"
            )


def new_wordpiece_tokenizer() -> Tokenizer:
    """An untrained uncased BERT-style WordPiece pipeline (normalizer, pre-tokenizer, decoder)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def train_tokenizer(
    files: str | Path | Iterable[str | Path],
    vocab_size: int,
    out_dir: str | Path | None = None,
    *,
    min_frequency: int = 2,
    format: str = "auto",
    text_field: str | None = None,
    fallback_encoding: str | None = None,
) -> TextTokenizer:
    """Train an uncased WordPiece tokenizer of `vocab_size` tokens on corpus files (fewer when the
    corpus has fewer pieces): `SPECIAL_TOKENS` get ids 0..9, `SENTINEL_TOKENS` the next 100, then
    the trained pieces, and last the data's unknown-word marker `UNKNOWN_WORD_MARKER`, one ordinary
    token (so `vocab_size - 1` tokens are trained).

    Files (or directories) are read with `ctxlm.data.corpus`, in the same formats as the token
    store. The trainer sees paragraphs/lines as read, not pysbd sentences: WordPiece training
    splits on whitespace anyway, so sentence splitting would only cost time. Saves
    ``out_dir/tokenizer.json`` when ``out_dir`` is given.

    Two trainings on the same text can differ: `tokenizers`' trainer numbers the "##" pieces in
    its hash map's order, which changes from process to process, and breaks ties between equally
    frequent merges by those numbers (huggingface/tokenizers#1794; on 3 MB of the shared Wikipedia
    text, 141 of 600 ids moved between two runs, and 251 of 4,000, 106 of them merged pieces, the set
    of pieces the same both times). Train once and pass the saved tokenizer to every run that is to be
    compared.

    Args:
        files: corpus files or directories
        vocab_size: tokens in all: the special tokens, the <unk> marker and the trained pieces
        out_dir: the directory tokenizer.json is written to
        min_frequency: the fewest occurrences of a piece the trainer merges
    """
    reserved = len(SPECIAL_TOKENS) + len(SENTINEL_TOKENS) + 1  # and the unknown-word marker
    if not isinstance(vocab_size, int) or vocab_size <= reserved:
        raise CtxlmError(
            f"vocab_size must be an integer above {reserved} (the reserved special tokens and "
            f"{UNKNOWN_WORD_MARKER}), got {vocab_size!r}"
        )
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise CtxlmError(f"min_frequency must be a positive integer, got {min_frequency!r}")
    paths = expand_corpus_paths(files)

    def texts() -> Iterator[str]:
        for path in paths:
            for block in iter_blocks(path, format, text_field, fallback_encoding):
                yield from block.texts

    tokenizer = new_wordpiece_tokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size - 1,  # the marker comes on top
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS + SENTINEL_TOKENS,
        limit_alphabet=1000,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(UNKNOWN_WORD_MARKER, normalized=True)])
    trained = TextTokenizer(tokenizer)
    if out_dir is not None:
        trained.source = str(trained.save(out_dir))
    return trained
