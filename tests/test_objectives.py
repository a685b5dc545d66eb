"""Every objective against its formula written out independently (OBJECTIVES.md §1-4, §7).

The reference formulas below use explicit loops or numpy, never the library's helpers."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from _objectives import objective, random_outputs, ref_infonce
from lipkit.config import ConfigError, NClipObjectiveConfig, ObjectiveConfig, load_config
from lipkit.objectives import (
    HEAD_CLIP,
    HEAD_PROTOTYPES,
    available_objectives,
    build_objective,
)
from lipkit.objectives.clip import ClipObjective
from lipkit.objectives.composite import WeightedSum
from lipkit.objectives.nclip import NClipObjective, sinkhorn

B, K = 6, 7
make_outputs = functools.partial(random_outputs, b=B, k=K)


# ----------------------------------------------------------------------------- references
def ref_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_entropy(p: np.ndarray) -> float:
    return float(-sum(pk * math.log(pk) for pk in p if pk > 0))


def ref_cross_entropy(q: np.ndarray, p: np.ndarray) -> float:
    return float(-sum(qk * math.log(pk) for qk, pk in zip(q, p)))


def ref_sinkhorn(x: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """SwAV's algorithm in [B, K] orientation: prototypes (columns) get mass 1/K, samples 1/B."""
    q = np.exp(x / eps)
    q = q / q.sum()
    n, k = q.shape
    for _ in range(iters):
        q = q / q.sum(0, keepdims=True) / k
        q = q / q.sum(1, keepdims=True) / n
    return q * n


def ref_nclip_terms(out, tau, tau_t, targets=None):
    pi = ref_softmax(out["image_protos"].detach().numpy() / tau)
    pt = ref_softmax(out["text_protos"].detach().numpy() / tau)
    if targets is None:
        qi = ref_softmax(out["image_protos"].detach().numpy() / tau_t)
        qt = ref_softmax(out["text_protos"].detach().numpy() / tau_t)
    else:
        qi, qt = targets
    n, k = pi.shape
    align = 0.5 * sum(ref_cross_entropy(qt[i], pi[i]) + ref_cross_entropy(qi[i], pt[i]) for i in range(n)) / n
    sharp = 0.5 * sum(ref_entropy(pi[i]) + ref_entropy(pt[i]) for i in range(n)) / n
    smooth = 0.5 * ((math.log(k) - ref_entropy(pi.mean(0))) + (math.log(k) - ref_entropy(pt.mean(0))))
    return align, smooth, sharp


# ----------------------------------------------------------------------------- CLIP
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_clip_matches_explicit_infonce(reduction):
    out = make_outputs()
    res = objective("clip", clip={"direction_reduction": reduction})(out)
    zi, zt, s = out["image_embeds"].numpy(), out["text_embeds"].numpy(), 7.5
    both = ref_infonce(zi, zt, s) + ref_infonce(zt, zi, s)
    expected = both / 2 if reduction == "mean" else both
    assert res["contrastive_loss"].item() == pytest.approx(expected, rel=1e-10)
    assert res["loss"].item() == pytest.approx(expected, rel=1e-10)
    assert res["logit_scale"].item() == pytest.approx(7.5)
    assert res["positive_cosine"].item() == pytest.approx(float((zi * zt).sum(-1).mean()), rel=1e-10)
    assert not res["positive_cosine"].requires_grad and not res["logit_scale"].requires_grad


def test_clip_sum_is_twice_mean_in_value_and_gradient():
    out_m, out_s = make_outputs(requires_grad=True), make_outputs(requires_grad=True)
    loss_m = objective("clip")(out_m)["loss"]
    loss_s = objective("clip", clip={"direction_reduction": "sum"})(out_s)["loss"]
    assert loss_s.item() == pytest.approx(2 * loss_m.item(), rel=1e-12)
    loss_m.backward()
    loss_s.backward()
    for key in ("image_embeds", "text_embeds", "logit_scale"):
        torch.testing.assert_close(out_s[key].grad, 2 * out_m[key].grad)


