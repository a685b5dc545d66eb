"""Feature-cache accumulation: k micro-batches give the gradient of one k*B batch."""
import copy

import pytest
import torch

from lipkit.config import ModelConfig, ObjectiveConfig, PrototypeHeadConfig, TextConfig, VisionConfig
from lipkit.models import LIPModel
from lipkit.objectives import Objective, build_objective
from lipkit.objectives.clip import ClipBatch, info_nce
from lipkit.train import accumulation
from lipkit.train.accumulation import forward_backward
from lipkit.train.precision import Precision

K, B = 4, 4  # micro-batches x micro-batch size

CASES = {
    "clip": {},
    "nclip/memax": {"nclip": {"lambda_sharp": 0.5}},
    "nclip/sinkhorn": {"nclip": {"balance": "sinkhorn"}},
    "nclip/sinkhorn-memax": {"nclip": {"balance": "sinkhorn_memax"}},
    "nclip/center": {"nclip": {"balance": "center", "center_momentum": 0.5}},
    "xclip": {"xclip": {"w_clip": 0.3, "w_nclip": 0.7}},
    "clip_reg": {"clip_reg": {"pairs": "both", "lam": 0.5}},
}


class LearnableBiasClip(Objective):
    """CLIP with a learnable logit bias: an objective with its own parameter."""

    required_heads = frozenset({"clip"})

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def terms(self, outputs):
        batch = ClipBatch.gather(outputs)
        return {"contrastive_loss": info_nce(batch) + self.bias**2 * batch.image.mean()}


def objective_for(case: str):
    if case == "learnable-bias":
        return LearnableBiasClip()
    cfg = ObjectiveConfig(name=case.split("/")[0])
    for section, fields in CASES[case].items():
        for key, value in fields.items():
            setattr(getattr(cfg, section), key, value)
    return build_objective(cfg).double()


def tiny_model(heads, dropout: float) -> LIPModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vision=VisionConfig(image_size=8, patch_size=4, channels=1, width=16, layers=2, heads=2, dropout=dropout),
        text=TextConfig(vocab_size=50, context_length=8, width=16, layers=2, heads=2, dropout=dropout),
        embed_dim=8,
        prototypes=PrototypeHeadConfig(hidden_dim=32, bottleneck_dim=8, num_prototypes=16),
        heads=sorted(heads),
    )
    return LIPModel(cfg).double()


def micro_batches():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(K * B, 1, 8, 8, generator=g, dtype=torch.float64)
    tokens = torch.randint(1, 50, (K * B, 8), generator=g)
    tokens[::3, 5:] = 0  # some padding
    return [(images[i * B : (i + 1) * B], tokens[i * B : (i + 1) * B]) for i in range(K)]


def reference(model, objective, batches, one_forward: bool):
    """The k*B batch with gradient all the way: one forward on the concatenated batch, or (with
    dropout) the towers once per micro-batch in order, drawing dropout masks as the cache pass
    does, then the heads on the whole batch (their BatchNorm sees all k*B pairs)."""
    heads = objective.required_heads
    if one_forward:
        out = model(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), heads=heads)
    else:
        towers = [model(images, tokens, towers_only=True) for images, tokens in batches]
        out = model.heads_from_features(torch.cat([t["image_features"] for t in towers]),
                                        torch.cat([t["text_features"] for t in towers]), heads)
    terms = objective(out)
    terms["loss"].backward()
    return terms


def grads(*modules):
    return {f"{i}.{n}": p.grad.clone() for i, m in enumerate(modules) for n, p in m.named_parameters()
            if p.grad is not None}


def run_both(case: str, dropout: float):
    objective = objective_for(case)
    model = tiny_model(objective.required_heads, dropout).train()
    ref_model, ref_objective = copy.deepcopy(model), copy.deepcopy(objective)
    batches = micro_batches()

    torch.manual_seed(123)
    ref_terms = reference(ref_model, ref_objective, batches, one_forward=dropout == 0)
    ref_rng = torch.get_rng_state()

    torch.manual_seed(123)
    terms, finite = forward_backward(model, objective, batches, objective.required_heads,
                                     Precision.build("fp32", torch.device("cpu")))
    assert finite
    return (model, objective, terms), (ref_model, ref_objective, ref_terms), ref_rng


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, name: str, rel: float = 1e-5, floor: float = 1e-12):
    scale = b.abs().max().clamp_min(floor)
    assert (a - b).abs().max() <= rel * scale, f"{name}: max diff {(a - b).abs().max():.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("case", list(CASES) + ["learnable-bias"])
