"""Zero-shot measures of a pair of encoders on held-out images against one prompt per class.

margin m(x) = s(x, y_c) - max_{k != c} s(x, y_k) in cosine units, and times the scale the
objective trained with (logit units). Top-r (every r from 1 to K) counts x as correct when fewer
than r prompts score above its own class; a tie goes to the lower class index, as in
lipkit.eval.zeroshot."""
from __future__ import annotations

import torch


@torch.no_grad()
def zero_shot_measures(
    image_embeds: torch.Tensor,
    prompt_embeds: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
) -> dict[str, float]:
    """image_embeds [n, d] and prompt_embeds [K, d] L2-normalised; labels [n] in 0..K-1."""
    sims = image_embeds @ prompt_embeds.T  # [n, K] cosines
    rows = torch.arange(sims.shape[0])
    own = sims[rows, labels]
    others = sims.clone()
    others[rows, labels] = float("-inf")
    margin = own - others.max(dim=-1).values
    classes = torch.arange(sims.shape[1])
    ahead = (sims > own[:, None]) | ((sims == own[:, None]) & (classes[None, :] < labels[:, None]))
    rank = ahead.sum(-1)  # 0 = top-1
    out = {f"top{r}": (rank < r).double().mean().item() for r in range(1, sims.shape[1] + 1)}
    out.update(
        margin_mean=margin.mean().item(),
        margin_p10=torch.quantile(margin.double(), 0.1).item(),
        margin_logit_mean=(scale * margin).mean().item(),
        margin_logit_p10=torch.quantile(scale * margin.double(), 0.1).item(),
        scale=float(scale),
    )
    return out


@torch.no_grad()
def positive_cosine(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> float:
    """Mean cosine of matched (noisy) image-text pairs."""
    return (image_embeds * text_embeds).sum(-1).mean().item()
