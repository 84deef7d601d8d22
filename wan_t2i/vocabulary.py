"""What a model cannot read in a prompt: the words its tokenizer maps to the unknown token.

Wan's UMT5 tokenizer splits any text into known pieces, so this finds nothing there; a model with a fixed word list
(the embedded demo model: `wan_t2i.demo.tokenizer`) silently drops every other word, and a user should be told.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def ignored_words(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[str]:
    """The words of `prompt` that `tokenizer` reads as its unknown token, each once, in the prompt's order.

    Args:
        tokenizer: a fast tokenizer (offsets map tokens back to the prompt); a slow one, or one without an unknown
            token, gives [].
        prompt: the text as the user typed it.

    Returns:
        The ignored words as they appear in `prompt` (case kept), e.g. ["purple", "elephant"].
    """
    if tokenizer.unk_token_id is None or not tokenizer.is_fast:
        return []
    encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    words: dict[str, str] = {}  # lower case -> the first spelling seen: "Purple" and "purple" are one word
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        if token == tokenizer.unk_token_id:
            words.setdefault(prompt[start:end].lower(), prompt[start:end])
    return list(words.values())
