"""The `emergent` task: do the properties of visual self-supervised models (DINO, SwAV) emerge
from language-image training? Seen and measured on one dataset, in three records:

- `attention_localization` (ViT image towers): the last block's class-token attention over the
  patches (`lipkit.models.attention_maps`), per head, averaged over heads and, with
  `eval.emergent.rollout`, attention rollout; each map thresholded as DINO does and scored by the
  Jaccard index with the image's foreground mask (`localization`), with two trivial baselines
  beside it: a centred Gaussian and a uniform map. Images and masks come from
  `masked_images`: a mask folder, Tux Paint stamps pasted onto clutter (the `tuxpaint` data set),
  or the images' alpha channel. They are streamed: made, preprocessed, scored and dropped batch
  by batch, so the maps of one batch are all that is ever held. The first `eval.emergent.overlays`
  images (the same in every run) are drawn with their maps;
- `prototype_gallery` (models with nCLIP prototype heads, data with captions): what each
  prototype stands for (`gallery`), the most used drawn with their top images;
- `nearest_neighbours`: whether an image's neighbours (by image, by caption) share its class
  (`neighbours`), a few fixed queries drawn with their neighbours.

A tower without attention maps (EfficientNet-Lite0, an open_clip model) or data without masks
gets one line saying that the localisation was skipped; the other records are still written.
Pictures go into `TaskResult.files` (`lipkit eval --out FILE` writes them under `FILE`'s
`.files/` folder), and `details` name them for `lipkit report`.
"""
from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

from lipkit.config import EmergentConfig
from lipkit.data.images import BadSampleError
from lipkit.models.attention_maps import cls_attention, has_attention

from .adapter import EvalModel
from .context import SHOWN_SKIPS, Context, captions_missing, note
from .emergent_images import attention_strip, contact_sheet, image_at
from .errors import EvalError
from .features import eval_mode, model_device
from .gallery import PrototypeGallery
from .localization import LocalizationStats, keep_mass, upsample
from .masked_images import masked_images
from .neighbours import nearest, precision
from .registry import ATTENTION_LOCALIZATION, NEAREST_NEIGHBOURS, PROTOTYPE_GALLERY
from .results import TaskResult
from .splits import EvalData

TASK = "emergent"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "data"


def check_settings(cfg: EmergentConfig) -> None:
    """An EvalError naming the first eval.emergent setting out of range."""
    checks = [("attention_mass", 0 < cfg.attention_mass <= 1, "in (0, 1]"),
              ("prior_sigma", cfg.prior_sigma > 0, "> 0"),
              ("composites_per_image", cfg.composites_per_image >= 1, ">= 1"),
              ("overlays", cfg.overlays >= 0, ">= 0"), ("gallery_prototypes", cfg.gallery_prototypes >= 0, ">= 0"),
              ("gallery_top_k", cfg.gallery_top_k >= 1, ">= 1"),
              ("neighbour_queries", cfg.neighbour_queries >= 0, ">= 0")]
    for key, ok, rule in checks:
        if not ok:
            raise EvalError(f"eval.emergent.{key}: must be {rule}, got {getattr(cfg, key)}")


def attention_tower(em: EvalModel):
    """(the model's ViT image tower, "") or (None, why it has no attention maps)."""
    tower = getattr(em.model, "vision", None)
    if tower is None:
        return None, "the model exposes no lipkit image tower to read attention from"
    if not has_attention(tower):
        return None, f"its image tower ({type(tower).__name__}) has no attention maps"
    return tower, ""


