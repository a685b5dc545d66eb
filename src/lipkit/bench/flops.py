"""FLOPs of one training step, from the config (no model is built).

Convention: matrix products only (linear layers, the patch convolution, attention's two products,
the objective's similarity matrices), 2 FLOPs per multiply-add, as torch.utils.flop_counter counts
them; normalisations, activations, softmax and the rest are left out (they are memory-bound and
belong in the utilisation figure). Attention is counted over the whole L x L score matrix, causal
or not (a causal kernel may skip about half of it). Training = 3 x forward: a backward computes the
gradient of both a product's input and its weight, twice the forward. Accumulation by feature cache
(train.accum_steps > 1) runs the towers once more without gradient: 4 x forward for the towers.

The towers are lipkit's: the last block computes queries, attention output and MLP for the pooled
row only (the cls or EOS token, lipkit.models.transformer), keys and values for every position; a
caption is taken to fill the context (lipkit drops columns that are padding in every caption, so
short captions cost less)."""
from __future__ import annotations

from dataclasses import dataclass

from lipkit.bench.step_shape import StepShape


def block_flops(tokens: int, width: int, hidden: int, rows: int | None = None) -> int:
    """Forward FLOPs of one pre-norm block on one sample of `tokens` positions; `rows`: the block
    computes that many query rows only (the pooled row of a tower's last block)."""
    t, w = tokens, width
    q = t if rows is None else rows
    projections = 2 * q * w * w + 2 * t * w * 2 * w + 2 * q * w * w  # query; keys and values; output
    attention = 2 * q * t * w * 2  # scores and weighted values, summed over heads
    mlp = 2 * q * w * hidden * 2
    return projections + attention + mlp


def tower_flops(tokens: int, width: int, layers: int, mlp_ratio: float, pooled_row: bool) -> int:
    hidden = int(width * mlp_ratio)
    if layers == 0:
        return 0
    last = block_flops(tokens, width, hidden, rows=1 if pooled_row else None)
    return (layers - 1) * block_flops(tokens, width, hidden) + last


def vision_forward_flops(shape: StepShape) -> int:
    """One image in training (patch dropout applied)."""
    v = shape.cfg.model.vision
    patches = (v.image_size // v.patch_size) ** 2
    kept = max(1, round(patches * (1 - v.patch_dropout))) if v.patch_dropout > 0 else patches
    patchify = 2 * patches * v.width * v.channels * v.patch_size ** 2
    return patchify + tower_flops(kept + 1, v.width, v.layers, v.mlp_ratio, pooled_row=True)


def text_forward_flops(shape: StepShape) -> int:
    """One caption of the full context."""
    t = shape.cfg.model.text
    return tower_flops(t.context_length, t.width, t.layers, t.mlp_ratio, pooled_row=t.pooling != "mean")


def heads_forward_flops(shape: StepShape) -> int:
    """One pair through the adapters and the heads the step runs."""
    m = shape.cfg.model
    wv, wt = m.vision.width, m.text.width
    flops = m.adapter_layers * 4 * (wv * wv + wt * wt)
    if "clip" in shape.run_heads:
        flops += 2 * (wv + wt) * m.embed_dim
    if "prototypes" in shape.run_heads:
        p = m.prototypes
        flops += sum(2 * (w * p.hidden_dim + p.hidden_dim * p.bottleneck_dim + p.bottleneck_dim * p.num_prototypes)
                     for w in (wv, wt))
    return flops


def objective_forward_flops(shape: StepShape) -> int:
    """The similarity matrices of the whole batch of N pairs (every rank's rows against the
    gathered columns): CLIP scores both directions, SigLIP images against texts."""
    n, d = shape.global_batch, shape.cfg.model.embed_dim
    directions = {"clip": 2, "xclip": 2, "siglip": 1, "nclip": 0}[shape.cfg.objective.name]
    return directions * 2 * n * n * d


@dataclass(frozen=True)
class StepFlops:
    vision: int  # training FLOPs of the image tower over the global batch
    text: int
    heads: int
    objective: int

    @property
    def total(self) -> int:
        return self.vision + self.text + self.heads + self.objective

    @property
    def towers(self) -> int:
        return self.vision + self.text


def step_flops(shape: StepShape) -> StepFlops:
    """Training FLOPs of one optimizer step over the global batch, all processes together."""
    tower_passes = 4 if shape.accum_steps > 1 else 3
    n = shape.global_batch
    return StepFlops(vision=tower_passes * n * vision_forward_flops(shape),
                     text=tower_passes * n * text_forward_flops(shape),
                     heads=3 * n * heads_forward_flops(shape),
                     objective=3 * objective_forward_flops(shape))


def forward_flops(shape: StepShape) -> int:
    """Forward FLOPs of the model and objective over the global batch (what the test counts)."""
    n = shape.global_batch
    per_pair = vision_forward_flops(shape) + text_forward_flops(shape) + heads_forward_flops(shape)
    return n * per_pair + objective_forward_flops(shape)
