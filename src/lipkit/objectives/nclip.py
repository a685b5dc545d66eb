"""nCLIP (OBJECTIVES.md §2): cross-modal swapped prediction over K prototypes, no negatives.

    L = ½ mean_i [H(sg q_i^T, p_i^I) + H(sg q_i^I, p_i^T)]            align
      + λ_sharp · ½ mean_i [H(p_i^I) + H(p_i^T)]                      sharpness
      + λ_smooth · ½ [(log K − H(p̄^I)) + (log K − H(p̄^T))]           smoothness (ME-MAX)

The default is the information-maximisation form: unsharpened targets (τ_t = τ = 0.1) and
λ_sharp = λ_smooth = 1, so the two regularizers are minus the mutual information
I = H(p̄) − mean_i H(p_i) between input and prototype, per modality; together with the prototype
heads' global-batch BatchNorm (lipkit.models.heads) it neither collapses to one prototype nor to
an input-independent output, alone or inside xCLIP. Why:

- Sharpened targets (τ_t = 0.05 < τ) with λ_sharp = 0, the first default, are minimised by a
  constant output (for input-independent p, H(p̄) = H(p), and a spike over a flat tail scores
  below any clustering): every nCLIP run of the first results page collapsed that way, and so
  does the synthetic test without the BatchNorm (tests/test_nclip_behaviour.py). With the
  BatchNorm they cluster clean synthetic pairs, but collapse once 30% of the captions name
  another class, where the default keeps the class information.
- Without the heads' BatchNorm, nCLIP alone collapses on real data within the warm-up (the
  towers output a constant, I = 0; tests/test_nclip_real_data.py). Of eight mechanisms tried on
  fashion-tiny (an EMA teacher, plain or sharpened and centred; Sinkhorn targets; frozen
  prototypes; a SimSiam predictor; a lower lr; λ_smooth = 5; BatchNorm), only the BatchNorm
  removed that collapse (issue 13).

The other forms stay as settings: `balance` sinkhorn, sinkhorn_memax (MSN), center (DINO), none;
`target_temperature` < `temperature` sharpens.

Every batch statistic (mean prediction, Sinkhorn sums, centers) is reduced over all ranks, with
gradient where it carries one, so the loss and gradient equal those of the global batch.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lipkit.config import NClipObjectiveConfig, ObjectiveConfig
from lipkit.distributed import all_reduce_mean, all_reduce_sum_nograd, world_size
from lipkit.objectives.base import HEAD_PROTOTYPES, Objective, at_least_fp32
from lipkit.objectives.registration import register
_SINKHORN = ("sinkhorn", "sinkhorn_memax")
_MEMAX = ("memax", "sinkhorn_memax")


def row_entropy(log_p: torch.Tensor) -> torch.Tensor:
    return -(log_p.exp() * log_p).sum(-1)


def row_cross_entropy(q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    return -(q * log_p).sum(-1)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of a distribution that may hold exact zeros (0 log 0 = 0, finite gradient)."""
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(-1)


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks whose backward is exact for this package's loss convention."""
    return all_reduce_mean(x) * world_size()


@torch.no_grad()
def global_max(x: torch.Tensor) -> torch.Tensor:
    m = x.max()
    if world_size() > 1:
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return m


