"""nCLIP behaves as the paper says on data whose answer is known: image and caption of a pair agree on
prototypes that carry the class, without collapsing, and the same test fails for known-bad settings.

A synthetic paired set with C = 10 classes: an image is its class centre plus noise, a caption is
the class word plus one of 7 three-word templates (a bag of tokens). Small trainable towers feed
lipkit's own `PrototypeHead` (K = 256) and `NClipObjective`; a held-out set is scored with the
`lipkit eval --tasks collapse` metrics: mutual information between input and prototype over
log C, and NMI between argmax prototype and class. Each run takes a second or two.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lipkit.config import NClipObjectiveConfig, PrototypeHeadConfig
from lipkit.eval.collapse import prototype_stats
from lipkit.models.heads import PrototypeHead
from lipkit.objectives.nclip import NClipObjective

C, TEMPLATES, DIM, WIDTH = 10, 7, 32, 64
VOCAB = C + 3 * TEMPLATES
OLD_DEFAULTS = {"target_temperature": 0.05, "lambda_sharp": 0.0}  # the first default, sharpened targets


class ToyPairs:
    """Class centres for images, template words for captions; `caption_noise` of the training
    captions name another class (loosely paired data)."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.centres = torch.randn(C, DIM, generator=self.g)
        self.templates = torch.randint(C, VOCAB, (TEMPLATES, 3), generator=self.g)

    def batch(self, n: int, caption_noise: float = 0.0):
        y = torch.randint(0, C, (n,), generator=self.g)
        images = self.centres[y] + 0.8 * torch.randn(n, DIM, generator=self.g)
        named = y.clone()
        flip = torch.rand(n, generator=self.g) < caption_noise
        named[flip] = (y[flip] + torch.randint(1, C, (int(flip.sum()),), generator=self.g)) % C
        words = self.templates[torch.randint(0, TEMPLATES, (n,), generator=self.g)]
        return images, torch.cat([named[:, None], words], 1), y


def train_toy(nclip: dict, batch_norm: bool = True, caption_noise: float = 0.0, seed: int = 0,
              steps: int = 300) -> dict[str, float]:
    torch.manual_seed(seed)
    data = ToyPairs(seed)
    head_cfg = PrototypeHeadConfig(hidden_dim=128, bottleneck_dim=32, num_prototypes=256, batch_norm=batch_norm)
    image_tower = nn.Sequential(nn.Linear(DIM, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH))
    text_embed, text_tower = nn.EmbeddingBag(VOCAB, WIDTH, mode="mean"), nn.Sequential(nn.GELU(), nn.Linear(WIDTH, WIDTH))
    image_head, text_head = PrototypeHead(WIDTH, head_cfg), PrototypeHead(WIDTH, head_cfg)
    objective = NClipObjective(NClipObjectiveConfig(**nclip))
    modules = nn.ModuleList([image_tower, text_embed, text_tower, image_head, text_head])
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-3, weight_decay=0.0)

    def protos(images, tokens):
        return {"image_protos": image_head(image_tower(images)), "text_protos": text_head(text_tower(text_embed(tokens)))}

    for _ in range(steps):
        images, tokens, _ = data.batch(64, caption_noise)
        loss = objective(protos(images, tokens))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    modules.eval()
    images, tokens, labels = data.batch(2000)  # held out, clean captions
    with torch.no_grad():
        out = protos(images, tokens)
    return prototype_stats(out["image_protos"], out["text_protos"], temperature=objective.cfg.temperature,
                           labels=labels, num_classes=C).metrics()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same numbers on any machine
    yield
    torch.set_num_threads(threads)


def test_default_clusters_both_modalities_and_the_old_default_collapses():
    good = train_toy({})
    assert good["image_mutual_information_ratio"] >= 0.8 and good["text_mutual_information_ratio"] >= 0.8
    assert good["image_label_nmi"] >= 0.7 and good["text_label_nmi"] >= 0.7
    assert good["argmax_agreement"] >= 0.4  # classes split over a few prototypes, shared across modalities

    old = train_toy(OLD_DEFAULTS, batch_norm=False)  # sharpened targets, no sharpness term, no BatchNorm
    assert old["image_mutual_information_ratio"] < 0.1 and old["text_mutual_information_ratio"] < 0.1
    assert old["image_distinct_prototypes"] == 1 and old["argmax_agreement"] == 1.0  # agreement alone misleads


def test_loosely_paired_captions_need_the_information_maximisation_form():
    """With 30% of captions naming another class, the default still carries the class; sharpened
    targets without the sharpness term collapse even with the heads' BatchNorm."""
    noisy = train_toy({}, caption_noise=0.3)
    assert noisy["image_mutual_information_ratio"] >= 0.7 and noisy["image_label_nmi"] >= 0.7
    sharpened = train_toy(OLD_DEFAULTS, caption_noise=0.3)
    assert sharpened["image_mutual_information_ratio"] < 0.1
