"""A word-level tokenizer built locally with `tokenizers`, laid out like UMT5's (pad 0, eos 1, unk 2)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

# UMT5's special tokens and ids (google/umt5-xxl tokenizer_config.json), kept so that code written for the real
# tokenizer (padding with id 0, the appended </s>) behaves the same on this one.
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
PUNCTUATION = tuple(",.;:!?'\"-")


def build_word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Build a lower-casing word-level tokenizer over `words`; unknown words map to <unk>, </s> is appended."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in [*PUNCTUATION, *sorted({w.lower() for w in words})]:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
