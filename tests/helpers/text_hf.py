"""Shared by the tests (moved from tests/text/test_text_hf.py)."""

from __future__ import annotations

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "sparse", "autoencoders", "decompose",
         "activations", "into", "interpretable", "features", "residual", "streams", "carry", "information",
         "between", "blocks", "layer", "after"]


HF_DOCS = [
    "sparse autoencoders decompose activations into interpretable features .",
    "the quick brown fox jumps over the lazy dog . " * 6,
    "short .",
    "residual streams carry information between blocks , layer after layer .",
]


def gpt2_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *WORDS, ".", ","])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