def test_clip_gradient_matches_hand_written_loss():
    out = make_outputs(requires_grad=True)
    objective("clip")(out)["loss"].backward()
    ref = make_outputs(requires_grad=True)
    logits = ref["logit_scale"] * ref["image_embeds"] @ ref["text_embeds"].T
    # log-softmax written by hand, both directions
    i2t = -(torch.diagonal(logits) - torch.logsumexp(logits, dim=1)).mean()
    t2i = -(torch.diagonal(logits) - torch.logsumexp(logits, dim=0)).mean()
    ((i2t + t2i) / 2).backward()
    for key in ("image_embeds", "text_embeds", "logit_scale"):
        torch.testing.assert_close(out[key].grad, ref[key].grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_are_fp32_for_low_precision_inputs(dtype):
    # every term, not only the sum: forward promotes the sum whatever precision the terms are in
    out = {k: v.to(dtype) for k, v in make_outputs().items()}
    for name in available_objectives():
        for balance in ("memax", "sinkhorn", "center"):
            res = build_objective(ObjectiveConfig(name=name, nclip=NClipObjectiveConfig(balance=balance)))(out)
            terms = {k: v.dtype for k, v in res.items() if k.endswith("loss")}
            assert len(terms) > 1 and set(terms.values()) == {torch.float32}, (name, balance, terms)


# ----------------------------------------------------------------------------- nCLIP
@pytest.mark.parametrize("balance", ["memax", "none"])
def test_nclip_terms_match_formula(balance):
    out = make_outputs(seed=1)
    tau, tau_t, l_smooth, l_sharp = 0.2, 0.07, 0.6, 0.3
    obj = objective(
        "nclip",
        nclip={
            "balance": balance,
            "temperature": tau,
            "target_temperature": tau_t,
            "lambda_smooth": l_smooth,
            "lambda_sharp": l_sharp,
        },
    )
    res = obj(out)
    align, smooth, sharp = ref_nclip_terms(out, tau, tau_t)
    assert res["align_loss"].item() == pytest.approx(align, rel=1e-10)
    assert res["sharp_loss"].item() == pytest.approx(sharp, rel=1e-10)
    if balance == "memax":
        assert res["smooth_loss"].item() == pytest.approx(smooth, rel=1e-10)
        expected = align + l_smooth * smooth + l_sharp * sharp
    else:
        assert "smooth_loss" not in res
        expected = align + l_sharp * sharp
    assert res["loss"].item() == pytest.approx(expected, rel=1e-10)
    # H(p_bar)/log K as a diagnostic in every mode, averaged over the modalities and for each
    assert res["usage_entropy_ratio"].item() == pytest.approx(1 - smooth / math.log(K), rel=1e-10)
    for side in ("image", "text"):
        p_bar = ref_softmax(out[f"{side}_protos"].detach().numpy() / tau).mean(0)
        assert res[f"{side}_usage_entropy_ratio"].item() == pytest.approx(ref_entropy(p_bar) / math.log(K), rel=1e-10)


def test_nclip_default_is_information_maximisation():
    """Default: unsharpened targets and lambda_sharp = lambda_smooth = 1, so the regularizers sum to
    minus the mutual information H(p_bar) - mean H(p) per modality (OBJECTIVES.md 2)."""
    out = make_outputs(seed=2)
    res = objective("nclip")(out)
    align, smooth, sharp = ref_nclip_terms(out, 0.1, 0.1)
    assert res["align_loss"].item() == pytest.approx(align, rel=1e-10)
    assert res["loss"].item() == pytest.approx(align + smooth + sharp, rel=1e-10)
    mi = {m: ref_entropy(ref_softmax(out[f"{m}_protos"].numpy() / 0.1).mean(0))
          - np.mean([ref_entropy(p) for p in ref_softmax(out[f"{m}_protos"].numpy() / 0.1)]) for m in ("image", "text")}
    assert smooth + sharp == pytest.approx(math.log(K) - (mi["image"] + mi["text"]) / 2, rel=1e-10)
    assert res["image_mi_ratio"].item() == pytest.approx(mi["image"] / math.log(B), rel=1e-10)  # log min(N, K)
    assert res["text_mi_ratio"].item() == pytest.approx(mi["text"] / math.log(B), rel=1e-10)


def test_nclip_sinkhorn_with_memax_adds_the_smoothness_term():
    """MSN's configuration: Sinkhorn targets and the ME-MAX term together."""
    out = make_outputs(seed=4)
    tau, eps, iters = 0.1, 0.05, 3
    both = objective("nclip", nclip={"balance": "sinkhorn_memax", "sinkhorn_epsilon": eps,
                                     "sinkhorn_iterations": iters, "lambda_smooth": 0.7})(out)
    targets = tuple(ref_sinkhorn(out[f"{m}_protos"].numpy(), eps, iters) for m in ("image", "text"))
    align, smooth, sharp = ref_nclip_terms(out, tau, None, targets)
    assert both["align_loss"].item() == pytest.approx(align, rel=1e-10)
    assert both["smooth_loss"].item() == pytest.approx(smooth, rel=1e-10)
    assert both["loss"].item() == pytest.approx(align + 0.7 * smooth + sharp, rel=1e-10)


def test_sinkhorn_function_matches_numpy_and_equipartitions():
    x = make_outputs(seed=3)["image_protos"]
    for iters in (1, 3):
        ours = sinkhorn(x, 0.05, iters).numpy()
        np.testing.assert_allclose(ours, ref_sinkhorn(x.numpy(), 0.05, iters), rtol=1e-10)
        np.testing.assert_allclose(ours.sum(1), np.ones(B), rtol=1e-10)  # rows are distributions
    converged = sinkhorn(x, 0.5, 200).numpy()
    np.testing.assert_allclose(converged.sum(0), np.full(K, B / K), rtol=1e-6)


def test_sinkhorn_is_safe_for_a_tiny_epsilon():
    x = make_outputs(seed=3)["image_protos"].float()
    q = sinkhorn(x, 0.01, 3)  # exp(1/0.01) overflows fp32 without the shift
    assert torch.isfinite(q).all()


def test_nclip_sinkhorn_targets():
    out = make_outputs(seed=4)
    tau, eps, iters = 0.1, 0.3, 4
    res = objective(
        "nclip",
        nclip={"balance": "sinkhorn", "temperature": tau, "sinkhorn_epsilon": eps, "sinkhorn_iterations": iters},
    )(out)
    targets = (
        ref_sinkhorn(out["image_protos"].numpy(), eps, iters),
        ref_sinkhorn(out["text_protos"].numpy(), eps, iters),
    )
    align, _, _ = ref_nclip_terms(out, tau, None, targets)
    assert res["align_loss"].item() == pytest.approx(align, rel=1e-10)
    assert "smooth_loss" not in res


def test_nclip_center_ema_and_targets():
    tau, tau_t, m = 0.1, 0.05, 0.8
    obj = objective("nclip", nclip={"balance": "center", "center_momentum": m, "target_temperature": tau_t})
    out1, out2 = make_outputs(seed=5), make_outputs(seed=6)

    res1 = obj(out1)  # center starts at zero: plain sharpened targets
    align1, _, _ = ref_nclip_terms(out1, tau, tau_t)
    assert res1["align_loss"].item() == pytest.approx(align1, rel=1e-10)
    c_img = (1 - m) * out1["image_protos"].numpy().mean(0)
    c_txt = (1 - m) * out1["text_protos"].numpy().mean(0)
    np.testing.assert_allclose(obj.center_image.numpy(), c_img, rtol=1e-12)
    np.testing.assert_allclose(obj.center_text.numpy(), c_txt, rtol=1e-12)

    res2 = obj(out2)  # targets use the center from step 1, then it moves again
    targets = (
        ref_softmax((out2["image_protos"].numpy() - c_img) / tau_t),
        ref_softmax((out2["text_protos"].numpy() - c_txt) / tau_t),
    )
    align2, _, _ = ref_nclip_terms(out2, tau, tau_t, targets)
    assert res2["align_loss"].item() == pytest.approx(align2, rel=1e-10)
    c_img = m * c_img + (1 - m) * out2["image_protos"].numpy().mean(0)
    np.testing.assert_allclose(obj.center_image.numpy(), c_img, rtol=1e-12)

    obj.eval()  # no update outside training
    before = obj.center_image.clone()
    obj(out1)
    torch.testing.assert_close(obj.center_image, before, rtol=0, atol=0)

    fresh = objective("nclip", nclip={"balance": "center"})  # lazily sized buffers load from a checkpoint
    fresh.load_state_dict(obj.state_dict())
    torch.testing.assert_close(fresh.center_image, obj.center_image, rtol=0, atol=0)


def test_nclip_uniform_logits_edge_case():
    out = make_outputs()
    out["image_protos"] = torch.zeros(B, K, dtype=torch.float64)
    out["text_protos"] = torch.zeros(B, K, dtype=torch.float64)
    res = objective("nclip", nclip={"lambda_sharp": 1.0})(out)
    assert res["smooth_loss"].item() == pytest.approx(0.0, abs=1e-12)
    assert res["sharp_loss"].item() == pytest.approx(math.log(K), rel=1e-12)
    assert res["align_loss"].item() == pytest.approx(math.log(K), rel=1e-12)
    assert res["usage_entropy_ratio"].item() == pytest.approx(1.0, rel=1e-12)


def test_nclip_identical_one_hot_edge_case():
    out = make_outputs()
    one_hot = torch.full((B, K), -1.0, dtype=torch.float64)
    one_hot[:, 3] = 1.0
    out["image_protos"] = one_hot.clone().requires_grad_(True)
    out["text_protos"] = one_hot.clone().requires_grad_(True)
    res = objective("nclip", nclip={"temperature": 1e-3, "target_temperature": 1e-3})(out)
    assert res["smooth_loss"].item() == pytest.approx(math.log(K), rel=1e-12)
    assert res["sharp_loss"].item() == pytest.approx(0.0, abs=1e-12)
    assert res["distinct_prototypes"].item() == 1
    assert res["mean_max_prob"].item() == pytest.approx(1.0)
    assert res["argmax_agreement"].item() == 1.0
    assert res["usage_entropy_ratio"].item() == pytest.approx(0.0, abs=1e-12)
    res["loss"].backward()  # saturated softmax must not give NaN gradients
    assert torch.isfinite(out["image_protos"].grad).all()


def test_nclip_diagnostics_count_what_they_say():
    out = make_outputs()
    img = torch.full((4, K), -1.0, dtype=torch.float64)
    txt = torch.full((4, K), -1.0, dtype=torch.float64)
    for i, (a, b) in enumerate([(0, 0), (0, 1), (2, 2), (5, 6)]):
        img[i, a], txt[i, b] = 1.0, 1.0
    out = {"image_protos": img, "text_protos": txt}
    res = objective("nclip", nclip={"temperature": 0.5})(out)
    assert res["distinct_prototypes"].item() == 5  # {0, 2, 5} from images, {0, 1, 2, 6} from texts
    assert res["argmax_agreement"].item() == pytest.approx(0.5)
    p_max = math.exp(2 / 0.5) / (math.exp(2 / 0.5) + K - 1)
    assert res["mean_max_prob"].item() == pytest.approx(p_max, rel=1e-10)
    for key in ("distinct_prototypes", "argmax_agreement", "mean_max_prob", "usage_entropy_ratio"):
        assert not res[key].requires_grad


def test_nclip_stopgrad_gradient():
    """With stop-gradient, d align / d image_protos = (p^I - q^T) / (tau * 2B) exactly; without it
    the target branch adds the gradient of H(q^I, p^T) through q^I."""
    tau, tau_t = 0.2, 0.05
    common = {"temperature": tau, "target_temperature": tau_t, "lambda_smooth": 0.0, "lambda_sharp": 0.0,
              "balance": "none"}
    out_sg = make_outputs(seed=7, requires_grad=True)
    objective("nclip", nclip=common)(out_sg)["loss"].backward()
    p_img = torch.softmax(out_sg["image_protos"].detach() / tau, -1)
    q_txt = torch.softmax(out_sg["text_protos"].detach() / tau_t, -1)
    torch.testing.assert_close(out_sg["image_protos"].grad, (p_img - q_txt) / (tau * 2 * B))

    out_live = make_outputs(seed=7, requires_grad=True)
    objective("nclip", nclip={**common, "stopgrad_target": False})(out_live)["loss"].backward()
    ref = make_outputs(seed=7, requires_grad=True)
    log_p = {m: torch.log_softmax(ref[f"{m}_protos"] / tau, -1) for m in ("image", "text")}
    q = {m: torch.softmax(ref[f"{m}_protos"] / tau_t, -1) for m in ("image", "text")}
    align = 0.5 * (-(q["text"] * log_p["image"]).sum(-1).mean() - (q["image"] * log_p["text"]).sum(-1).mean())
    align.backward()
    torch.testing.assert_close(out_live["image_protos"].grad, ref["image_protos"].grad)
    assert not torch.allclose(out_live["image_protos"].grad, out_sg["image_protos"].grad)


@pytest.mark.parametrize("balance", ["sinkhorn", "center"])
def test_nclip_stopgrad_flag_reaches_every_target(balance):
    grads = {}
    for stopgrad in (True, False):
        out = make_outputs(seed=8, requires_grad=True)
        objective("nclip", nclip={"balance": balance, "stopgrad_target": stopgrad, "sinkhorn_epsilon": 0.3})(out)[
            "loss"
        ].backward()
        grads[stopgrad] = out["image_protos"].grad
    assert not torch.allclose(grads[True], grads[False])


# ----------------------------------------------------------------------------- xCLIP / composite
def test_xclip_is_weighted_sum_of_clip_and_nclip():
    out = make_outputs(seed=9)
    nclip_fields = {"lambda_smooth": 0.5, "lambda_sharp": 0.25}
    x = objective("xclip", xclip={"w_clip": 0.3, "w_nclip": 0.7}, nclip=nclip_fields)
    assert x.required_heads == {HEAD_CLIP, HEAD_PROTOTYPES}
    res = x(out)
    clip_loss = objective("clip")(out)["loss"]
    nclip_res = objective("nclip", nclip=nclip_fields)(out)
    assert res["loss"].item() == pytest.approx(0.3 * clip_loss.item() + 0.7 * nclip_res["loss"].item(), rel=1e-12)
    for key in ("align_loss", "smooth_loss", "sharp_loss", "distinct_prototypes", "usage_entropy_ratio"):
        assert res[f"nclip/{key}"].item() == pytest.approx(nclip_res[key].item(), rel=1e-12)
    assert res["clip/contrastive_loss"].item() == pytest.approx(clip_loss.item(), rel=1e-12)
    assert "clip/logit_scale" in res and "clip/positive_cosine" in res
    assert x.term_weight("nclip/sharp_loss") == pytest.approx(0.7 * 0.25)


def test_weighted_sum_of_arbitrary_children():
    out = make_outputs(seed=10)
    ws = WeightedSum({"a": (ClipObjective(), 2.0), "b": (NClipObjective(), 0.0)})
    assert ws.required_heads == {HEAD_CLIP, HEAD_PROTOTYPES}
    assert ws(out)["loss"].item() == pytest.approx(2 * ClipObjective()(out)["loss"].item(), rel=1e-12)


# ----------------------------------------------------------------------------- CLIP+Reg
def _reg(form, pairs, lam=0.5, scale=False, **clip):
    return objective(
        "clip_reg", clip_reg={"form": form, "pairs": pairs, "lam": lam, "scale_by_logit_scale": scale}, clip=clip
    )


def ref_pairwise(zi, zt, form, positive):
    vals = []
    for i in range(len(zi)):
        for j in range(len(zt)):
            if (i == j) == positive:
                vals.append(float(((zi[i] - zt[j]) ** 2).sum()) if form == "sqdist" else float(zi[i] @ zt[j]))
    return float(np.mean(vals))


@pytest.mark.parametrize("form", ["sqdist", "neg_cos"])
@pytest.mark.parametrize("pairs", ["positive", "negative", "both"])
def test_clip_reg_terms(form, pairs):
    out = make_outputs(seed=11)
    zi, zt = out["image_embeds"].numpy(), out["text_embeds"].numpy()
    res = _reg(form, pairs)(out)
    sign = 1 if form == "sqdist" else -1  # positives pulled together, negatives pushed apart
    r_pos = sign * ref_pairwise(zi, zt, form, positive=True)
    r_neg = -sign * ref_pairwise(zi, zt, form, positive=False)
    expected = {"positive": r_pos, "negative": r_neg, "both": r_pos + r_neg}[pairs]
    assert res["reg_loss"].item() == pytest.approx(expected, rel=1e-10)
    clip = ref_infonce(zi, zt, 7.5) / 2 + ref_infonce(zt, zi, 7.5) / 2
    assert res["contrastive_loss"].item() == pytest.approx(clip, rel=1e-10)
    assert res["loss"].item() == pytest.approx(clip + 0.5 * expected, rel=1e-10)


def test_clip_reg_sqdist_is_two_minus_two_cos():
    out = make_outputs(seed=12)
    sq = _reg("sqdist", "positive")(out)["reg_loss"].item()
    cos = _reg("neg_cos", "positive")(out)["reg_loss"].item()
    mean_cos = (out["image_embeds"] * out["text_embeds"]).sum(-1).mean().item()
    assert sq == pytest.approx(2 - 2 * mean_cos, rel=1e-10)
    assert cos == pytest.approx(-mean_cos, rel=1e-10)


def test_clip_reg_scale_by_logit_scale_does_not_move_temperature():
    out = make_outputs(seed=13, requires_grad=True)
    res = _reg("sqdist", "both", lam=0.5, scale=True)(out)
    unscaled = _reg("sqdist", "both", lam=0.5, scale=False)(make_outputs(seed=13))["reg_loss"].item()
    assert res["reg_loss"].item() == pytest.approx(7.5 * unscaled, rel=1e-12)
    res["loss"].backward()
    clip_only = make_outputs(seed=13, requires_grad=True)
    objective("clip")(clip_only)["loss"].backward()
    torch.testing.assert_close(out["logit_scale"].grad, clip_only["logit_scale"].grad)
    assert not torch.allclose(out["image_embeds"].grad, clip_only["image_embeds"].grad)


def test_clip_reg_honours_clip_direction_reduction():
    out = make_outputs(seed=14)
    mean = _reg("sqdist", "positive")(out)["contrastive_loss"].item()
    total = _reg("sqdist", "positive", direction_reduction="sum")(out)["contrastive_loss"].item()
    assert total == pytest.approx(2 * mean, rel=1e-12)


# ----------------------------------------------------------------------------- registry
def test_registry_builds_each_objective_with_its_heads():
    heads = {
        "clip": {HEAD_CLIP},
        "clip_reg": {HEAD_CLIP},
        "nclip": {HEAD_PROTOTYPES},
        "xclip": {HEAD_CLIP, HEAD_PROTOTYPES},
        "siglip": {HEAD_CLIP},
        "cyclip": {HEAD_CLIP},
        "square": {HEAD_CLIP},
    }
    assert set(heads) <= set(available_objectives())
    for name, expected in heads.items():
        assert build_objective(ObjectiveConfig(name=name)).required_heads == expected


@pytest.mark.parametrize("section, key, value", [
    ("clip", "direction_reduction", "max"), ("nclip", "balance", "sinkhorn-memax"), ("clip_reg", "form", "cos"),
    ("clip_reg", "pairs", "all"), ("cyclip", "reduction", "sum"),
])
def test_a_bad_choice_set_in_code_is_the_config_error_parsing_gives(section, key, value):
    message = f"objective.{section}.{key}: expected one of"
    with pytest.raises(ConfigError, match=message) as parsed:
        load_config(None, [f"objective.{section}.{key}={value}"])
    with pytest.raises(ConfigError) as changed:  # a field changed after the config was made
        objective(section, **{section: {key: value}})
    assert str(changed.value) == str(parsed.value)
    built = type(getattr(ObjectiveConfig(), section))(**{key: value})  # a section made with the value
    with pytest.raises(ConfigError, match=message):
        build_objective(ObjectiveConfig(**{section: built}))


def test_registry_unknown_name_is_a_config_error_listing_objectives():
    with pytest.raises(ConfigError) as err:
        build_objective(ObjectiveConfig(name="siglipp"))
    message = str(err.value)
    assert "siglipp" in message
    for name in ("clip", "clip_reg", "nclip", "xclip"):
        assert name in message


@pytest.mark.parametrize("key, value, rule", [
    ("temperature", 0.0, "> 0"), ("target_temperature", -0.1, "> 0"), ("sinkhorn_epsilon", 0.0, "> 0"),
    ("sinkhorn_iterations", 0, ">= 1"), ("center_momentum", 1.5, "in \\[0, 1\\)"), ("lambda_smooth", -1.0, ">= 0"),
    ("lambda_sharp", float("nan"), ">= 0")])
def test_nclip_settings_out_of_range_are_one_config_error(key, value, rule):
    with pytest.raises(ConfigError, match=f"objective.nclip.{key}: must be {rule}, got"):
        objective("nclip", nclip={key: value})
