"""TowerMemo: a locked tower's outputs are reused across models with the same weights, and never
served for other weights, other inputs, or with gradients on."""
import torch

from lipkit.config import ModelConfig, PrototypeHeadConfig, TextConfig, VisionConfig
from lipkit.eval.tower_memo import TowerMemo, module_digest
from lipkit.models import LIPModel


def _model(lock=True, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vision=VisionConfig(image_size=8, patch_size=4, width=16, layers=1, heads=2),
                      text=TextConfig(vocab_size=50, context_length=6, width=16, layers=1, heads=2),
                      embed_dim=8, prototypes=PrototypeHeadConfig(32, 8, 10),
                      lock_image=lock, lock_text=lock)
    return LIPModel(cfg).eval()


def test_memo_returns_the_towers_outputs_and_hits_on_a_second_model():
    images, tokens = torch.randn(4, 1, 8, 8), torch.randint(1, 50, (4, 6))
    memo = TowerMemo()
    a = _model()
    expected_img, expected_txt = a.vision(images), a.text(tokens)
    assert memo.install(a) == ["vision", "text"]
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(images), a.image_projection(expected_img))
        assert (memo.hits, memo.misses) == (0, 1)
        b = _model()  # same seed: same tower weights, different model object
        b.image_projection.weight.data.mul_(2)
        memo.install(b)
        out = b.vision(images)
        torch.testing.assert_close(out, expected_img)
        assert memo.hits == 1
        out.zero_()  # a caller changing the result leaves the memo intact
        torch.testing.assert_close(b.vision(images), expected_img)
        torch.testing.assert_close(b.text(tokens), expected_txt)
        b.vision(images + 1)  # another input: computed
    assert memo.misses == 3


def test_memo_never_serves_other_weights_or_grad_mode_or_unlocked_towers():
    images = torch.randn(2, 1, 8, 8)
    memo = TowerMemo()
    a, c = _model(seed=0), _model(seed=1)
    assert module_digest(a.vision) != module_digest(c.vision)
    memo.install(a)
    memo.install(c)
    with torch.no_grad():
        torch.testing.assert_close(c.vision(images), _model(seed=1).vision(images))
        a.vision(images)
    assert memo.hits == 0
    out = a.vision(images.requires_grad_())  # grad enabled: always computed, keeps the graph
    assert out.requires_grad and memo.hits == 0
    assert memo.install(_model(lock=False)) == []
