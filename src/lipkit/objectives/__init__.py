"""Objectives (OBJECTIVES.md): one module per loss, each registering its builder by name.

    from lipkit.objectives import build_objective
    objective = build_objective(cfg.objective)  # an Objective; objective(model_outputs)["loss"]

`base` holds the contract every objective follows (named `*_loss` terms, summed in at least fp32),
`registration` the table of names (`register`), `registry` the look-up over every built-in
objective, `composite` the weighted sum xCLIP is made of.
"""
from lipkit.faces import lazy_face

_HOMES = {
    "HEAD_CLIP": "base", "HEAD_PROTOTYPES": "base", "HEAD_SSL": "base", "Objective": "base", "at_least_fp32": "base",
    "available_objectives": "registry", "build_objective": "registry", "register": "registration",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
