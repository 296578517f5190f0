"""The releases' tokenizers (`ctxlm.official.tokenizers`) give the ids the official code gives.

The vocabularies are the files THUDM/GLM 4f61ed7 ships in `.pytorch_pretrained_bert/` (xz-compressed in
tests/fixtures/official/tokenizers/; `roberta-merges.txt` there is byte for byte `gpt2-merges.txt`, so one
copy is kept). References, set up as each release sets them (GLM's tokens at their ids):
- BERT: transformers' pure-Python `BertTokenizerLegacy` (transformers 5 has no other slow BertTokenizer);
- RoBERTa / GPT-2: transformers 5 has only the tokenizers-backed `RobertaTokenizer` / `GPT2Tokenizer` (built
  by transformers from vocab.json + merges.txt), so each is checked against those AND against GPT-2's
  published algorithm written out below in pure Python (regex split, bytes as characters, merges by rank);
- all three: the ids THUDM/GLM's own tokenizers gave the same texts (`official_ids.json.xz`, written by
  tests/fixtures/official/tokenizers/regenerate.py from the official files at 4f61ed7).
"""

from __future__ import annotations

import json
import lzma
from functools import lru_cache
from pathlib import Path

import pytest
import regex

from ctxlm.errors import CtxlmError
from ctxlm.tokenization import TextTokenizer
from ctxlm.official.tokenizers import (
    GLM_BERT_TOKENS,
    GLM_GPT2_TOKENS,
    GLM_ROBERTA_TOKENS,
    bert_wordpiece_tokenizer,
    gpt2_bpe_tokenizer,
    release_tokenizer,
    roberta_bpe_tokenizer,
)

FIXTURES = Path(__file__).parent / "fixtures/official/tokenizers"
EDGE_CASES = [  # what the corpus may lack: accents, CJK, controls, runs of spaces, numbers, contractions
    "Crème brûlée, naïve façade — Ångström's ÉCOLE",
    "北京大学 in 東京 and 서울",
    "tab\there  two  spaces   three",
    "they're we've I'd you'll 1,234.56 3rd",
    "control\x00char\ufffd and zero\u200bwidth",
    "  leading and trailing  ",
    "a" * 120 + " supercalifragilisticexpialidocious",
    "emoji 🙂 and ﬁ ligature",
    "",
]


@pytest.fixture(scope="module")
def release_files(tmp_path_factory, data_dir):
    """The three release layouts (vocab.txt / RoBERTa and GPT-2 vocab.json + merges.txt) and 200 corpus lines."""
    root = tmp_path_factory.mktemp("releases")

    def unpack(name: str, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lzma.decompress((FIXTURES / f"{name}.xz").read_bytes()))

    unpack("bert-large-uncased-vocab.txt", root / "bert/vocab.txt")
    unpack("roberta-vocab.json", root / "roberta/vocab.json")
    unpack("gpt2-merges.txt", root / "roberta/merges.txt")
    unpack("gpt2-vocab.json", root / "gpt2/vocab.json")
    unpack("gpt2-merges.txt", root / "gpt2/merges.txt")
    texts = corpus_texts(data_dir)
    assert len(texts) == 200 + len(EDGE_CASES) and sum(any(ord(c) > 127 for c in text) for text in texts) > 10
    return root, texts


def corpus_texts(data_dir) -> list[str]:
    """The first 200 non-empty lines of the shared Wikipedia sentences, then `EDGE_CASES`."""
    lines = (Path(data_dir) / "pretrain/wikipedia/sents_000.txt").read_text(encoding="utf-8").split("\n")
    return [line for line in lines if line.strip()][:200] + EDGE_CASES


def test_bert_wordpiece_matches_python_bert_tokenizer(release_files):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    root, texts = release_files
    ours = bert_wordpiece_tokenizer(root / "bert/vocab.txt", lowercase=True, added=GLM_BERT_TOKENS)
    reference = BertTokenizerLegacy(str(root / "bert/vocab.txt"), do_lower_case=True)
    reference.add_tokens(list(GLM_BERT_TOKENS), special_tokens=True)
    for token, wanted in GLM_BERT_TOKENS.items():
        assert ours.token_to_id(token) == reference.convert_tokens_to_ids(token) == wanted
    marked = [f"{text} <|startofpiece|> end <|endofpiece|>" for text in texts[:20]]
    for text in texts + marked:
        assert ours.encode(text) == reference.encode(text, add_special_tokens=False), text
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (0, 100, 101, 102, 103)
    assert ours.vocab_size == 30524
    cased = bert_wordpiece_tokenizer(root / "bert/vocab.txt", lowercase=False)
    assert cased.encode("Crème") != ours.encode("Crème")  # uncased strips the accent and the capital


