"""Tokenizer training and loading: special ids, normalization, WordPiece pieces, HF files."""

import itertools
import json
import re

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ctxlm.errors import CtxlmError
from ctxlm.tokenization import SENTINEL_TOKENS, SPECIAL_TOKENS, UNKNOWN_WORD_MARKER, TextTokenizer, train_tokenizer

SLICE_LINES = 400


@pytest.fixture(scope="module")
def wiki_slice(data_dir, tmp_path_factory):
    """The first lines of a Wikipedia shard (a few documents), as a corpus file."""
    source = data_dir / "pretrain" / "wikipedia" / "sents_008.txt"
    with open(source, encoding="utf-8") as handle:
        text = "".join(itertools.islice(handle, SLICE_LINES))
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(wiki_slice, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tokenizer")
    return train_tokenizer(wiki_slice, 1200, out_dir), out_dir


def test_special_tokens_get_ids_0_to_9(trained):
    tokenizer, _ = trained
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(10))
    assert [tokenizer.id_to_token(i) for i in range(10)] == SPECIAL_TOKENS
    roles = [tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id]
    assert roles == [0, 1, 2, 3, 4]
    assert (tokenizer.bos_id, tokenizer.eos_id) == (2, 3)
    assert [tokenizer.special_id(t) for t in ["[sop]", "[eop]", "[sMASK]", "[gMASK]", "[P]"]] == [5, 6, 7, 8, 9]
    assert tokenizer.special_ids.tolist() == list(range(110))  # SPECIAL_TOKENS, then [S0]..[S99]


def test_vocab_size_and_replace_pool(trained):
    tokenizer, _ = trained
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    assert tokenizer.vocab_size == len(vocab) == max(vocab.values()) + 1
    assert 900 < tokenizer.vocab_size <= 1200 + 1  # the trained pieces, then the "<unk>" marker
    pool = tokenizer.replace_pool
    assert pool.dtype == np.int64
    reserved = set(SPECIAL_TOKENS) | set(SENTINEL_TOKENS)
    assert pool.tolist() == [i for i in range(tokenizer.vocab_size) if tokenizer.id_to_token(i) not in reserved]
    assert tokenizer.sentinel_ids == list(range(10, 110))


def test_uncased_and_accents_stripped(trained):
    tokenizer, _ = trained
    assert tokenizer.encode("The LABOUR Party") == tokenizer.encode("the labour party")
    assert tokenizer.encode("Café Élite") == tokenizer.encode("cafe elite")
    assert all(
        tokenizer.id_to_token(i) == tokenizer.id_to_token(i).lower() for i in tokenizer.encode("The LABOUR Party")
    )


def test_rare_words_split_into_continuation_pieces(trained):
    tokenizer, _ = trained
    pieces = [tokenizer.id_to_token(i) for i in tokenizer.encode("unpredictability")]
    assert len(pieces) > 1
    assert not pieces[0].startswith("##") and all(p.startswith("##") for p in pieces[1:])
    assert "".join(p.removeprefix("##") for p in pieces) == "unpredictability"


def test_decode_inverts_encode_for_plain_words(trained, wiki_slice):
    tokenizer, _ = trained
    words = [w for w in wiki_slice.read_text(encoding="utf-8").split() if re.fullmatch(r"[A-Za-z]+", w)]
    assert len(words) > 1000
    texts = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text.lower()
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(t) for t in texts]


def test_encode_adds_no_specials_and_decode_can_keep_them(trained):
    tokenizer, _ = trained
    ids = tokenizer.encode("he met the president")
    assert not set(ids) & set(range(10))
    with_mask = ids[:2] + [tokenizer.mask_id] + ids[2:]
    assert "[MASK]" not in tokenizer.decode(with_mask)
    assert "[MASK]" in tokenizer.decode(np.array(with_mask), skip_special_tokens=False)


def test_unknown_word_marker_is_one_ordinary_token(trained):
    """Gigaword's (WikiText's, PTB's) "<unk>" is one token, not "<", "un", "##k", ">": it decodes
    back to itself, is not the tokenizer's [UNK] and not special (so generation may produce it)."""
    tokenizer, _ = trained
    marker = tokenizer.token_to_id(UNKNOWN_WORD_MARKER)
    ids = tokenizer.encode("police said <unk> was arrested and <UNK> fled")
    assert ids.count(marker) == 2 and len(ids) == len(tokenizer.encode("police said x was arrested and y fled"))
    assert tokenizer.decode(ids) == "police said <unk> was arrested and <unk> fled"
    assert marker != tokenizer.unk_id and marker not in tokenizer.special_ids and marker in tokenizer.replace_pool