def test_feature_cache_gradient_equals_full_batch(case, dropout):
    (model, objective, terms), (ref_model, ref_objective, ref_terms), ref_rng = run_both(case, dropout)
    assert_close_rel(terms["loss"].detach(), ref_terms["loss"].detach(), "loss")
    got, want = grads(model, objective), grads(ref_model, ref_objective)
    assert got.keys() == want.keys() and len(want) > 10
    # Under nCLIP alone the prototype heads' BatchNorm makes the loss invariant to a shift shared by
    # every sample's features (e.g. the towers' last norm bias): those gradients are 0 but for fp64
    # rounding, which scales with the other gradients, not with 0.
    floor = 1e-10 * max(float(g.abs().max()) for g in want.values())
    for name in want:
        assert_close_rel(got[name], want[name], name, floor=floor)
    # nCLIP centers moved once, by the whole batch
    for (name, buf), (_, ref_buf) in zip(objective.named_buffers(), ref_objective.named_buffers()):
        assert_close_rel(buf, ref_buf, name)
    # the random stream ends where the reference's does
    assert torch.equal(torch.get_rng_state(), ref_rng)


def test_logit_scale_gradient_is_applied_once():
    (model, _, _), (ref_model, _, _), _ = run_both("clip", 0.0)
    g, ref = model.log_logit_scale.grad, ref_model.log_logit_scale.grad
    assert ref.abs() > 1e-6
    assert_close_rel(g, ref, "log_logit_scale")


def test_without_rng_replay_the_gradient_differs(monkeypatch):
    """The check above has teeth: recomputing with fresh dropout masks changes the gradient."""
    monkeypatch.setattr(accumulation, "restore_forward_rng", lambda state, device: None)
    (model, objective, _), (ref_model, ref_objective, _), _ = run_both("clip", 0.2)
    got, want = grads(model, objective), grads(ref_model, ref_objective)
    worst = max(float((got[n] - want[n]).abs().max() / want[n].abs().max().clamp_min(1e-12)) for n in want)
    assert worst > 1e-3


def test_non_finite_loss_backpropagates_nothing():
    class NanLoss(Objective):
        required_heads = frozenset({"clip"})

        def terms(self, outputs):
            return {"contrastive_loss": outputs["image_embeds"].sum() * float("nan")}

    model = tiny_model({"clip"}, 0.0)
    for k in (1, K):
        terms, finite = forward_backward(model, NanLoss(), micro_batches()[:k], {"clip"},
                                         Precision.build("fp32", torch.device("cpu")))
        assert not finite and torch.isnan(terms["loss"])
        assert all(p.grad is None for p in model.parameters())


def test_gradient_sync_is_skipped_for_all_but_the_last_micro_batch():
    import contextlib

    model = tiny_model({"clip"}, 0.0)
    synced = []

    class Recorder(torch.nn.Module):
        """Notes, for each forward with gradient, whether it ran inside no_sync."""

        def __init__(self):
            super().__init__()
            self.inner, self.quiet = model, False

        def forward(self, *args, **kw):
            if torch.is_grad_enabled():
                synced.append(not self.quiet)
            return self.inner(*args, **kw)

    wrapper = Recorder()

    @contextlib.contextmanager
    def no_sync():
        wrapper.quiet = True
        yield
        wrapper.quiet = False

    forward_backward(wrapper, objective_for("clip"), micro_batches(), {"clip"},
                     Precision.build("fp32", torch.device("cpu")), no_sync=no_sync, lip_model=model)
    assert synced == [False] * (K - 1) + [True]


def test_heads_per_micro_batch_would_miss_the_batchnorm_over_the_whole_batch():
    """The check above has teeth for the prototype heads' BatchNorm too: running the heads per
    micro-batch (each with its own batch statistics) gives another gradient."""
    (_, _, _), (ref_model, ref_objective, _), _ = run_both("nclip/memax", 0.0)
    per_micro = copy.deepcopy(tiny_model(ref_objective.required_heads, 0.0))
    outs = [per_micro(images, tokens, heads=ref_objective.required_heads) for images, tokens in micro_batches()]
    copy.deepcopy(ref_objective)({k: torch.cat([o[k] for o in outs]) for k in outs[0]})["loss"].backward()
    got, want = grads(per_micro), grads(ref_model)
    worst = max(float((got[n] - want[n]).abs().max() / want[n].abs().max().clamp_min(1e-12)) for n in want)
    assert worst > 1e-3
