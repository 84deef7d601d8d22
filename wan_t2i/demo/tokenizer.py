"""A word-level tokenizer built locally with `tokenizers`, laid out like UMT5's (pad 0, eos 1, unk 2)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

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


def portable_tokenizer_class(bundle: Path) -> None:
    """Record the tokenizer as `PreTrainedTokenizerFast`, a name transformers 4.x and 5.x both load.

    transformers 5 saves its fast tokenizers as `TokenizersBackend`, which transformers 4 (still common on Spaces and
    in older diffusers installs) cannot resolve; the file contents are the same either way.
    """
    config_path = bundle / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    index_path = bundle / "model_index.json"
    index = json.loads(index_path.read_text())
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