def test_lettered_word_starts_are_the_pieces_that_begin_a_word_with_a_letter(trained):
    """`block_word_repeats` bans these: words ("the", "<unk>"), not "##" pieces, digits, "#", "," or specials."""
    tokenizer, _ = trained
    starts = set(tokenizer.lettered_word_start_ids())
    vocab = {tokenizer.id_to_token(i): i for i in range(len(tokenizer))}
    assert {vocab["the"], vocab["<unk>"]} <= starts
    assert all(vocab[t] not in starts for t in ("#", ",", ".", "[SEP]", "[CLS]", "[PAD]") if t in vocab)
    assert not any(tokenizer.id_to_token(i).startswith("##") for i in starts)
    assert all(any(c.isalpha() for c in tokenizer.id_to_token(i)) for i in starts)


def test_save_and_load_round_trip(trained, tmp_path):
    tokenizer, out_dir = trained
    assert (out_dir / "tokenizer.json").is_file()
    from_dir = TextTokenizer.load(out_dir)
    from_file = TextTokenizer.load(tokenizer.save(tmp_path / "copy"))
    text = "Foot served as a Member of Parliament from 1945 to 1955."
    assert from_dir.encode(text) == from_file.encode(text) == tokenizer.encode(text)
    assert from_dir.content_sha256 == from_file.content_sha256 == tokenizer.content_sha256
    assert from_dir.vocab_size == tokenizer.vocab_size


def test_trains_from_jsonl_field(tmp_path):
    corpus = tmp_path / "rows.jsonl"
    rows = [{"body": f"zyxwv quorum number {i}. The quorum met."} for i in range(20)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tokenizer = train_tokenizer(corpus, 200, text_field="body")
    assert tokenizer.token_to_id("quorum") is not None
    assert tokenizer.token_to_id("zyxwv") is not None
    with pytest.raises(CtxlmError, match=r"rows\.jsonl:1: no text field \(looked for text, paragraphs"):
        train_tokenizer(corpus, 200)
    with pytest.raises(CtxlmError, match=r"rows\.jsonl:1: field 'text' missing"):
        train_tokenizer(corpus, 200, text_field="text")


@pytest.fixture
def roberta_style(tmp_path):
    """A byte-level BPE tokenizer.json with RoBERTa/BART special tokens and post-processor."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(["The cat sat on the mat.", "A dog sat on the log."] * 10, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_roberta_style_role_ids(roberta_style):
    tokenizer = TextTokenizer.load(roberta_style)
    ids = (tokenizer.cls_id, tokenizer.pad_id, tokenizer.sep_id, tokenizer.unk_id, tokenizer.mask_id)
    assert ids == (0, 1, 2, 3, 4)
    assert tokenizer.special_ids.tolist() == [0, 1, 2, 3, 4]
    assert tokenizer.replace_pool.tolist() == list(range(5, tokenizer.vocab_size))
    ids = tokenizer.encode("The cat sat.")
    assert ids and not set(ids) & {0, 1, 2, 3, 4}  # the post-processor's <s> ... </s> is not added
    assert tokenizer.decode(ids) == "The cat sat."
    with pytest.raises(CtxlmError, match=r"tokenizer\.json has no \[sop\] token"):
        tokenizer.special_id("[sop]")


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(CtxlmError, match=r"missing\.json: tokenizer file not found"):
        TextTokenizer.load(tmp_path / "missing.json")
    with pytest.raises(CtxlmError, match=r"tokenizer\.json: tokenizer file not found"):
        TextTokenizer.load(tmp_path)  # a directory without tokenizer.json
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"broken\.json: not a valid tokenizer\.json") as caught:
        TextTokenizer.load(broken)
    assert "\n" not in str(caught.value)


def test_train_rejects_bad_arguments(wiki_slice, tmp_path):
    with pytest.raises(CtxlmError, match="vocab_size"):
        train_tokenizer(wiki_slice, 5)
    with pytest.raises(CtxlmError, match=r"nowhere\.txt: corpus path not found"):
        train_tokenizer(tmp_path / "nowhere.txt", 500)
