"""SigLIP (OBJECTIVES.md §5): a sigmoid loss on every image-text pair, with a learnable scale t and
bias b that live in the objective.

    L = -(1/N) sum_i sum_j log sigmoid(z_ij * (t * x_i.y_j + b)),   z_ij = +1 if i == j else -1

over the global batch of N pairs (x image embeddings, y text embeddings, both L2-normalised).
With l = t*x.y + b, -log sigmoid(-l) = softplus(l) and softplus(l) - softplus(-l) = l, so row i is

    sum_j softplus(l_ij) - l_ii

which needs no label matrix at all: every pair is scored as a negative and the positive logit is
subtracted. Each rank scores its local image rows against the gathered text columns, in chunks of
`chunk_size` rows whose logits are recomputed in backward, so at most chunk_size x N logits are
alive at once. This rank's share is its row sum divided by its local row count; the mean over
ranks is the global loss.

t is stored as log t (the paper's parametrisation, init log 10): the optimizer then moves t
multiplicatively and it stays positive. The model's CLIP logit scale is not used.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lipkit.config import ObjectiveConfig, SigLipObjectiveConfig
from lipkit.distributed import all_gather_with_grad
from lipkit.objectives.base import HEAD_CLIP, Objective, at_least_fp32
from lipkit.objectives.registration import register


def negative_row_sums(image: torch.Tensor, all_text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor):
    """sum_j softplus(t * x_i.y_j + b) for every row i of `image`."""
    return F.softplus(scale * image @ all_text.T + bias).sum(-1)


def sigmoid_pair_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    all_text: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    chunk_size: int = 0,
) -> torch.Tensor:
    """This rank's share of the SigLIP loss: (1/B_local) sum over local rows of
    [sum_j softplus(l_ij) - l_ii]. `image`/`text` are this rank's rows, `all_text` every rank's."""
    rows = image.shape[0]
    positive = scale * (image * text).sum(-1) + bias
    if chunk_size <= 0 or chunk_size >= rows:
        negative = negative_row_sums(image, all_text, scale, bias)
    else:
        parts = []
        for start in range(0, rows, chunk_size):
            chunk = image[start : start + chunk_size]
            if torch.is_grad_enabled():
                # Recompute the chunk's logits in backward instead of keeping B_local x N of them.
                parts.append(checkpoint(negative_row_sums, chunk, all_text, scale, bias, use_reentrant=False))
            else:
                parts.append(negative_row_sums(chunk, all_text, scale, bias))
        negative = torch.cat(parts)
    return (negative - positive).sum() / rows


class SigLipObjective(Objective):
    required_heads = frozenset({HEAD_CLIP})
    uses_logit_scale = False  # its own scale t replaces the model's

    def __init__(self, cfg: SigLipObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or SigLipObjectiveConfig()
        self.log_scale = nn.Parameter(torch.tensor(math.log(self.cfg.init_scale)), requires_grad=self.cfg.learnable)
        self.bias = nn.Parameter(torch.tensor(float(self.cfg.init_bias)), requires_grad=self.cfg.learnable)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = at_least_fp32(outputs["image_embeds"])
        text = at_least_fp32(outputs["text_embeds"])
        all_text = all_gather_with_grad(text)
        scale, bias = at_least_fp32(self.scale), at_least_fp32(self.bias)
        loss = sigmoid_pair_loss(image, text, all_text, scale, bias, self.cfg.chunk_size)
        with torch.no_grad():
            diagnostics = {
                "siglip_scale": scale.detach().clone(),
                "siglip_bias": bias.detach().clone(),
                "positive_cosine": (image * text).sum(-1).mean(),
            }
        return {"sigmoid_loss": loss, **diagnostics}


@register("siglip")
def build(cfg: ObjectiveConfig) -> SigLipObjective:
    return SigLipObjective(cfg.siglip)
