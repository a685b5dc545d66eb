"""SLIP (CLIP + SimCLR on two image views): the NT-Xent term against its formula written out
anchor by anchor, a behavioural test on synthetic views whose answer is known, and the command a
user types. 2-process gloo parity (loss and every gradient): tests/test_objectives_distributed.py.

The behavioural data: an image is an instance vector (8 dims) plus a nuisance (24 dims, drawn anew
for every view, 3x larger); every caption is the same, so CLIP alone has nothing to learn from.
SimCLR must make the image tower ignore the nuisance: two fresh views of held-out instances then
find each other by nearest neighbour. With ssl_weight = 0 (CLIP alone) they do not."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipkit.cli import main
from lipkit.config import SlipObjectiveConfig, SslHeadConfig
from lipkit.models.heads import SslProjector
from lipkit.objectives.slip import SlipObjective, nt_xent

INSTANCE, NUISANCE = 8, 24


def reference_nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's loss over the 2N anchors, each written out: positive = its other view, negatives =
    the other 2N - 2 projections."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    n = a.shape[0]
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = [math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[positive]) / tau) / sum(sims))
    return torch.tensor(total / (2 * n), dtype=torch.float64)


def test_nt_xent_matches_simclr_written_out():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    for tau in (0.1, 0.5):
        torch.testing.assert_close(nt_xent(a, b, tau), reference_nt_xent(a, b, tau))
    # identical views score higher agreement, so a lower loss than unrelated ones
    assert nt_xent(a, a + 0.01 * b, 0.1) < nt_xent(a, b, 0.1)


def test_slip_sums_its_terms_with_the_ssl_weight():
    g = torch.Generator().manual_seed(1)
    outputs = {"image_embeds": F.normalize(torch.randn(4, 3, generator=g), dim=-1),
               "text_embeds": F.normalize(torch.randn(4, 3, generator=g), dim=-1),
               "logit_scale": torch.tensor(10.0), "image_ssl": torch.randn(4, 3, 5, generator=g)}
    terms = SlipObjective(SlipObjectiveConfig(temperature=0.2, ssl_weight=0.3))(outputs)
    torch.testing.assert_close(terms["ssl_loss"], nt_xent(outputs["image_ssl"][:, 1], outputs["image_ssl"][:, 2], 0.2))
    torch.testing.assert_close(terms["loss"], terms["contrastive_loss"] + 0.3 * terms["ssl_loss"])
    with pytest.raises(ValueError, match="data.image_views=2"):
        SlipObjective()({**outputs, "image_ssl": outputs["image_ssl"][:, :1]})


def _views(instances: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.cat([instances, 3.0 * torch.randn(len(instances), NUISANCE, generator=g)], dim=1)


def train_views(ssl_weight: float, steps: int = 600, seed: int = 0) -> float:
    """Top-1 accuracy of finding a held-out instance's second view from its first (tower features)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    tower = nn.Sequential(nn.Linear(INSTANCE + NUISANCE, 64), nn.ReLU(), nn.Linear(64, 32))
    projector = SslProjector(32, SslHeadConfig(hidden_dim=64, out_dim=16, layers=3))
    clip_image, clip_text = nn.Linear(32, 8, bias=False), nn.Parameter(torch.randn(8))
    objective = SlipObjective(SlipObjectiveConfig(temperature=0.1, ssl_weight=ssl_weight))
    params = [*tower.parameters(), *projector.parameters(), *clip_image.parameters(), clip_text]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    for _ in range(steps):
        instances = torch.randn(128, INSTANCE, generator=g)
        f1, f2 = tower(_views(instances, g)), tower(_views(instances, g))
        outputs = {"image_embeds": F.normalize(clip_image(f1), dim=-1),
                   "text_embeds": F.normalize(clip_text.expand(128, 8), dim=-1),  # one caption for all
                   "logit_scale": torch.tensor(10.0),
                   "image_ssl": torch.stack([projector(f1), projector(f2)], dim=1)}
        optimizer.zero_grad()
        objective(outputs)["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        held_out = torch.randn(200, INSTANCE, generator=g)
        a, b = F.normalize(tower(_views(held_out, g)), dim=-1), F.normalize(tower(_views(held_out, g)), dim=-1)
        return float(((a @ b.T).argmax(1) == torch.arange(200)).float().mean())


def test_slip_makes_views_of_an_image_find_each_other():
    assert train_views(ssl_weight=1.0) >= 0.75  # 0.86 on seed 0


def test_clip_alone_does_not_on_the_same_data():
    assert train_views(ssl_weight=0.0) <= 0.3  # 0.005: chance


@pytest.mark.slow
def test_slip_trains_and_evaluates_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "slip"
    args = ["train", "--config", "fashion-tiny", "--set", "objective.name=slip", "--out", str(run),
            *(f"--set={s}" for s in ["train.steps=8", "train.batch_size=32", "train.warmup_steps=2",
                                     "train.progress=false", "data.train_limit=512", "model.ssl.hidden_dim=64",
                                     "model.ssl.out_dim=16"])]
    assert main(args) == 0
    config = (run / "config.yaml").read_text()
    assert "image_views: 3" in config and "- ssl" in config  # SLIP's own layout, filled in and recorded
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["ssl_loss"] > 0 and logged["contrastive_loss"] > 0
    assert main(["eval", str(run), "--tasks", "zeroshot", "--set", "eval.test_limit=200",
                 "--out", str(tmp_path / "results.json")]) == 0
    records = json.loads((tmp_path / "results.json").read_text())
    assert records[0]["task"] == "zeroshot_classification" and 0 <= records[0]["metrics"]["acc1"] <= 1
    # SLIP's projector has no counterpart in a CLIP: the export leaves it out and says so
    assert main(["export", str(run), "--to", "hf", str(tmp_path / "hf")]) == 0
    assert "SLIP's image projector (the ssl head) is left out" in capsys.readouterr().out


def test_slip_with_one_view_is_one_line(tmp_path, capsys):
    args = ["train", "--config", "fashion-tiny", "--set", "objective.name=slip", "--set", "data.image_views=1",
            "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == ("lipkit: error: data.image_views: objective slip compares two views "
                                               "of each image, so it needs 2 or more, got 1")
    assert not (tmp_path / "run").exists()
