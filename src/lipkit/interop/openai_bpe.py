"""OpenAI CLIP's BPE (open_clip's SimpleTokenizer, pure Python) as a `tokenizers` pipeline, so an
imported model keeps its tokenizer in a tokenizer.json like every lipkit run.

SimpleTokenizer cleans the text with ftfy (curly quotes straightened, mojibake repaired) and HTML
unescaping, collapses whitespace and lower-cases; splits words with one regex, maps bytes to
printable characters, merges with `</w>` marking each word's last symbol, and wraps the ids in its
start and end tokens. The pipeline below does the same, except ftfy's rarer repairs and HTML
entities (mojibake, `&amp;`); the import then checks both on probe captions.
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
SINGLE_QUOTES, DOUBLE_QUOTES = "[\u02bc\u2018-\u201b]", "[\u201c-\u201f]"  # what ftfy's uncurl_quotes straightens


def simple_tokenizer_pipeline(simple) -> Tokenizer:
    """From a SimpleTokenizer's vocabulary (`encoder`), merge ranks and special ids."""
    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    hf = Tokenizer(models.BPE(vocab=dict(simple.encoder), merges=merges, end_of_word_suffix="</w>",
                              continuing_subword_prefix="", fuse_unk=False))
    start, end = simple.decoder[simple.sot_token_id], simple.decoder[simple.eot_token_id]
    hf.add_special_tokens([start, end])
    hf.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(SINGLE_QUOTES), "'"), normalizers.Replace(Regex(DOUBLE_QUOTES), '"'),
        normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase(),
    ])
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORDS), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}", special_tokens=[(start, simple.sot_token_id), (end, simple.eot_token_id)])
    return hf