def sinkhorn(logits: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """SwAV's distributed Sinkhorn-Knopp: [B_local, K] logits -> [B_local, K] targets whose rows
    sum to 1 and whose prototype marginals over the global batch are equal."""
    # Shifting by a constant cancels in the first normalisation; it only prevents exp overflow.
    q = torch.exp((logits - global_max(logits)) / epsilon).T  # [K, B_local]
    k, n_global = q.shape[0], q.shape[1] * world_size()
    q = q / global_sum(q.sum())
    for _ in range(iterations):
        q = q / global_sum(q.sum(dim=1, keepdim=True)) / k  # every prototype gets mass 1/K
        q = q / q.sum(dim=0, keepdim=True) / n_global  # every sample gets mass 1/N
    return (q * n_global).T


class NClipObjective(Objective):
    required_heads = frozenset({HEAD_PROTOTYPES})

    def __init__(self, cfg: NClipObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or NClipObjectiveConfig()
        if self.cfg.balance == "center":
            # Sized on first use (K is a model setting); see _load_from_state_dict.
            self.register_buffer("center_image", torch.zeros(0))
            self.register_buffer("center_text", torch.zeros(0))

    def term_weight(self, name: str) -> float:
        return {"smooth_loss": self.cfg.lambda_smooth, "sharp_loss": self.cfg.lambda_sharp}.get(name, 1.0)

    # ------------------------------------------------------------------ targets
    def _center(self, name: str, logits: torch.Tensor) -> torch.Tensor:
        c = getattr(self, name)
        if c.numel() == 0:
            c = torch.zeros(logits.shape[-1], dtype=logits.dtype, device=logits.device)
            setattr(self, name, c)
        return c

    @torch.no_grad()
    def _update_center(self, name: str, logits: torch.Tensor) -> None:
        batch_mean = all_reduce_sum_nograd(logits.detach().mean(0)) / world_size()
        c = getattr(self, name)
        c.mul_(self.cfg.center_momentum).add_(batch_mean.to(c.dtype), alpha=1 - self.cfg.center_momentum)

    def _target(self, logits: torch.Tensor, center_name: str) -> torch.Tensor:
        cfg = self.cfg
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cfg.stopgrad_target):
            if cfg.balance in _SINKHORN:
                q = sinkhorn(logits, cfg.sinkhorn_epsilon, cfg.sinkhorn_iterations)
            elif cfg.balance == "center":
                q = F.softmax((logits - self._center(center_name, logits)) / cfg.target_temperature, dim=-1)
            else:
                q = F.softmax(logits / cfg.target_temperature, dim=-1)
        if cfg.balance == "center" and self.training:
            self._update_center(center_name, logits)
        return q.detach() if cfg.stopgrad_target else q

    # ------------------------------------------------------------------ loss
    def terms(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        img = at_least_fp32(outputs["image_protos"])
        txt = at_least_fp32(outputs["text_protos"])
        log_k = math.log(img.shape[-1])

        log_p_img = F.log_softmax(img / cfg.temperature, dim=-1)
        log_p_txt = F.log_softmax(txt / cfg.temperature, dim=-1)
        q_img = self._target(img, "center_image")
        q_txt = self._target(txt, "center_text")

        out = {
            "align_loss": 0.5
            * (row_cross_entropy(q_txt, log_p_img).mean() + row_cross_entropy(q_img, log_p_txt).mean()),
            "sharp_loss": 0.5 * (row_entropy(log_p_img).mean() + row_entropy(log_p_txt).mean()),
        }
        if cfg.balance in _MEMAX:
            p_bar_img = all_reduce_mean(log_p_img.exp().mean(0))
            p_bar_txt = all_reduce_mean(log_p_txt.exp().mean(0))
            out["smooth_loss"] = 0.5 * ((log_k - entropy(p_bar_img)) + (log_k - entropy(p_bar_txt)))
        else:
            with torch.no_grad():
                p_bar_img = all_reduce_sum_nograd(log_p_img.exp().mean(0)) / world_size()
                p_bar_txt = all_reduce_sum_nograd(log_p_txt.exp().mean(0)) / world_size()
        out.update(self._diagnostics(img, txt, log_p_img, log_p_txt, p_bar_img, p_bar_txt, log_k))
        return out

    @torch.no_grad()
    def _diagnostics(self, img, txt, log_p_img, log_p_txt, p_bar_img, p_bar_txt, log_k):
        k = img.shape[-1]
        arg_img, arg_txt = img.argmax(-1), txt.argmax(-1)
        # distinct_prototypes: the union of image and text argmax prototypes over the global batch
        counts = all_reduce_sum_nograd(torch.bincount(arg_img, minlength=k) + torch.bincount(arg_txt, minlength=k))
        max_prob = log_p_img.detach().exp().amax(-1).sum() + log_p_txt.detach().exp().amax(-1).sum()
        sums = all_reduce_sum_nograd(torch.stack([
            max_prob, (arg_img == arg_txt).sum().to(max_prob.dtype), max_prob.new_tensor(img.shape[0]),
            row_entropy(log_p_img.detach()).sum(), row_entropy(log_p_txt.detach()).sum(),
        ]))
        n_global = sums[2]
        # Mutual information between input and prototype, I = H(p_bar) - mean H(p_i): 0 for any
        # input-independent output (one prototype or uniform), log min(N, K) at most in a batch
        log_capacity = math.log(max(2.0, min(float(n_global), k)))
        h_bar_img, h_bar_txt = entropy(p_bar_img.detach()), entropy(p_bar_txt.detach())
        return {
            "distinct_prototypes": (counts > 0).sum().to(img.dtype),
            "mean_max_prob": sums[0] / (2 * n_global),
            "usage_entropy_ratio": 0.5 * (h_bar_img + h_bar_txt) / log_k,
            "image_usage_entropy_ratio": h_bar_img / log_k,  # ~0: one prototype for every input
            "text_usage_entropy_ratio": h_bar_txt / log_k,
            "argmax_agreement": sums[1] / n_global,
            "image_mi_ratio": (h_bar_img - sums[3] / n_global) / log_capacity,
            "text_mi_ratio": (h_bar_txt - sums[4] / n_global) / log_capacity,
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Centers are created lazily; adopt the checkpoint's size before the strict shape check.
        for name in ("center_image", "center_text"):
            key = prefix + name
            if name in self._buffers and key in state_dict and getattr(self, name).numel() == 0:
                setattr(self, name, torch.zeros_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register("nclip")
def build(cfg: ObjectiveConfig) -> NClipObjective:
    return NClipObjective(cfg.nclip)
