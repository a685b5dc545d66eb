"""Objectives (OBJECTIVES.md): one module per loss, each registering its builder by name.

    from lipkit.objectives import build_objective
    objective = build_objective(cfg.objective)  # an Objective; objective(model_outputs)["loss"]

`base` holds the contract every objective follows (named `*_loss` terms, summed in at least fp32),
`registry` the names, `composite` the weighted sum xCLIP is made of.
"""
from lipkit.objectives import clip, clip_reg, cyclip, nclip, siglip, square, xclip  # noqa: F401  (each registers)
from lipkit.objectives.base import HEAD_CLIP, HEAD_PROTOTYPES, Objective, at_least_fp32
from lipkit.objectives.registry import available_objectives, build_objective, register

__all__ = ["HEAD_CLIP", "HEAD_PROTOTYPES", "Objective", "at_least_fp32", "available_objectives", "build_objective",
           "register"]
