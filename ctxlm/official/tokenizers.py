"""The releases' tokenizers as ctxlm `TextTokenizer`s, built from the files a release ships.

- BERT WordPiece (`vocab.txt`: glm-large, UniLMv2): BertTokenizer's pipeline: clean the text, split CJK
  characters, lower-case and strip accents when uncased, split on whitespace and punctuation, greedy longest
  match with "##" continuations (100 characters at most a word, else [UNK]).
- RoBERTa / GPT-2 byte-level BPE (`vocab.json` + `merges.txt`: glm-roberta-large, glm-10b): GPT-2's regex
  split, bytes as printable characters, the merges in rank order; no prefix space.

GLM's own tokens come on top at the ids its code gives them (THUDM/GLM `data_utils/tokenization.py`:
`BertWordPieceTokenizer` and `GPT2BPETokenizer` number their command tokens from the text vocabulary's size
on): `GLM_BERT_TOKENS`, `GLM_ROBERTA_TOKENS`, `GLM_GPT2_TOKENS`. `encode` adds no [CLS]/[SEP] (the readers
and objectives place them), as everywhere in ctxlm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from ..errors import CtxlmError
from ..tokenization import TextTokenizer

BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ROBERTA_SPECIAL = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
GPT2_SPECIAL = ("<|endoftext|>",)

# glm-large (bert-large-uncased, 30522 pieces): `add_block_symbols` puts sop/eop right after the vocabulary.
GLM_BERT_TOKENS = {"<|startofpiece|>": 30522, "<|endofpiece|>": 30523}
# glm-roberta-large (RoBERTa's 50265): sop/eop after the vocabulary.
GLM_ROBERTA_TOKENS = {"<|startofpiece|>": 50265, "<|endofpiece|>": 50266}
# glm-10b (GPT-2's 50257, `--task-mask`): sop, eop, [CLS], [MASK], [SEP], [UNK], then [gMASK], [sMASK].
GLM_GPT2_TOKENS = {
    "<|startofpiece|>": 50257,
    "<|endofpiece|>": 50258,
    "[CLS]": 50259,
    "[MASK]": 50260,
    "[SEP]": 50261,
    "[UNK]": 50262,
    "[gMASK]": 50263,
    "[sMASK]": 50264,
}
# The GLM code strips the space before these (CommandToken(..., lstrip=True)), as RoBERTa does before <mask>.
LSTRIP_TOKENS = ("<mask>", "[MASK]", "[gMASK]", "[sMASK]")


def bert_wordpiece_tokenizer(
    vocab_file: str | Path, lowercase: bool = True, added: Mapping[str, int] | None = None
) -> TextTokenizer:
    """BERT's WordPiece from a `vocab.txt` (one piece a line, id = line number); uncased (`lowercase`)
    also strips accents, as BertTokenizer(do_lower_case=True) does; `added`: token → the id it must get."""
    vocab_file = Path(vocab_file)
    lines = _read_text(vocab_file).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab = {}
    for index, piece in enumerate(lines):
        vocab[piece] = index  # as BertTokenizer's load_vocab: a repeated line keeps its last id (none repeat)
    if "[UNK]" not in vocab:
        raise CtxlmError(f"{vocab_file}: no [UNK] line (not a BERT vocab.txt)")
    tokenizer = Tokenizer(
        models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100)
    )
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return _with_special(tokenizer, [t for t in BERT_SPECIAL if t in vocab], added, vocab_file)


def roberta_bpe_tokenizer(directory: str | Path, added: Mapping[str, int] | None = None) -> TextTokenizer:
    """RoBERTa's byte-level BPE from `directory/vocab.json` + `merges.txt` (<s> <pad> </s> <unk> <mask>
    special; <mask> takes the space before it and a piece missing from vocab.json is <unk>, as RobertaTokenizer)."""
    return _byte_level_bpe(Path(directory), ROBERTA_SPECIAL, "<unk>", added)


def gpt2_bpe_tokenizer(directory: str | Path, added: Mapping[str, int] | None = None) -> TextTokenizer:
    """GPT-2's byte-level BPE from `directory/vocab.json` + `merges.txt` (<|endoftext|> special, and the unknown
    token, as GPT2Tokenizer's)."""
    return _byte_level_bpe(Path(directory), GPT2_SPECIAL, "<|endoftext|>", added)


def release_tokenizer(
    directory: str | Path, added: Mapping[str, int] | None = None, lowercase: bool | None = None
) -> TextTokenizer | None:
    """The tokenizer of a release directory, by the files it holds: `vocab.txt` → BERT WordPiece (uncased
    unless `lowercase=False` or `tokenizer_config.json` says `do_lower_case: false`); `vocab.json` +
    `merges.txt` → RoBERTa BPE when the vocabulary has <s> and <mask>, else GPT-2 BPE. None when the
    directory has neither."""
    directory = Path(directory)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        vocab = _read_json(directory / "vocab.json")
        roberta = "<s>" in vocab and "<mask>" in vocab
        return (roberta_bpe_tokenizer if roberta else gpt2_bpe_tokenizer)(directory, added)
    if (directory / "vocab.txt").is_file():
        if lowercase is None:
            config = directory / "tokenizer_config.json"
            lowercase = bool(_read_json(config).get("do_lower_case", True)) if config.is_file() else True
        return bert_wordpiece_tokenizer(directory / "vocab.txt", lowercase, added)
    return None


def _byte_level_bpe(
    directory: Path, special: tuple[str, ...], unk: str, added: Mapping[str, int] | None
) -> TextTokenizer:
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab = _read_json(vocab_file)
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise CtxlmError(f"{vocab_file}: expected a JSON object of piece → id")
    merges = []
    for number, line in enumerate(_read_text(merges_file).split("\n"), start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CtxlmError(f"{merges_file}:{number}: expected two pieces, got {line!r}")
        merges.append((parts[0], parts[1]))
    unk = unk if unk in vocab else None
    try:  # a piece missing from vocab.json becomes the unknown token, as RobertaTokenizer / GPT2Tokenizer
        tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=False))
    except Exception as error:  # tokenizers raises plain Exception on inconsistent files
        raise CtxlmError(f"{merges_file}: cannot build the BPE ({str(error).splitlines()[0]})") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return _with_special(tokenizer, [t for t in special if t in vocab], added, vocab_file)


def _with_special(
    tokenizer: Tokenizer, special: list[str], added: Mapping[str, int] | None, source: Path
) -> TextTokenizer:
    """`tokenizer` with its own special tokens kept whole and `added` appended in id order; each added
    token must land at its id (the next free one, or the one the vocabulary already gives it)."""
    tokenizer.add_special_tokens([_special(token) for token in special])
    for token, wanted in sorted((added or {}).items(), key=lambda item: item[1]):
        tokenizer.add_special_tokens([_special(token)])
        got = tokenizer.token_to_id(token)
        if got != wanted:
            raise CtxlmError(
                f"{source}: {token} would get id {got}, the release gives it {wanted} (the added "
                f"tokens must follow the {tokenizer.get_vocab_size(with_added_tokens=False)} pieces)"
            )
    return TextTokenizer(tokenizer, source=str(source))


def _special(token: str) -> AddedToken:
    return AddedToken(token, special=True, normalized=False, lstrip=token in LSTRIP_TOKENS)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CtxlmError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CtxlmError(f"{path}: cannot read ({error})") from None


def _read_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise CtxlmError(f"{path}: invalid JSON ({error})") from None
