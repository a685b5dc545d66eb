"""The scaling model (lipkit.bench.flops, step_traffic, scaling): its FLOPs equal torch's FLOP
counter on the real model; its list of collectives equals, collective for collective, what real
training steps issue on 2 and 4 gloo processes (DDP and FSDP; CLIP, SigLIP, nCLIP, xCLIP; fp64,
gradient clipping, accumulation); its ring formulas give hand-computed times; and configs it does
not cover are refused in one line. docs/scaling.md shows the same measurement's bytes."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from _tiny_runs import one_line_error
from lipkit.bench.collective_count import CASES, MEASURE_BASE, PRESET, CollectiveCounter, measure, recorded_config
from lipkit.bench.flops import forward_flops, step_flops, tower_flops
from lipkit.bench.harness import counting_flops
from lipkit.bench.scaling import H100, collective_seconds, predict
from lipkit.bench.step_shape import step_shape
from lipkit.bench.step_traffic import DTYPE_BYTES, fsdp_units, meta_model, step_collectives
from lipkit.cli import main
from lipkit.config import ConfigError, load_config
from lipkit.models import LIPModel
from lipkit.objectives import build_objective

TINY = ["model.vision.width=34", "model.vision.layers=2", "model.vision.heads=2", "model.vision.image_size=28",
        "model.vision.patch_size=7", "model.text.width=30", "model.text.layers=3", "model.text.heads=2",
        "model.text.context_length=17", "model.text.vocab_size=300", "model.embed_dim=16",
        "model.prototypes.num_prototypes=16", "model.prototypes.hidden_dim=32", "model.prototypes.bottleneck_dim=8",
        "train.batch_size=6"]


# --------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("objective, extra", [
    ("clip", []),
    ("xclip", ["model.adapter_layers=1"]),
    ("siglip", ["model.vision.patch_dropout=0.5"]),
    ("nclip", ["model.text.pooling=mean", "model.text.causal=false"]),
])
def test_forward_flops_equal_torchs_counter_on_the_real_model(objective, extra):
    cfg = load_config("fashion-tiny", [*TINY, f"objective.name={objective}", *extra])
    shape = step_shape(cfg, 1)
    obj = build_objective(cfg.objective)
    cfg.model.heads = sorted(obj.required_heads)
    torch.manual_seed(0)
    model = LIPModel(cfg.model).train()
    images, tokens = torch.randn(6, 1, 28, 28), torch.randint(3, 300, (6, 17))  # captions fill the context
    with counting_flops() as counter:
        obj(model(images, tokens, heads=obj.required_heads))
    assert forward_flops(shape) == counter.get_total_flops()
    # the towers' last block computes the pooled row only: counting it whole is off
    t = cfg.model.text
    if t.pooling != "mean":
        whole = tower_flops(t.context_length, t.width, t.layers, t.mlp_ratio, pooled_row=False)
        rows = tower_flops(t.context_length, t.width, t.layers, t.mlp_ratio, pooled_row=True)
        assert forward_flops(shape) - 6 * rows + 6 * whole != counter.get_total_flops()


def test_training_flops_are_three_forwards_and_four_for_the_towers_under_accumulation():
    cfg = load_config("vit-b-16")
    one = step_flops(step_shape(cfg, 8))
    assert one.total == 3 * forward_flops(step_shape(cfg, 8))
    accumulated = step_flops(step_shape(load_config("vit-b-16", ["train.accum_steps=4"]), 8))
    assert accumulated.towers * 3 == one.towers * 4 and accumulated.heads == one.heads


def test_vit_b_16_preset_is_clips_architecture():
    """Parameters of CLIP ViT-B/16 counted from its published shapes (lipkit's patch embedding
    also has a bias), against the model the preset builds."""
    cfg = load_config("vit-b-16")
    model = meta_model(step_shape(cfg, 8))
    w, grid, tw = 768, 224 // 16, 512

    def blocks(width: int) -> int:
        return 12 * (4 * width * width + 4 * width + 2 * width * 4 * width + 4 * width + width + 4 * width)

    vision = w * 3 * 16 * 16 + w + w + (grid * grid + 1) * w + 2 * w + blocks(w) + 2 * w
    text = 49408 * tw + 77 * tw + blocks(tw) + 2 * tw
    assert sum(p.numel() for p in model.vision.parameters()) == vision
    assert sum(p.numel() for p in model.text.parameters()) == text
    assert sum(p.numel() for _, p in model.head_parameters()) == w * 512 + tw * 512 + 1  # projections, logit scale


# --------------------------------------------------------------------------- collectives
@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("collectives")
    return out, measure(CASES, out)


CASE_IDS = [(n, case) for n, cases in CASES.items() for case in cases]


@pytest.mark.parametrize("world_size, case", CASE_IDS, ids=[f"{n}-{c}" for n, c in CASE_IDS])
def test_modelled_collectives_equal_the_counted_ones(measured, world_size, case):
    out, counted = measured
    cfg = recorded_config(out, world_size, case)
    model = Counter(c.signature for c in step_collectives(step_shape(cfg, world_size)))
    real = Counter(counted[world_size][case])
    assert model == real, f"model only: {dict(model - real)}; counted only: {dict(real - model)}"
    assert sum(n * DTYPE_BYTES[d] * k for (_, d, n), k in real.items()) > 0
    # the same run modelled under the other wrapper does not match
    cfg.train.strategy = "fsdp" if cfg.train.strategy == "ddp" else "ddp"
    assert Counter(c.signature for c in step_collectives(step_shape(cfg, world_size))) != real


def test_counted_steps_see_the_wrappers_own_collectives(measured):
    """DDP's C++ reducer, FSDP2's padded shards and the norm DTensor reduces
    inside another operator: the counts hold them, and the padding is real at 4 processes."""
    out, counted = measured
    kinds = {case: Counter(kind for kind, _, _ in records) for n in counted for case, records in counted[n].items()}
    # the heads' BatchNorm statistics are equal on every rank by construction: DDP broadcasts no buffer
    assert kinds["ddp-xclip"]["broadcast"] == 0
    assert kinds["fsdp-xclip-clipped"]["reduce_scatter"] == 2 * 2 + 1  # one per block of two 2-block towers, root
    assert ("all_reduce", "float32", 60) in counted[2]["fsdp-xclip-clipped"]  # the 60 tower parameters' norms
    cfg = recorded_config(out, 4, "fsdp-clip")
    root, units = fsdp_units(meta_model(step_shape(cfg, 4)))
    gathered = sum(n for kind, _, n in counted[4]["fsdp-clip"] if kind == "all_gather" and n > 16 * 8)
    unpadded = sum(p.numel() for p in root) + 2 * sum(p.numel() for unit in units for p in unit)
    assert gathered > unpadded  # shards padded to a multiple of 4 rows: the model must (and does) pad


def test_counter_records_only_while_recording_and_uninstalls():
    def installed() -> bool:
        return torch._C._dispatch_has_kernel_for_dispatch_key("c10d::allreduce_", CollectiveCounter.KEY)

    assert torch._C._dispatch_tls_is_dispatch_key_included(CollectiveCounter.KEY)  # every thread's default
    assert not installed()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with CollectiveCounter() as counter:
            assert installed()
            dist.all_reduce(torch.ones(5))
            counter.recording = True
            dist.all_reduce(torch.ones(2, 3, dtype=torch.float64))
            getattr(dist, "all_gather_single", dist.all_gather_into_tensor)(torch.empty(4), torch.ones(4))
            dist.broadcast(torch.ones(7, dtype=torch.int64), src=0)
        dist.all_reduce(torch.ones(5))
    finally:
        dist.destroy_process_group()
    assert counter.records == [("all_reduce", "float64", 6), ("all_gather", "float32", 4), ("broadcast", "int64", 7)]
    assert not installed()


def test_measured_base_is_a_trainable_tiny_config():
    cfg = load_config(PRESET, MEASURE_BASE)
    assert cfg.train.steps > 3 and cfg.train.log_every_steps > cfg.train.steps  # the counted step logs nothing


# --------------------------------------------------------------------------- time
GB = 1e9


def test_ring_formulas_inside_one_node():
    s, n = 64 * 2**20, 8
    alpha = H100.nvlink_latency_us * 1e-6
    bw = H100.nvlink_gb_s * GB
    assert collective_seconds("all_reduce", s, n, H100) == pytest.approx(2 * (n - 1) / n * s / bw + 2 * (n - 1) * alpha)
    assert collective_seconds("all_gather", s, n, H100) == pytest.approx((n - 1) / n * s / bw + (n - 1) * alpha)
    assert collective_seconds("reduce_scatter", s, 4, H100) == pytest.approx(3 / 4 * s / bw + 3 * alpha)
    assert collective_seconds("all_reduce", s, 1, H100) == 0.0


def test_two_level_ring_across_nodes_and_the_tree_for_small_all_reduces():
    n, m = 1024, 128
    nv, net = H100.nvlink_gb_s * GB, H100.network_gb_s * GB
    a_nv, a_net = H100.nvlink_latency_us * 1e-6, H100.network_latency_us * 1e-6
    s = 600e6
    gather = 7 / 8 * s / nv + (m - 1) / m * s / 8 / net + 7 * a_nv + (m - 1) * a_net
    assert collective_seconds("all_gather", s, n, H100) == pytest.approx(gather)
    # a tiny all-reduce pays the tree's log2(128) = 7 steps between nodes, not the ring's 127
    tiny = collective_seconds("all_reduce", 8, n, H100)
    assert tiny == pytest.approx(2 * 7 * a_nv + 2 * 7 * a_net, rel=1e-3)
    assert tiny < 2 * (m - 1) * a_net


def test_prediction_adds_what_overlap_cannot_hide():
    report = predict(load_config("xclip-vit-b-16"), [8, 64, 1024], name="xclip-vit-b-16")
    flops = report.flops.total
    for p in report.predictions:
        rate = H100.peak_tflops["bf16"] * 1e12 * report.mfu
        assert p.compute_ms == pytest.approx(flops / p.gpus / rate * 1e3)
        assert p.step_ms == pytest.approx(p.compute_ms + sum(p.exposed_ms.values()))
        assert p.serial_step_ms == pytest.approx(p.compute_ms + sum(p.comm_ms.values()))
        assert p.step_ms <= p.serial_step_ms
    efficiencies = [p.efficiency for p in report.predictions]
    assert efficiencies == sorted(efficiencies, reverse=True) and efficiencies[0] > 0.99 > 0.9 > efficiencies[-1]


def test_ddp_bucketing_changes_the_count_not_the_bytes():
    shape = step_shape(load_config("vit-b-16"), 64)
    buckets = [c for c in step_collectives(shape) if c.source == "DDP gradient bucket"]
    towers = sum(p.numel() for tower in ("vision", "text") for p in getattr(meta_model(shape), tower).parameters())
    assert len(buckets) > 1 and sum(c.numel for c in buckets) == towers
    assert max(c.bytes for c in buckets) >= 25 * 2**20  # a bucket closes once it reaches 25 MiB


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("args, names", [
    (["--config", "fashion-tiny", "--set", "objective.name=slip", "--gpus", "8"], "objective.name=slip"),
    (["--config", "tuxpaint-lit", "--gpus", "8"], "model.vision.name=efficientnet_lite0"),
    (["--config", "vit-b-16", "--gpus", "12"], "--gpus: 12 GPUs"),
    (["--config", "vit-b-16", "--gpus", "64", "--batch", "100"], "--batch 100"),
    (["--config", "vit-b-16", "--gpus", "8", "--precision", "int8"], "--precision"),
    (["--gpus", "8"], "needs --config"),
])
def test_refusals_are_one_line(capsys, args, names):
    assert main(["bench", "scaling", *args]) == 2
    assert names in one_line_error(capsys)


def test_cli_prints_the_predicted_rows(capsys):
    assert main(["bench", "scaling", "--config", "vit-b-16", "--gpus", "8,1024"]) == 0
    out = capsys.readouterr().out
    report = predict(load_config("vit-b-16"), [8, 1024], name="vit-b-16")
    for p in report.predictions:
        assert f"{p.step_ms:8.2f}" in out and f"{p.efficiency:10.1%}" in out
    assert math.isclose(report.flops.total / 1e15, float(out.split("training FLOPs per step: ")[1].split()[0]),
                        rel_tol=1e-3)


def test_step_shape_refuses_locked_towers():
    with pytest.raises(ConfigError, match="lock_image"):
        step_shape(load_config("vit-b-16", ["model.lock_image=true"]), 8)


# --------------------------------------------------------------------------- docs/scaling.md
PAGE = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"


def _rows(text: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first_cell}")]


def test_page_byte_counts_are_the_measured_ones(measured):
    """docs/scaling.md (`lipkit bench scaling --doc docs/scaling.md`) shows, per case, the bytes of
    each kind of collective: the model's, which the test above finds equal to the counted ones."""
    out, counted = measured
    text = PAGE.read_text(encoding="utf-8")
    assert "lipkit bench scaling --doc docs/scaling.md" in text
    for world_size, cases in counted.items():
        for case, records in cases.items():
            [row] = [r for r in _rows(text, case) if r[1] == str(world_size)]
            real = Counter(records)
            assert row[2] == f"{sum(real.values())} / {sum(real.values())}" and row[-1] == "yes"
            for cell, kind in zip(row[3:7], ("all_reduce", "all_gather", "reduce_scatter", "broadcast")):
                assert cell == f"{sum(k * n * DTYPE_BYTES[d] for (kd, d, n), k in real.items() if kd == kind):,}"


def test_page_predictions_are_the_commands():
    text = PAGE.read_text(encoding="utf-8")
    for name in ("vit-b-16", "xclip-vit-b-16"):
        report = predict(load_config(name), [8, 1024], name=name)
        section = text.split(f"`lipkit bench scaling --config {name} --gpus 8,16,32,64,128,256,512,1024`")[1]
        for p in report.predictions:
            row = next(r for r in _rows(section, str(p.gpus)))
            assert row[9] == f"{p.step_ms:.2f}" and row[10] == f"**{p.efficiency:.1%}**"
