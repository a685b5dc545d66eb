"""The objectives' typed configuration (`RunConfig.objective`): one dataclass per objective, and
`ObjectiveConfig.validate`, the range checks parsing cannot make. Re-exported by lipkit.config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lipkit.typed_config import ConfigError, check_choices


@dataclass
class ClipObjectiveConfig:
    direction_reduction: Literal["mean", "sum"] = "mean"
    # InfoNCE targets (1 - eps) on the positive plus eps spread over all N columns (as
    # F.cross_entropy's label_smoothing; clip-rocket's strong recipe uses 0.1)
    label_smoothing: float = 0.0
    # with data.image_views > 1: "first" aligns the first view with the text; "all" averages the
    # InfoNCE of every view with the text (clip-rocket's multi-view CLIP)
    views: Literal["first", "all"] = "first"


@dataclass
class SlipObjectiveConfig:
    """SLIP (Mu et al. 2022): CLIP on the first view + ssl_weight * NT-Xent (SimCLR) between the
    last two image views, through the model's "ssl" projector."""

    temperature: float = 0.1
    ssl_weight: float = 1.0


@dataclass
class NClipObjectiveConfig:
    # Default: information maximisation (OBJECTIVES.md 2): unsharpened stop-gradient targets and
    # lambda_sharp = lambda_smooth, so the regularizers are minus the mutual information between
    # input and prototype, per modality.
    temperature: float = 0.1  # student temperature tau
    target_temperature: float = 0.1  # targets tau_t; below tau sharpens them (rewards a flat-tailed collapse);
    # unused by the sinkhorn balances, whose sharpness is sinkhorn_epsilon
    stopgrad_target: bool = True
    # targets and balancing: memax = softmax targets + ME-MAX; sinkhorn = equipartitioned targets;
    # sinkhorn_memax = both (MSN); center = centred softmax targets (DINO); none = softmax targets only
    balance: Literal["memax", "sinkhorn", "sinkhorn_memax", "center", "none"] = "memax"
    lambda_smooth: float = 1.0  # weight of the ME-MAX smoothness term (memax, sinkhorn_memax)
    lambda_sharp: float = 1.0  # weight of the sharpness (per-sample entropy) term
    sinkhorn_iterations: int = 3
    sinkhorn_epsilon: float = 0.05
    center_momentum: float = 0.9


@dataclass
class XClipObjectiveConfig:
    w_clip: float = 1.0
    w_nclip: float = 1.0


@dataclass
class ClipRegObjectiveConfig:
    form: Literal["sqdist", "neg_cos"] = "sqdist"
    lam: float = field(default=0.1, metadata={"key": "lambda"})
    scale_by_logit_scale: bool = True
    pairs: Literal["positive", "negative", "both"] = "positive"


@dataclass
class SigLipObjectiveConfig:
    init_scale: float = 10.0  # t, stored as log t (as in the SigLIP paper)
    init_bias: float = -10.0  # b
    learnable: bool = True  # false keeps t and b fixed at their initial values
    chunk_size: int = 1024  # local rows scored per chunk (recomputed in backward); 0 = all at once


@dataclass
class CyClipObjectiveConfig:
    lambda_inmodal: float = 0.25  # lambda_1 on (S_II - S_TT)^2
    lambda_crossmodal: float = 0.25  # lambda_2 on (S_IT - S_TI)^2
    # batch_sum: the mean over the N^2 entries times N, as CyCLIP's published code, for which its
    # lambda = 0.25 was tuned (with the plain mean the terms are ~1e-3 of the CLIP loss and do
    # nothing); mean: the literal mean of OBJECTIVES.md 5
    reduction: Literal["mean", "batch_sum"] = "batch_sum"


@dataclass
class SquareObjectiveConfig:
    negative_weight: float = 1.0  # weight of mean_{i!=j} s_ij^2 against mean_i (s_ii - 1)^2


@dataclass
class ObjectiveConfig:
    name: str = "clip"
    clip: ClipObjectiveConfig = field(default_factory=ClipObjectiveConfig)
    nclip: NClipObjectiveConfig = field(default_factory=NClipObjectiveConfig)
    xclip: XClipObjectiveConfig = field(default_factory=XClipObjectiveConfig)
    clip_reg: ClipRegObjectiveConfig = field(default_factory=ClipRegObjectiveConfig)
    siglip: SigLipObjectiveConfig = field(default_factory=SigLipObjectiveConfig)
    cyclip: CyClipObjectiveConfig = field(default_factory=CyClipObjectiveConfig)
    square: SquareObjectiveConfig = field(default_factory=SquareObjectiveConfig)
    slip: SlipObjectiveConfig = field(default_factory=SlipObjectiveConfig)

    def validate(self) -> None:
        """One-line ConfigErrors for what parsing checks (the choices, again for a config built or
        changed in code) and for what it cannot (ranges); `build_objective` calls this."""
        check_choices(self, "objective")
        if not self.siglip.init_scale > 0:
            raise ConfigError(f"objective.siglip.init_scale: must be > 0, got {self.siglip.init_scale}")
        if self.siglip.chunk_size < 0:
            raise ConfigError(f"objective.siglip.chunk_size: must be >= 0 (0 = no chunking), "
                              f"got {self.siglip.chunk_size}")
        n = self.nclip
        for key, ok, rule in (("temperature", n.temperature > 0, "> 0"),
                              ("target_temperature", n.target_temperature > 0, "> 0"),
                              ("sinkhorn_epsilon", n.sinkhorn_epsilon > 0, "> 0"),
                              ("sinkhorn_iterations", n.sinkhorn_iterations >= 1, ">= 1"),
                              ("center_momentum", 0 <= n.center_momentum < 1, "in [0, 1)"),
                              ("lambda_smooth", n.lambda_smooth >= 0, ">= 0"),
                              ("lambda_sharp", n.lambda_sharp >= 0, ">= 0")):
            if not ok:  # NaN fails every rule too
                raise ConfigError(f"objective.nclip.{key}: must be {rule}, got {getattr(n, key)}")
        for key, value, ok, rule in (
                ("clip.label_smoothing", self.clip.label_smoothing, 0 <= self.clip.label_smoothing < 1, "in [0, 1)"),
                ("slip.temperature", self.slip.temperature, self.slip.temperature > 0, "> 0"),
                ("slip.ssl_weight", self.slip.ssl_weight, self.slip.ssl_weight >= 0, ">= 0")):
            if not ok:
                raise ConfigError(f"objective.{key}: must be {rule}, got {value}")