class ModelView:
    """Masks and pictures in the geometry of the model's preprocessing, for any preprocess that
    resizes, crops and normalises each channel affinely: a mask drawn white on black goes through
    the same preprocess, and is read back against a black and a white image of its size."""

    def __init__(self, preprocess):
        self.preprocess = preprocess
        self._levels: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def levels(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if size not in self._levels:
            if len(self._levels) > 64:
                self._levels.clear()
            black = self.preprocess(Image.new("RGB", size, (0, 0, 0))).double()
            white = self.preprocess(Image.new("RGB", size, (255, 255, 255))).double()
            span = white - black
            self._levels[size] = black, torch.where(span.abs() > 1e-6, span, torch.full_like(span, float("inf")))
        return self._levels[size]

    def mask(self, mask: np.ndarray) -> torch.Tensor:
        """bool [S, S]: the mask [H, W] where the preprocessed image's pixels are."""
        picture = Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")
        return self.picture(self.preprocess(picture), picture.size).mean(dim=0) > 0.5

    def picture(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[C, S, S] in [0, 1]: a preprocessed image of an original of `size`, as it looks."""
        black, span = self.levels(size)
        return ((x.double() - black) / span).clamp(0, 1)


def _note_skipped(name: str, skipped: list[tuple[str, str]]) -> None:
    for where, reason in skipped[:SHOWN_SKIPS]:
        note(f"emergent on {name}: skipped {where}: {reason}")
    if len(skipped) > SHOWN_SKIPS:
        note(f"emergent on {name}: skipped {len(skipped) - SHOWN_SKIPS} more images")


def localisation(ctx: Context, tower) -> TaskResult | None:
    """The attention_localization record (None, after one line, when no image has a mask)."""
    em, d, cfg = ctx.em, ctx.data, ctx.cfg.emergent
    source, dataset = masked_images(d, ctx.split("test"), ctx.cfg, tower.cfg.image_size)
    grid, patch = tower.grid, tower.cfg.patch_size
    stats = LocalizationStats(grid, patch, cfg.attention_mass, cfg.prior_sigma)
    view = ModelView(em.preprocess)
    device = model_device(em.model)
    skipped: list[tuple[str, str]] = []
    drawn: list[dict] = []  # the first images scored, kept for their pictures
    pending: list[tuple[torch.Tensor, torch.Tensor, str, tuple[int, int]]] = []

    def flush() -> None:
        images = torch.stack([x for x, _, _, _ in pending])
        masks = torch.stack([m for _, m, _, _ in pending])
        with eval_mode(em.model):
            att = cls_attention(tower, images if device is None else images.to(device), rollout=cfg.rollout)
        heads = att.heads.double().cpu()
        rollout = att.rollout.double().cpu() if att.rollout is not None else None
        per_head = stats.update(heads, masks, rollout)
        for j, (x, m, name, size) in enumerate(pending):
            if len(drawn) < cfg.overlays:
                drawn.append({"name": name, "picture": view.picture(x, size), "mask": m, "heads": heads[j],
                              "rollout": None if rollout is None else rollout[j],
                              "jaccard_heads": per_head[j].tolist()})
        pending.clear()

    for i in ctx.bar(range(len(source)), f"attention {dataset}"):
        try:
            item = source.item(i)
        except BadSampleError as e:
            skipped.append((e.where, e.reason))
            continue
        mask = view.mask(item.mask)
        if not mask.any():
            skipped.append((item.name, "no foreground left after the model's crop"))
            continue
        pending.append((em.preprocess(item.image), mask, item.name, item.image.size))
        if len(pending) == ctx.batch_size:
            flush()
    if pending:
        flush()
    _note_skipped(dataset, skipped)
    if stats.n == 0:
        why = skipped[0][1] if skipped else "it has no images"
        note(f"emergent on {d.name}: attention localisation skipped, no image has a foreground mask "
             f"(e.g. {why}; give masks with --masks DIR)")
        return None
    metrics = stats.metrics()
    metrics.update(heads=int(stats.head_means.numel()), grid=grid, skipped=len(skipped))
    files, overlays = {}, []
    best = stats.best_head
    for n, o in enumerate(drawn):
        maps = [("mean of heads", o["heads"].mean(dim=0)), (f"head {best} (best)", o["heads"][best])]
        if o["rollout"] is not None:
            maps.append(("rollout", o["rollout"]))
        panels = [(label, a.view(grid, grid).numpy(),
                   upsample(keep_mass(a, cfg.attention_mass), grid, patch).numpy()) for label, a in maps]
        picture = Image.fromarray((o["picture"].permute(1, 2, 0).squeeze(-1).numpy() * 255).round()
                                  .astype(np.uint8))
        path = f"emergent/{_slug(dataset)}/attention-{n:03d}.png"
        files[path] = attention_strip(picture, o["mask"].numpy(), panels)
        overlays.append({"file": path, "image": o["name"], "jaccard_heads": o["jaccard_heads"]})
    details = {"overlays": overlays, "jaccard_per_head": stats.head_means.tolist(), "best_head": best}
    return TaskResult(dataset, ATTENTION_LOCALIZATION, metrics, details, files)


def prototype_gallery(ctx: Context) -> TaskResult | None:
    """The prototype_gallery record, for a model with prototype heads on captioned data."""
    em, d, cfg = ctx.em, ctx.data, ctx.cfg.emergent
    if None in (em.image_features, em.image_prototype_head, em.text_prototypes):
        return None
    split = ctx.split("test")
    if captions_missing(split):
        note(f"emergent on {d.name}: prototype gallery skipped, {captions_missing(split)}")
        return None
    image_logits = ctx.apply(em.image_prototype_head, ctx.tower("test"))
    text_logits = ctx.embed_texts(split.caption, feature_fn=em.text_prototypes)
    labels = None if split.labels is None else torch.as_tensor(split.labels, dtype=torch.long)
    num_classes = len(d.class_names) if d.class_names else (int(labels.max()) + 1 if labels is not None else 0)
    gallery = PrototypeGallery(image_logits.shape[1], cfg.gallery_top_k, num_classes)
    for start in range(0, len(split), ctx.batch_size):
        stop = start + ctx.batch_size
        gallery.update(image_logits[start:stop], text_logits[start:stop], split.caption[start:stop],
                       None if labels is None else labels[start:stop])
    entries = gallery.prototypes(d.class_names)
    files = {}
    for entry in entries[:cfg.gallery_prototypes]:
        if not entry["usage"]:
            continue
        path = f"emergent/{_slug(d.name)}/prototype-{entry['prototype']:03d}.png"
        files[path] = contact_sheet([[image_at(split.images, i) for i in entry["top_images"]]])
        entry["sheet"] = path
    return TaskResult(d.name, PROTOTYPE_GALLERY, gallery.metrics(), {"prototypes": entries}, files)


def nearest_neighbours(ctx: Context) -> TaskResult | None:
    """The nearest_neighbours record: precision of the neighbours, a few queries drawn."""
    d, cfg = ctx.data, ctx.cfg.emergent
    split = ctx.split("test")
    k = min(cfg.gallery_top_k, len(split) - 1)
    if k < 1:
        note(f"emergent on {d.name}: nearest neighbours skipped, it has one test image")
        return None
    features, embeds = ctx.features("test"), ctx.embeds("test")
    metrics: dict[str, float] = {"k": k, "images": len(split), "features": ctx.feature_kind}
    texts = None if captions_missing(split) else ctx.embed_texts(split.caption)
    if split.labels is not None:
        metrics["image_neighbour_precision"] = precision(features, features, split.labels, split.labels, k,
                                                         exclude_self=True, chunk_size=ctx.cfg.chunk_size)
        if texts is not None:
            metrics["caption_neighbour_precision"] = precision(texts, embeds, split.labels, split.labels, k,
                                                               exclude_self=False, chunk_size=ctx.cfg.chunk_size)
    queries, files = [], {}
    for q in (d.subset(split, cfg.neighbour_queries).tolist() if cfg.neighbour_queries else []):
        by_image, image_sims = nearest(features[q:q + 1], features, k, exclude=torch.tensor([q]))
        entry = {"index": q, "by_image": by_image[0].tolist(), "image_cosines": image_sims[0].tolist()}
        rows = [[image_at(split.images, q)] + [image_at(split.images, i) for i in entry["by_image"]]]
        if texts is not None:
            by_caption, caption_sims = nearest(texts[q:q + 1], embeds, k)
            entry.update(caption=split.caption[q], by_caption=by_caption[0].tolist(),
                         caption_cosines=caption_sims[0].tolist())
            rows.append([None] + [image_at(split.images, i) for i in entry["by_caption"]])
        if split.labels is not None and d.class_names:
            entry["label"] = d.class_names[int(split.labels[q])]
        path = f"emergent/{_slug(d.name)}/neighbours-{q:05d}.png"
        files[path] = contact_sheet(rows)
        entry["sheet"] = path
        queries.append(entry)
    return TaskResult(d.name, NEAREST_NEIGHBOURS, metrics, {"queries": queries}, files)


def evaluate(model: EvalModel, data: EvalData, *, cache: Context | None = None, **settings
             ) -> list[TaskResult]:
    """attention_localization (ViT towers, images with masks), prototype_gallery (prototype heads,
    captions) and nearest_neighbours results on `data`; the module docstring says what each holds."""
    ctx = Context.of(model, data, cache, settings)
    check_settings(ctx.cfg.emergent)
    results = []
    tower, why = attention_tower(ctx.em)
    if tower is None:
        note(f"emergent on {ctx.data.name}: attention localisation skipped, {why}")
    else:
        results.append(localisation(ctx, tower))
    results += [prototype_gallery(ctx), nearest_neighbours(ctx)]
    return [r for r in results if r is not None]
