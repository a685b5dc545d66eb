"""The emergent task's parts: attention read exactly, DINO's thresholding and the Jaccard index,
a model built to look at the object, composites whose masks are the pasted alpha, mask folders."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lipkit.cli import main
from lipkit.config import EmergentConfig, EvalConfig, VisionConfig
from lipkit.data.composites import MASK_ALPHA, Backgrounds, CompositeSet
from lipkit.data.transforms import ImageTransform
from lipkit.eval import emergent
from lipkit.eval.adapter import EvalModel
from lipkit.eval.context import Context
from lipkit.eval.errors import EvalError
from lipkit.eval.gallery import PrototypeGallery
from lipkit.eval.images import ImageFiles, ImageRef
from lipkit.eval.localization import LocalizationStats, gaussian_prior, jaccard, keep_mass, upsample
from lipkit.eval.masked_images import FolderSource
from lipkit.eval.splits import EvalData, Split
from lipkit.models.attention_maps import cls_attention
from lipkit.models.vision import VisionTransformer


def _vit(layers=3, heads=4, size=32, patch=8, channels=3, width=48, seed=0):
    torch.manual_seed(seed)
    vit = VisionTransformer(VisionConfig(image_size=size, patch_size=patch, channels=channels, width=width,
                                         layers=layers, heads=heads))
    with torch.no_grad():  # biases and norms away from their zero/one initial values
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit.eval()


def _reference_attention(vit, images):
    """softmax(QKᵀ/√d) of every block in float64, written out from the weights: [L, B, H, T, T]."""
    x = vit.tokens(images).double()
    out = []
    for block in vit.transformer.blocks:
        w, heads = x.shape[-1], block.attn.heads
        ln = nn.functional.layer_norm(x, (w,), block.norm1.weight.double(), block.norm1.bias.double(),
                                      block.norm1.eps)
        qkv = ln @ block.attn.qkv.weight.double().T + block.attn.qkv.bias.double()
        q, k, _ = qkv.split(w, dim=-1)
        q = q.unflatten(-1, (heads, w // heads)).transpose(1, 2)
        k = k.unflatten(-1, (heads, w // heads)).transpose(1, 2)
        out.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // heads), dim=-1))
        x = block.double()(x)
        block.float()
    return out


def test_attention_equals_the_plain_softmax_reference_and_the_fused_path():
    vit = _vit()
    images = torch.randn(5, 3, 32, 32)
    att = cls_attention(vit, images, rollout=True)
    reference = _reference_attention(vit, images)
    assert att.heads.shape == (5, 4, 16) and att.grid == 4
    torch.testing.assert_close(att.heads.double(), reference[-1][:, :, 0, 1:], atol=1e-6, rtol=1e-5)
    # the weights reproduce the tower's own output (F.scaled_dot_product_attention, cls row only)
    with torch.no_grad():
        torch.testing.assert_close(att.pooled, vit(images), atol=1e-5, rtol=1e-5)
    # rollout: ½A + ½I per block, rows renormalised, multiplied from the first block to the last
    flow = None
    for probs in reference:
        step = 0.5 * probs.mean(dim=1) + 0.5 * torch.eye(probs.shape[-1], dtype=torch.float64)
        step = step / step.sum(-1, keepdim=True)
        flow = step if flow is None else step @ flow
    torch.testing.assert_close(att.rollout.double(), flow[:, 0, 1:], atol=1e-6, rtol=1e-5)


def test_keep_mass_is_dinos_rule_and_keeps_ties_together():
    torch.manual_seed(1)
    maps = torch.rand(20, 3, 49)
    # DINO's visualize_attention.py, pasted: ascending sort, keep where the cumulative share > 1 - threshold
    val, idx = torch.sort(maps)
    val = val / torch.sum(val, dim=-1, keepdim=True)
    th = torch.cumsum(val, dim=-1) > (1 - 0.6)
    dino = torch.zeros_like(th).scatter_(-1, idx, th)
    assert torch.equal(keep_mass(maps, 0.6), dino)
    assert keep_mass(torch.ones(2, 9), 0.6).all()  # a uniform map keeps everything
    assert keep_mass(torch.tensor([[0.5, 0.3, 0.1, 0.1]]), 0.8).tolist() == [[True, True, False, False]]
    assert keep_mass(torch.tensor([[0.4, 0.2, 0.2, 0.2]]), 0.6).tolist() == [[True, True, True, True]]
    with pytest.raises(ValueError, match="mass"):
        keep_mass(maps, 0.0)


def test_jaccard_on_hand_built_masks():
    kept = upsample(torch.tensor([[True, False, False, False]]), grid=2, patch=2)  # the top-left 2x2
    assert kept[0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :3] = True  # 6 pixels, 4 of them kept
    assert jaccard(kept, mask).item() == pytest.approx(4 / 6)
    assert jaccard(kept, kept).item() == 1.0
    assert jaccard(kept, ~kept).item() == 0.0
    stats = LocalizationStats(grid=2, patch=2, mass=0.6)
    per_head = stats.update(torch.tensor([[[1.0, 0, 0, 0], [0, 0, 0, 1.0]]]), mask)
    assert per_head.tolist() == [[pytest.approx(4 / 6), 0.0]]
    m = stats.metrics()
    assert m["jaccard_best_head"] == pytest.approx(4 / 6) and m["best_head"] == 0
    assert m["jaccard_uniform"] == m["mask_area"] == pytest.approx(6 / 16)
    prior = gaussian_prior(4, 0.25)
    assert prior.argmax() in (5, 6, 9, 10) and torch.allclose(prior.view(4, 4), prior.view(4, 4).T)


def _looking_vit() -> VisionTransformer:
    """A one-block ViT whose class token attends only to dark patches: a patch's token is its
    mean brightness (white: a fixed vector u after the pre-norm, black: 0); keys are 5·e0 for the
    zero token and 0 for u, queries 10·e0, so a dark patch scores 50/√8 and a white one 0."""
    vit = VisionTransformer(VisionConfig(image_size=16, patch_size=4, channels=1, width=8, layers=1, heads=1))
    with torch.no_grad():
        for p in vit.parameters():
            p.zero_()
        vit.patchify.weight[0] = 1 / 16
        vit.cls_token[0, 0, 1] = 1.0
        for norm in (vit.norm_pre, vit.norm_post, vit.transformer.blocks[0].norm1, vit.transformer.blocks[0].norm2):
            norm.weight.fill_(1.0)
        white = vit.norm_pre(torch.eye(8)[0])
        qkv = vit.transformer.blocks[0].attn.qkv
        qkv.bias[0] = 10.0  # every query: 10·e0
        qkv.bias[8] = 5.0  # key bias 5·e0 ...
        qkv.weight[8] = -5.0 * white / white.dot(white)  # ... cancelled for a white patch
    return vit.eval()


class _Holder(nn.Module):
    def __init__(self, vit):
        super().__init__()
        self.vision = vit

    def encode_image(self, images, normalize=False):
        return self.vision(images)


def _cut_out(cells: list[tuple[int, int]]) -> Image.Image:
    """16x16 RGBA: black opaque 4x4 patches at `cells` (row, column), transparent elsewhere."""
    a = np.zeros((16, 16, 4), np.uint8)
    for r, c in cells:
        a[4 * r:4 * r + 4, 4 * c:4 * c + 4] = (0, 0, 0, 255)
    return Image.fromarray(a, "RGBA")


def test_a_model_built_to_look_at_the_object_scores_one_and_uniform_scores_the_mask_area():
    shapes = [[(0, 0), (0, 1), (1, 1)], [(2, 2)], [(3, 0), (3, 1), (3, 2), (3, 3), (2, 0)]]
    images = [_cut_out(s) for s in shapes]
    split = Split(images, np.array([0, 1, 0]), ["a", "b", "c"], [["a"], ["b"], ["c"]])
    data = EvalData("shapes", None, split, ["x", "y"], [])
    em = EvalModel(_Holder(_looking_vit()), lambda texts: torch.zeros(len(texts), 1), ImageTransform(16, (0.0,), (1.0,)),
                   name="looking", pretrained="", eval=EvalConfig(batch_size=2, emergent=EmergentConfig(overlays=2)))
    ctx = Context.of(em, data)
    result = emergent.localisation(ctx, em.model.vision)
    m = result.metrics
    assert result.dataset == "shapes" and result.task == "attention_localization"
    assert m["jaccard_best_head"] == 1.0 and m["jaccard_mean_map"] == 1.0 and m["images"] == 3
    area = np.mean([len(s) / 16 for s in shapes])
    assert m["jaccard_uniform"] == pytest.approx(area, abs=1e-12) and m["mask_area"] == pytest.approx(area)
    assert m["jaccard_gaussian_prior"] < 1
    assert len(result.files) == 2 and all(png[:4] == b"\x89PNG" for png in result.files.values())
    assert [o["jaccard_heads"] for o in result.details["overlays"]] == [[1.0], [1.0]]


def _cut_outs():
    shapes = []
    for n in range(3):
        a = np.zeros((30 + 7 * n, 20 + 9 * n, 4), np.uint8)
        a[..., :3] = (200, 40 * n, 90)
        yy, xx = np.mgrid[:a.shape[0], :a.shape[1]]
        inside = ((yy - a.shape[0] / 2) / (a.shape[0] / 2)) ** 2 + ((xx - a.shape[1] / 2) / (a.shape[1] / 2)) ** 2 < 1
        a[..., 3] = np.where(inside, 255, 0)
        a[a.shape[0] // 2, :, 3] = np.where(inside[a.shape[0] // 2], 100, 0)  # a soft row: alpha below half
        shapes.append((f"shape{n}", lambda a=a: Image.fromarray(a, "RGBA")))
    return shapes


def test_composite_masks_are_the_pasted_alpha():
    fashion = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    backgrounds = Backgrounds(["noise", "fashion-mnist"], fashion=lambda: fashion)
    composites = CompositeSet(_cut_outs(), 48, backgrounds, per_image=2, seed=3)
    assert len(composites) == 6
    for i in range(len(composites)):
        c = composites[i]
        assert c.image.size == (48, 48) and c.mask.shape == (48, 48)
        assert np.array_equal(c.mask, c.alpha >= MASK_ALPHA) and c.mask.any() and not c.mask.all()
        assert ((c.alpha > 0) & (c.alpha < MASK_ALPHA)).any()  # the soft row is pasted but not foreground
        # outside the cut-out the pixels are the background's, inside opaque ones the cut-out's colour
        background = np.asarray(backgrounds.make(backgrounds.kinds[i % 2], np.random.default_rng([3, i]), 48))
        image = np.asarray(c.image)
        assert np.array_equal(image[c.alpha == 0], background[c.alpha == 0])
        opaque = c.alpha == 255
        interior = opaque[1:-1, 1:-1] & opaque[:-2, 1:-1] & opaque[2:, 1:-1] & opaque[1:-1, :-2] & opaque[1:-1, 2:]
        assert interior.any()  # away from the resampled edge, the cut-out's own colour
        assert np.abs(image[1:-1, 1:-1][interior].astype(int) - (200, 40 * (i // 2), 90)).max() <= 3
        again = composites[i]
        assert np.array_equal(np.asarray(again.image), image) and again.name == c.name
    with pytest.raises(ValueError, match="unknown background"):
        Backgrounds(["bricks"])


def test_mask_folder_matches_images_by_path(tmp_path):
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    refs = []
    for cls in ("cat", "dog"):
        (photos / cls).mkdir(parents=True)
        (masks / cls).mkdir(parents=True)
        for n in range(2):
            path = photos / cls / f"{n}.jpg"
            Image.new("RGB", (8, 6), (10, 20, 30)).save(path)
            refs.append(ImageRef(str(path), str(path)))
    Image.fromarray(np.pad(np.full((2, 3), 255, np.uint8), ((1, 3), (2, 3)))).save(masks / "cat" / "0.png")
    Image.new("L", (8, 6), 255).save(masks / "dog" / "0.png")
    Image.new("L", (8, 6), 255).save(masks / "1.png")  # by file name alone: cat/1 and dog/1
    Image.new("L", (5, 5), 255).save(masks / "cat" / "1.png")  # cat/1 has its own, of the wrong size
    source = FolderSource(Split(ImageFiles(refs), None, None, None), str(masks))
    first = source.item(0)
    assert first.mask.sum() == 6 and first.mask[1:3, 2:5].all() and first.image.mode == "RGB"
    with pytest.raises(Exception, match="mask is 5x5, its image 8x6"):
        source.item(1)
    assert source.item(3).mask.all()  # dog/1.jpg -> masks/1.png
    assert source.mask_path(str(photos / "dog" / "1.jpg")) == masks / "1.png"
    with pytest.raises(EvalError, match="no mask in .* for any of the 1 test images"):
        FolderSource(Split(ImageFiles([ImageRef("x/zebra.jpg", "x/zebra.jpg")]), None, None, None), str(masks))
    with pytest.raises(EvalError, match="masks are matched to image files"):
        FolderSource(Split([Image.new("RGB", (8, 6))], None, None, None), str(masks))


def test_masks_option_needs_a_folder(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--tasks", "emergent", "--masks", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lipkit: error: --masks {tmp_path / 'none'}: no such folder"]


def test_settings_out_of_range_are_named():
    with pytest.raises(EvalError, match=r"eval.emergent.attention_mass: must be in \(0, 1\], got 1.5"):
        emergent.check_settings(EmergentConfig(attention_mass=1.5))
    with pytest.raises(EvalError, match="eval.emergent.gallery_top_k: must be >= 1, got 0"):
        emergent.check_settings(EmergentConfig(gallery_top_k=0))


def test_gallery_streams_top_images_purity_and_agreement():
    # 6 images, 3 prototypes; image argmax: 0 0 1 1 1 2; caption argmax: 0 1 1 1 2 2
    image = torch.tensor([[9., 0, 0], [8, 1, 0], [0, 5, 0], [0, 7, 1], [1, 6, 0], [0, 0, 3]])
    text = torch.tensor([[5., 0, 0], [0, 5, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5], [0, 0, 5]])
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    captions = ["a", "b", "b", "c", "d", "d"]
    chunked = PrototypeGallery(3, top_k=2, num_classes=2)
    for s in (slice(0, 4), slice(4, 6)):
        chunked.update(image[s], text[s], captions[s], labels[s])
    m = chunked.metrics()
    assert m["prototypes_used"] == 3 and m["cross_modal_agreement"] == pytest.approx(4 / 6)
    assert m["image_purity"] == pytest.approx((2 + 2 + 1) / 6) and m["text_purity"] == pytest.approx((1 + 2 + 1) / 6)
    entries = {e["prototype"]: e for e in chunked.prototypes(["coat", "shoe"])}
    assert entries[1]["top_images"] == [3, 4] and entries[0]["top_images"] == [0, 1]
    assert entries[1]["usage"] == pytest.approx(0.5) and entries[1]["label"] == "shoe"
    assert entries[1]["purity"] == pytest.approx(2 / 3) and entries[1]["agreement"] == pytest.approx(2 / 3)
    assert entries[2]["captions"] == [["d", 2]]