@lru_cache(maxsize=None)
def _byte_chars() -> dict[int, str]:
    """GPT-2's printable stand-in of each byte: printable Latin-1 bytes stand for themselves, the others
    for 256, 257, ... in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bpe_reference(vocab: dict[str, int], ranks: dict[tuple[str, str], int], text: str) -> list[int]:
    """GPT-2's byte-level BPE as its paper's code does it: merge the best-ranked pair everywhere, repeat."""
    ids = []
    for piece in GPT2_SPLIT.findall(text):
        word = [_byte_chars()[byte] for byte in piece.encode("utf-8")]
        while len(word) > 1:
            best = min(zip(word, word[1:]), key=lambda pair: ranks.get(pair, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids.extend(vocab[part] for part in word)
    return ids


def _merge_ranks(path) -> dict[tuple[str, str], int]:
    lines = path.read_text(encoding="utf-8").split("\n")[1:]
    return {tuple(line.split()): rank for rank, line in enumerate(line for line in lines if line.strip())}


@pytest.mark.parametrize("kind", ["roberta", "gpt2"])
def test_byte_level_bpe_matches_transformers_and_gpt2s_algorithm(release_files, kind):
    import transformers

    root, texts = release_files
    directory = root / kind
    added = GLM_ROBERTA_TOKENS if kind == "roberta" else GLM_GPT2_TOKENS
    ours = (roberta_bpe_tokenizer if kind == "roberta" else gpt2_bpe_tokenizer)(directory, added=added)
    cls = transformers.RobertaTokenizer if kind == "roberta" else transformers.GPT2Tokenizer
    # vocab.json + merges.txt, as from a release; RoBERTa's <mask> takes the space before it (RobertaTokenizer's
    # own default, and GLM's CommandToken('MASK', ..., lstrip=True))
    options = {"mask_token": transformers.AddedToken("<mask>", lstrip=True, special=True)} if kind == "roberta" else {}
    reference = cls.from_pretrained(str(directory), **options)
    reference.add_tokens(
        [
            transformers.AddedToken(
                token, special=True, normalized=False, lstrip=token in ("[MASK]", "[gMASK]", "[sMASK]")
            )
            for token in added
        ],
        special_tokens=True,
    )
    for token, wanted in added.items():
        assert ours.token_to_id(token) == reference.convert_tokens_to_ids(token) == wanted
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    ranks = _merge_ranks(directory / "merges.txt")
    for text in texts:
        ids = ours.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False), text
        assert ids == bpe_reference(vocab, ranks, text), text
        assert ours.decode(ids) == text
    glm_mask = "[MASK]" if kind == "gpt2" else "<mask>"
    marked = f"The capital of France is {glm_mask}. <|startofpiece|> Paris<|endofpiece|>"
    assert ours.encode(marked) == reference.encode(marked, add_special_tokens=False)
    assert ours.encode(marked)[5:7] == [ours.token_to_id(glm_mask), ours.token_to_id(".")]  # the space is taken
    assert ours.vocab_size == (50267 if kind == "roberta" else 50265)


def test_release_tokenizer_picks_by_files(release_files, tmp_path):
    root, _ = release_files
    assert release_tokenizer(root / "bert").vocab_size == 30522
    assert release_tokenizer(root / "roberta").mask_id == 50264  # <mask>: RoBERTa
    gpt2 = release_tokenizer(root / "gpt2", added=GLM_GPT2_TOKENS)
    assert gpt2.pad_id == 50256 and gpt2.mask_id == 50260 and gpt2.cls_id == 50259  # pad: <|endoftext|>
    saved = TextTokenizer.load(gpt2.save(tmp_path / "converted"))  # as a converted directory holds it
    text = "Paris is [MASK]. [gMASK] <|startofpiece|> the capital<|endofpiece|>"
    assert saved.encode(text) == gpt2.encode(text) and saved.vocab_size == gpt2.vocab_size == 50265
    empty = tmp_path / "empty"
    empty.mkdir()
    assert release_tokenizer(empty) is None
    (tmp_path / "vocab.txt").write_text((root / "bert/vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}', encoding="utf-8")
    assert release_tokenizer(tmp_path).encode("Crème") != release_tokenizer(root / "bert").encode("Crème")


def test_an_added_token_that_cannot_get_its_id_is_one_line(release_files):
    root, _ = release_files
    with pytest.raises(
        CtxlmError,
        match=r"vocab.txt: <\|endofpiece\|> would get id 30523, the release gives it "
        r"30600",
    ):
        bert_wordpiece_tokenizer(root / "bert/vocab.txt", added={"<|startofpiece|>": 30522, "<|endofpiece|>": 30600})


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2"])
def test_ids_equal_the_official_glm_tokenizers(release_files, kind):
    """`official_ids.json.xz`: what THUDM/GLM's own `data_utils/wordpiece.py` / `tokenization_gpt2.py` gave the
    same texts (tests/fixtures/official/tokenizers/regenerate.py)."""
    root, texts = release_files
    official = json.loads(lzma.decompress((FIXTURES / "official_ids.json.xz").read_bytes()))
    assert official["texts"] == len(texts) and official["official"].startswith("THUDM/GLM 4f61ed7")
    ours = release_tokenizer(root / kind)
    mismatched = [text for text, want in zip(texts, official[kind]) if ours.encode(text) != want]
    assert mismatched == []
