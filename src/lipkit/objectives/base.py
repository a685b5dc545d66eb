"""The objective contract (OBJECTIVES.md §7).

An objective reads the tensors it needs from the model's output dict and returns named terms.
Keys ending in `_loss` are loss terms, computed in at least fp32 (`at_least_fp32` on the inputs,
whatever precision the model ran in): `forward` adds `loss` = sum of weight(term) * term. Every
other key is a diagnostic (a detached tensor). Objectives never see a model.

Distributed convention: outputs hold this rank's *local* batch; a term's value on one rank is the
rank-local share whose mean over ranks is the global value (see lipkit.distributed).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

# Keys a model output dict may carry (DESIGN.md, "Contracts").
HEAD_CLIP = "clip"  # image_embeds, text_embeds, logit_scale
HEAD_PROTOTYPES = "prototypes"  # image_protos, text_protos
HEAD_SSL = "ssl"  # image_ssl [B, V, d]: each image view's SLIP projection (data.image_views >= 2)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in at least fp32: bf16/fp16 inputs are promoted, float64 inputs (parity
    tests) stay float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class Objective(nn.Module):
    #: heads of the model this objective reads (HEAD_CLIP, HEAD_PROTOTYPES, HEAD_SSL)
    required_heads: ClassVar[frozenset[str]] = frozenset()
    #: whether it reads the model's `logit_scale`; one that does not leaves the scale without a
    #: gradient (and AdamW leaves it alone, in one process or many)
    uses_logit_scale: ClassVar[bool] = True
    #: views of each training image it reads when data.image_views is left at 0
    image_views: ClassVar[int] = 1

    def term_weight(self, name: str) -> float:
        """Weight of a `*_loss` term in the total; 1 unless the objective says otherwise."""
        return 1.0

    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.terms(outputs)
        loss_terms = [self.term_weight(k) * v for k, v in out.items() if k.endswith("_loss")]
        if not loss_terms:
            raise RuntimeError(f"{type(self).__name__} returned no '*_loss' term")
        out["loss"] = torch.stack([at_least_fp32(t) for t in loss_terms]).sum()
        return out
