"""SigLIP, CyCLIP and the square loss against their formulas written out independently
(OBJECTIVES.md §5). The references use explicit loops or numpy, never the library's helpers;
multi-process parity for all three is in test_objectives_distributed.py."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import _objectives
from _objectives import D, random_outputs, ref_infonce_sym
from lipkit.config import ConfigError, ObjectiveConfig, load_config
from lipkit.objectives import HEAD_CLIP, available_objectives
from lipkit.objectives.siglip import SigLipObjective

B = 8
make_outputs = functools.partial(random_outputs, b=B)


def objective(name: str, **sections) -> torch.nn.Module:
    return _objectives.objective(name, **sections).double()  # SigLIP's scale and bias in float64, as the outputs


# ----------------------------------------------------------------------------- registry
def test_baselines_are_registered_with_their_heads():
    assert {"siglip", "cyclip", "square"} <= set(available_objectives())
    for name in ("siglip", "cyclip", "square"):
        assert objective(name).required_heads == {HEAD_CLIP}
    assert objective("siglip").uses_logit_scale is False and objective("square").uses_logit_scale is False
    assert getattr(objective("cyclip"), "uses_logit_scale", True)


# ----------------------------------------------------------------------------- SigLIP
def ref_siglip(zi: np.ndarray, zt: np.ndarray, t: float, b: float) -> float:
    """-(1/N) sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b)), z = +1 on the diagonal, -1 off it."""
    n = len(zi)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += -math.log(1 / (1 + math.exp(-z * (t * float(zi[i] @ zt[j]) + b))))
    return total / n


def test_siglip_initial_scale_and_bias():
    obj = objective("siglip")
    assert obj.log_scale.item() == pytest.approx(math.log(10))
    assert obj.scale.item() == pytest.approx(10.0)
    assert obj.bias.item() == pytest.approx(-10.0)
    assert obj.log_scale.requires_grad and obj.bias.requires_grad
    fixed = objective("siglip", siglip={"learnable": False})
    assert not fixed.log_scale.requires_grad and not fixed.bias.requires_grad
    assert [n for n, p in obj.named_parameters()] == ["log_scale", "bias"]


@pytest.mark.parametrize("t,b", [(10.0, -10.0), (3.0, 0.7), (0.5, -2.0)])
def test_siglip_matches_explicit_pairwise_formula(t, b):
    out = make_outputs(seed=1)
    obj = objective("siglip", siglip={"init_scale": t, "init_bias": b, "chunk_size": 3})
    res = obj(out)
    # the parameters are fp32 (log t rounds): the reference uses the values they hold
    t_held, b_held = obj.scale.item(), obj.bias.item()
    assert t_held == pytest.approx(t, rel=1e-6) and b_held == pytest.approx(b, rel=1e-6)
    expected = ref_siglip(out["image_embeds"].numpy(), out["text_embeds"].numpy(), t_held, b_held)
    assert res["sigmoid_loss"].item() == pytest.approx(expected, rel=1e-10)
    assert res["loss"].item() == pytest.approx(expected, rel=1e-10)
    assert res["siglip_scale"].item() == pytest.approx(t) and res["siglip_bias"].item() == pytest.approx(b)
    assert not res["siglip_scale"].requires_grad


def test_siglip_gradient_matches_label_matrix_reference():
    """Gradient w.r.t. both embeddings, log t and b against autograd through the textbook form with
    an explicit N x N label matrix; dL/db also against its closed form (1/N) sum (sigmoid(l) - [i=j])."""
    t, b = 3.0, -1.0
    out = make_outputs(seed=2, requires_grad=True)
    obj = objective("siglip", siglip={"init_scale": t, "init_bias": b, "chunk_size": 3})
    obj(out)["loss"].backward()

    ref = make_outputs(seed=2, requires_grad=True)
    log_t = obj.log_scale.detach().clone().requires_grad_(True)
    bias = obj.bias.detach().clone().requires_grad_(True)
    logits = log_t.exp() * ref["image_embeds"] @ ref["text_embeds"].T + bias
    labels = 2 * torch.eye(B, dtype=torch.float64) - 1
    (-F.logsigmoid(labels * logits).sum() / B).backward()

    for key in ("image_embeds", "text_embeds"):
        torch.testing.assert_close(out[key].grad, ref[key].grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.log_scale.grad, log_t.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.bias.grad, bias.grad, rtol=1e-10, atol=1e-12)
    closed_form = (torch.sigmoid(logits.detach()) - torch.eye(B, dtype=torch.float64)).sum() / B
    assert obj.bias.grad.item() == pytest.approx(closed_form.item(), rel=1e-10)
    assert out["logit_scale"].grad is None  # the model's CLIP scale is not part of SigLIP


@pytest.mark.parametrize("chunk", [1, 3, 5, 8, 100])
def test_siglip_chunked_equals_unchunked_in_loss_and_gradient(chunk):
    results = {}
    for chunk_size in (0, chunk):
        out = make_outputs(seed=3, requires_grad=True)
        obj = objective("siglip", siglip={"init_scale": 4.0, "init_bias": -2.0, "chunk_size": chunk_size})
        loss = obj(out)["loss"]
        loss.backward()
        results[chunk_size] = (loss.detach(), out["image_embeds"].grad, out["text_embeds"].grad,
                               obj.log_scale.grad, obj.bias.grad)
    for unchunked, chunked in zip(results[0], results[chunk]):
        torch.testing.assert_close(chunked, unchunked, rtol=1e-12, atol=1e-14)
    with torch.no_grad():  # the evaluation path (no recomputation) gives the same value
        obj = objective("siglip", siglip={"init_scale": 4.0, "init_bias": -2.0, "chunk_size": chunk})
        assert obj(make_outputs(seed=3))["loss"].item() == pytest.approx(results[0][0].item(), rel=1e-12)


def test_siglip_learns_its_scale_and_bias():
    """A few SGD steps on fixed, well-aligned embeddings: the loss falls and t, b move."""
    out = make_outputs(seed=4)
    out["text_embeds"] = out["image_embeds"].clone()
    obj = objective("siglip")
    opt = torch.optim.Adam(obj.parameters(), lr=0.05)
    first = obj(out)["loss"].item()
    for _ in range(20):
        opt.zero_grad()
        obj(out)["loss"].backward()
        opt.step()
    assert obj(out)["loss"].item() < first
    assert obj.scale.item() != pytest.approx(10.0) and obj.bias.item() != pytest.approx(-10.0)


def test_siglip_rejects_bad_settings():
    with pytest.raises(ConfigError, match="objective.siglip.init_scale"):
        objective("siglip", siglip={"init_scale": 0.0})
    with pytest.raises(ConfigError, match="objective.siglip.chunk_size"):
        objective("siglip", siglip={"chunk_size": -1})


def test_siglip_state_dict_round_trip():
    obj = objective("siglip")
    with torch.no_grad():
        obj.log_scale.fill_(1.25)
        obj.bias.fill_(-3.5)
    fresh = SigLipObjective(ObjectiveConfig().siglip).double()
    fresh.load_state_dict(obj.state_dict())
    assert fresh.log_scale.item() == 1.25 and fresh.bias.item() == -3.5


# ----------------------------------------------------------------------------- CyCLIP
def ref_cyclic(zi: np.ndarray, zt: np.ndarray) -> tuple[float, float]:
    n = len(zi)
    inmodal = crossmodal = 0.0
    for i in range(n):
        for j in range(n):
            inmodal += (float(zi[i] @ zi[j]) - float(zt[i] @ zt[j])) ** 2
            crossmodal += (float(zi[i] @ zt[j]) - float(zt[i] @ zi[j])) ** 2
    return inmodal / n**2, crossmodal / n**2


@pytest.mark.parametrize("reduction", ["mean", "batch_sum"])
def test_cyclip_matches_formula(reduction):
    out = make_outputs(seed=5)
    zi, zt = out["image_embeds"].numpy(), out["text_embeds"].numpy()
    res = objective("cyclip", cyclip={"lambda_inmodal": 0.3, "lambda_crossmodal": 0.9, "reduction": reduction})(out)
    inmodal, crossmodal = ref_cyclic(zi, zt)
    factor = B if reduction == "batch_sum" else 1
    assert res["inmodal_loss"].item() == pytest.approx(factor * inmodal, rel=1e-10)
    assert res["crossmodal_loss"].item() == pytest.approx(factor * crossmodal, rel=1e-10)
    clip = ref_infonce_sym(zi, zt, 7.5)
    assert res["contrastive_loss"].item() == pytest.approx(clip, rel=1e-10)
    expected = clip + 0.3 * factor * inmodal + 0.9 * factor * crossmodal
    assert res["loss"].item() == pytest.approx(expected, rel=1e-10)
    assert inmodal > 1e-3 and crossmodal > 1e-3  # random embeddings are inconsistent


def test_cyclip_default_lambdas_and_consistent_embeddings():
    obj = objective("cyclip")
    assert obj.term_weight("inmodal_loss") == 0.25 and obj.term_weight("crossmodal_loss") == 0.25
    out = make_outputs(seed=6)
    out["text_embeds"] = out["image_embeds"].clone()  # S_II = S_TT and S_IT symmetric
    res = obj(out)
    assert res["inmodal_loss"].item() == pytest.approx(0.0, abs=1e-14)
    assert res["crossmodal_loss"].item() == pytest.approx(0.0, abs=1e-14)
    # a rotation of the text space keeps S_TT = S_II but breaks cross-modal symmetry
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    out["text_embeds"] = out["image_embeds"] @ q
    res = obj(out)
    assert res["inmodal_loss"].item() == pytest.approx(0.0, abs=1e-12)
    assert res["crossmodal_loss"].item() > 1e-3


def test_cyclip_gradient_matches_hand_written_loss():
    out = make_outputs(seed=7, requires_grad=True)
    objective("cyclip", cyclip={"lambda_inmodal": 0.5, "lambda_crossmodal": 2.0})(out)["loss"].backward()
    ref = make_outputs(seed=7, requires_grad=True)
    zi, zt, s = ref["image_embeds"], ref["text_embeds"], ref["logit_scale"]
    logits = s * zi @ zt.T
    labels = torch.arange(B)
    clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    # The default reduction, batch_sum: CyCLIP's code, `.square().mean() * batch_size`.
    inmodal = ((zi @ zi.T - zt @ zt.T) ** 2).mean() * B
    crossmodal = ((zi @ zt.T - zt @ zi.T) ** 2).mean() * B
    (clip + 0.5 * inmodal + 2.0 * crossmodal).backward()
    for key in ("image_embeds", "text_embeds", "logit_scale"):
        torch.testing.assert_close(out[key].grad, ref[key].grad, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- square loss
def ref_square(zi: np.ndarray, zt: np.ndarray, w: float) -> tuple[float, float]:
    n = len(zi)
    positive = sum((float(zi[i] @ zt[i]) - 1) ** 2 for i in range(n)) / n
    negative = sum(float(zi[i] @ zt[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return positive, w * negative


@pytest.mark.parametrize("w", [1.0, 0.25])
def test_square_loss_matches_formula(w):
    out = make_outputs(seed=8)
    res = objective("square", square={"negative_weight": w})(out)
    positive, negative = ref_square(out["image_embeds"].numpy(), out["text_embeds"].numpy(), w)
    assert res["positive_loss"].item() == pytest.approx(positive, rel=1e-10)
    assert res["negative_loss"].item() == pytest.approx(negative / w, rel=1e-10)
    assert res["loss"].item() == pytest.approx(positive + negative, rel=1e-10)


def test_square_loss_zero_exactly_at_orthonormal_matched_pairs():
    eye = torch.eye(B, dtype=torch.float64)
    res = objective("square")({"image_embeds": eye, "text_embeds": eye.clone(), "logit_scale": torch.tensor(1.0)})
    assert res["loss"].item() == 0.0
    # negatives anti-aligned cost as much as aligned ones: the loss is two-sided
    flip = eye.clone()
    flip[1] = -eye[0]
    res_pos = objective("square")({"image_embeds": eye, "text_embeds": eye[[0, 0] + list(range(2, B))]})
    res_neg = objective("square")({"image_embeds": eye, "text_embeds": flip})
    assert res_pos["negative_loss"].item() == pytest.approx(res_neg["negative_loss"].item(), rel=1e-12)


def test_square_gradient_matches_hand_written_loss():
    out = make_outputs(seed=9, requires_grad=True)
    objective("square", square={"negative_weight": 0.5})(out)["loss"].backward()
    ref = make_outputs(seed=9, requires_grad=True)
    s = ref["image_embeds"] @ ref["text_embeds"].T
    off = ~torch.eye(B, dtype=torch.bool)
    ((torch.diagonal(s) - 1).pow(2).mean() + 0.5 * s[off].pow(2).mean()).backward()
    for key in ("image_embeds", "text_embeds"):
        torch.testing.assert_close(out[key].grad, ref[key].grad, rtol=1e-10, atol=1e-12)
    assert out["logit_scale"].grad is None


def test_square_single_pair_has_no_negative_term():
    out = make_outputs(seed=10, b=1, requires_grad=True)
    res = objective("square")(out)
    assert res["negative_loss"].item() == 0.0
    res["loss"].backward()
    assert torch.isfinite(out["image_embeds"].grad).all()


# ----------------------------------------------------------------------------- config
def test_baseline_config_sections_parse_and_reject():
    cfg = load_config(None, ["objective.name=siglip", "objective.siglip.init_scale=5", "objective.siglip.chunk_size=64",
                             "objective.cyclip.reduction=batch_sum", "objective.square.negative_weight=0.5"])
    assert cfg.objective.siglip.init_scale == 5.0 and cfg.objective.siglip.chunk_size == 64
    assert cfg.objective.cyclip.reduction == "batch_sum" and cfg.objective.square.negative_weight == 0.5
    with pytest.raises(ConfigError, match="objective.cyclip.reduction"):
        load_config(None, ["objective.cyclip.reduction=sum"])
    with pytest.raises(ConfigError, match="unknown key 'objective.siglip.scale'"):
        load_config(None, ["objective.siglip.scale=3"])
