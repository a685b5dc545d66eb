"""The benchmark machinery (no timings asserted: speed is measured by `lipkit bench`)."""
import pytest
import torch

from lipkit.bench.archs import ARCHS
from lipkit.bench.max_batch import plan
from lipkit.bench.steps import lipkit_stepper, synthetic_batch


def test_synthetic_captions_are_padded_with_eot_last():
    arch = ARCHS["tiny"]
    _, tokens = synthetic_batch(arch, 16, (10, 20))
    lengths = (tokens != 0).sum(1)
    assert lengths.min() >= 10 and lengths.max() <= 20
    for row, n in zip(tokens, lengths):
        assert row[n - 1] == arch.vocab_size - 1  # open_clip pools at argmax = EOT
        assert (row[:n - 1] < arch.vocab_size - 1).all() and (row[n:] == 0).all()
    _, full = synthetic_batch(arch, 4, None)
    assert (full != 0).all() and (full[:, -1] == arch.vocab_size - 1).all()


def test_tiny_arch_matches_the_issue_and_counts_flops_like_the_formula():
    from lipkit.bench.harness import counting_flops

    arch = ARCHS["tiny"]
    cfg = arch.lipkit_config()
    assert (cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.width, cfg.vision.layers) == (64, 8, 256, 6)
    assert (cfg.text.context_length, cfg.text.width, cfg.text.layers, cfg.text.heads) == (32, 256, 6, 4)
    assert (cfg.text.vocab_size, cfg.embed_dim, cfg.vision.heads) == (49408, 256, 4)
    model = lipkit_stepper(arch, batch_size=2).model.eval()
    images, tokens = synthetic_batch(arch, 2, None)
    counter = counting_flops()
    with counter, torch.no_grad():
        model.encode_image(images)
    # Per image: patch conv + 5 full blocks (qkv, proj, 2 MLP matmuls, QK^T and AV) + the last
    # block, where only the cls row is read (keys and values for all 65 tokens; query, attention,
    # proj and MLP for one row) + projection.
    n, w = 65, 256
    block = 2 * n * (3 * w * w + w * w + 8 * w * w) + 2 * 2 * n * n * w
    last = 2 * (n * 2 * w * w + (w * w + w * w + 8 * w * w)) + 2 * 2 * 1 * n * w
    expected = 2 * (2 * 64 * w * 3 * 8 * 8 + 5 * block + last + 2 * w * 256)
    assert counter.get_total_flops() == expected


def test_max_batch_plan_on_a_known_memory_curve():
    def fake_measure(config, batch, overrides):  # 0.5 GiB fixed + 10 MiB per sample
        return 0.5 + batch * 10 / 1024

    p = plan("fashion-tiny", memory_gib=2.0, target_batch=1000, measure=fake_measure)
    assert p.max_batch == int((2.0 - 0.5) * 1024 / 10)  # 153
    assert p.measured_gib <= 2.0 < fake_measure(None, p.max_batch + 1, None)
    assert p.accum_steps == 8 and p.micro_batch == 125  # 1000 = 8 x 125, micro-batch <= 153


def test_max_batch_steps_down_when_the_line_overestimates():
    def convex(config, batch, overrides):  # grows faster than the line through the probes
        return 0.1 + batch * 0.01 + (batch / 100) ** 2

    p = plan("fashion-tiny", memory_gib=1.0, measure=convex)
    assert convex(None, p.max_batch, None) <= 1.0
    assert p.accum_steps == 1


def test_bench_command_without_peer_env_is_a_clear_error(tmp_path, monkeypatch):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "lipkit", "bench", "tiny"], capture_output=True, text=True,
                          cwd=tmp_path)
    if proc.returncode == 0:
        pytest.skip("open_clip is importable in this environment")
    assert proc.returncode == 2
    assert "run `make bench` first" in proc.stderr


def test_tensor_peak_counts_live_tensor_bytes_from_profiler_events():
    from lipkit.bench.memory import tensor_peak_bytes

    def work():
        a = torch.ones(1000, 1000)  # 4 MB
        b = torch.ones(1000, 1000)  # 8 MB live
        del a
        c = torch.ones(2000, 1000)  # 4 + 8 = 12 MB live: the peak
        del b, c
        d = torch.ones(500, 1000)  # 2 MB, after the peak
        del d

    assert tensor_peak_bytes(work) == 12_000_000
