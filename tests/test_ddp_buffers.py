"""DDP leaves the heads' buffers alone (lipkit.train.parallel): the global-batch BatchNorm's
running statistics stay equal on every rank without the per-step broadcast from rank 0, while an
EfficientNet tower's local BatchNorm is still broadcast."""
import json

import pytest
import torch.multiprocessing as mp

from _ddp_buffer_worker import worker
from _ports import free_port

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-buffers")
    mp.spawn(worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return json.loads((out / "report.json").read_text())


def test_head_buffers_are_equal_on_every_rank_without_a_broadcast(report):
    for name in ("vit", "efficientnet"):
        r = report[name]
        assert any("running_mean" in k for k in r["head_buffers"]), r["head_buffers"]  # the heads' BatchNorm
        assert not r["heads_broadcast"] and r["heads_equal"], (name, r)


def test_transformer_towers_leave_ddp_nothing_to_broadcast(report):
    assert report["vit"]["tower_buffers"] == 0 and report["vit"]["tower_buffers_broadcast"] == 0


def test_an_efficientnet_towers_local_batchnorm_is_still_broadcast(report):
    r = report["efficientnet"]
    assert r["tower_buffers"] > 0 and r["tower_buffers_broadcast"] == r["tower_buffers"]
    # local statistics differ after each rank's own forward: why DDP must broadcast rank 0's
    assert not r["towers_equal"]
