"""Decoder tokenizers: a tiny one trained on the catalog text, or a checkpoint's own; both
extended with the prompt markers, one token per (layer, code) and ``<sid_end>``.

SID tokens are added last and in order, so they occupy one contiguous id range starting at
``base``: the decode mask and the SID-only output head rely on that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sidcore.decoder.prompt import MARKERS
from sidcore.decoder.vocab import SIDVocab

PAD, UNK = "<pad>", "<unk>"


def train_text_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """A small lower-cased BPE over whitespace/punctuation pieces, trained on catalog text."""
    tk = Tokenizer(models.BPE(unk_token=UNK))
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK], show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=PAD, unk_token=UNK)


def load_base_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def extend_with_sid_tokens(tok: PreTrainedTokenizerFast, sizes: tuple[int, ...]) -> int:
    """Add markers and SID tokens; return ``base``, the id of ``<s1_0>``."""
    tok.add_special_tokens({"additional_special_tokens": list(MARKERS)}, replace_extra_special_tokens=False)
    names = SIDVocab(sizes).token_strings()
    tok.add_tokens(names, special_tokens=True)
    ids = tok.convert_tokens_to_ids(names)
    base = ids[0]
    if ids != list(range(base, base + len(names))):
        raise ValueError("SID tokens did not get one contiguous id range; is the tokenizer already extended?")
    return base


def load_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(path))
