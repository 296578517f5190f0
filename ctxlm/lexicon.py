"""Known words for decoding: a word of several WordPiece pieces may be written only if it was seen.

A small copy model glues pieces of different words into words no text has ("nigeria ##us", from
"nigeria" and "fest ##us"): 376 of 1,000 validation headlines of the demo's pre-trained model hold
one. `WordLexicon` holds the multi-piece words of some texts (a task's training pairs, the sources
being decoded) as a prefix table; `generation.ban_unknown_words` lets a "##" piece continue a word
only along a word of the table. One-piece words are not limited. This is transformers'
`prefix_allowed_tokens_fn` with the prefix taken inside the current word.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence


class WordLexicon:
    def __init__(self, continuation_ids: Iterable[int]):
        self.continuation = frozenset(continuation_ids)
        self.next_pieces: dict[tuple[int, ...], set[int]] = defaultdict(set)

    @classmethod
    def from_texts(cls, tokenizer, texts: Sequence[str]) -> "WordLexicon":
        lexicon = cls(tokenizer.continuation_ids())
        for ids in tokenizer.encode_batch(list(texts)):
            lexicon.add(ids)
        return lexicon

    def words(self, ids: Sequence[int]) -> list[tuple[int, ...]]:
        """The words of a token sequence: each begins at a piece that does not continue a word."""
        words: list[list[int]] = []
        for token in ids:
            if token in self.continuation and words:
                words[-1].append(token)
            else:
                words.append([token])
        return [tuple(word) for word in words]

    def add(self, ids: Sequence[int]) -> None:
        """Learn the multi-piece words of one token sequence."""
        for word in self.words(ids):
            for end in range(1, len(word)):
                self.next_pieces[word[:end]].add(word[end])

    def allowed_after(self, word_so_far: tuple[int, ...]) -> set[int]:
        """The "##" pieces that may continue a word begun with these pieces."""
        return self.next_pieces.get(word_so_far, set())
