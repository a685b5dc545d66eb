"""Image-text retrieval: R@k and median rank in both directions, with several captions per image
and identical caption texts counted as hits.

Names follow CLIP_benchmark: `text_retrieval_*` ranks texts for an image query (image -> text),
`image_retrieval_*` ranks images for a text query (text -> image).

What counts as a hit. Texts are grouped by their exact string (when `captions` are given) and
each distinct string is one caption: an image's hits are the distinct captions equal to one of
its own, and a caption's hits are every image it was written for. So "A red apple." written for
two images is a hit for both, in both directions (CLIP_benchmark counts only the image each copy
was written for, and ranks the copies as separate, tied gallery items).

A query's rank is the 1-based position of its best-ranked positive in the gallery sorted by
cosine similarity, ties broken toward the lower gallery index (as a stable sort would). It is
computed without sorting or holding the Q x G similarity matrix: per chunk of queries, one pass
over gallery chunks finds the best positive (score s*, index j*), a second counts the gallery
items that come before it, #{s > s*} + #{s == s*, index < j*}. Memory is chunk x chunk.

`evaluate(model, data)` is the task; `retrieval_ranks` and `rank_metrics` compute it from
embeddings.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .context import Context, note
from .errors import TaskSkipped
from .metrics import cosine_scores, unit_rows
from .adapter import EvalModel
from .registry import ZEROSHOT_RETRIEVAL
from .results import TaskResult
from .splits import EvalData, limit_of

DEFAULT_RECALL_AT = (1, 5, 10)
RECALL_CURVE_MAX_K = 50


class _Positives:
    """For each query, the gallery indices that are hits, in CSR form (offsets, indices)."""

    def __init__(self, lists: list[np.ndarray]):
        self.offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        self.offsets[1:] = np.cumsum([len(x) for x in lists])
        self.indices = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)

    def block_mask(self, q0: int, q1: int, g0: int, g1: int) -> torch.Tensor:
        """Boolean [q1 - q0, g1 - g0]: which gallery items g0..g1 are hits for queries q0..q1."""
        mask = torch.zeros(q1 - q0, g1 - g0, dtype=torch.bool)
        lo, hi = self.offsets[q0], self.offsets[q1]
        cols = self.indices[lo:hi]
        rows = np.repeat(np.arange(q1 - q0), np.diff(self.offsets[q0:q1 + 1]))
        keep = (cols >= g0) & (cols < g1)
        mask[torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep] - g0)] = True
        return mask


def _groups(text_image: np.ndarray, captions: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """(group id per text, first text of each group): equal strings share a group (without
    captions, each text is its own group)."""
    if captions is None:
        return np.arange(len(text_image)), np.arange(len(text_image))
    if len(captions) != len(text_image):
        raise ValueError(f"captions has {len(captions)} entries but text_image has "
                         f"{len(text_image)}")
    ids: dict[str, int] = {}
    group = np.array([ids.setdefault(c, len(ids)) for c in captions], dtype=np.int64)
    first = np.full(len(ids), -1, dtype=np.int64)
    for t in range(len(group) - 1, -1, -1):
        first[group[t]] = t
    return group, first


def positives(text_image, num_images: int, captions: Sequence[str] | None = None
              ) -> tuple[_Positives, _Positives, np.ndarray]:
    """(hits of each image among the distinct texts, hits of each distinct text among the
    images, the first text index of each distinct text)."""
    text_image = np.asarray(text_image, dtype=np.int64)
    if text_image.ndim != 1 or len(text_image) == 0:
        raise ValueError("text_image must be a non-empty list of image indices, one per text")
    if text_image.min() < 0 or text_image.max() >= num_images:
        raise ValueError(f"text_image must index the {num_images} images, got values in "
                         f"[{text_image.min()}, {text_image.max()}]")
    captionless = np.setdiff1d(np.arange(num_images), text_image)
    if len(captionless):
        raise ValueError(f"{len(captionless)} image(s) have no caption (first: index "
                         f"{captionless[0]}); every image needs at least one")
    group, first = _groups(text_image, captions)
    images_of_group = [set() for _ in range(len(first))]
    groups_of_image = [set() for _ in range(num_images)]
    for i, g in zip(text_image.tolist(), group.tolist()):
        images_of_group[g].add(i)
        groups_of_image[i].add(g)
    return (_Positives([np.array(sorted(gs)) for gs in groups_of_image]),
            _Positives([np.array(sorted(ims)) for ims in images_of_group]), first)


def ranks(queries, gallery, hits: _Positives, chunk_size: int = 1024) -> np.ndarray:
    """1-based rank of each query's best-ranked hit in `gallery` (see the module docstring)."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    nq, ng = queries.shape[0], gallery.shape[0]
    out = np.empty(nq, dtype=np.int64)
    for q0 in range(0, nq, chunk_size):
        q1 = min(q0 + chunk_size, nq)
        q = queries[q0:q1]
        best = torch.full((q1 - q0,), -torch.inf)
        best_idx = torch.full((q1 - q0,), ng, dtype=torch.long)
        for g0 in range(0, ng, chunk_size):  # pass 1: score and index of the best hit
            g1 = min(g0 + chunk_size, ng)
            s = cosine_scores(q, gallery[g0:g1]).masked_fill(~hits.block_mask(q0, q1, g0, g1),
                                                              -torch.inf)
            # max() returns the first maximal index; a later chunk wins only when strictly higher
            block_best, block_idx = s.max(dim=1)
            better = block_best > best
            best = torch.where(better, block_best, best)
            best_idx = torch.where(better, block_idx + g0, best_idx)
        before = torch.zeros(q1 - q0, dtype=torch.long)
        for g0 in range(0, ng, chunk_size):  # pass 2: how many gallery items come before it
            g1 = min(g0 + chunk_size, ng)
            s = cosine_scores(q, gallery[g0:g1])
            index = torch.arange(g0, g1)
            ahead = (s > best[:, None]) | ((s == best[:, None]) & (index < best_idx[:, None]))
            before += ahead.sum(dim=1)
        out[q0:q1] = (before + 1).numpy()
    return out


def retrieval_ranks(image_embeds, text_embeds, text_image, captions: Sequence[str] | None = None,
                    *, chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each image's best caption among the distinct texts, rank of each distinct text's
    best image among all images). `text_image[t]` is the image text t was written for,
    `captions[t]` its string; texts with equal strings are one caption (the first one's
    embedding), so a gallery never holds copies of a text, and a caption written for several
    images is one query with all of them as hits."""
    images = unit_rows(image_embeds, "image_embeds")
    texts = unit_rows(text_embeds, "text_embeds")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"image_embeds have {images.shape[1]} dimensions but text_embeds have "
                         f"{texts.shape[1]}")
    if len(text_image) != texts.shape[0]:
        raise ValueError(f"text_image has {len(text_image)} entries but there are "
                         f"{texts.shape[0]} text embeddings")
    image_hits, text_hits, first = positives(text_image, images.shape[0], captions)
    distinct = texts[torch.from_numpy(first)]
    return (ranks(images, distinct, image_hits, chunk_size),
            ranks(distinct, images, text_hits, chunk_size))


def rank_metrics(image_to_text: np.ndarray, text_to_image: np.ndarray,
                 recall_at: Sequence[int] = DEFAULT_RECALL_AT) -> dict[str, float]:
    """R@k for each k and the median rank, in CLIP_benchmark's names."""
    metrics = {}
    for direction, r in (("image_retrieval", text_to_image), ("text_retrieval", image_to_text)):
        for k in recall_at:
            metrics[f"{direction}_recall@{k}"] = float(np.mean(r <= k))
    # median of 1-based ranks (an even count can give x.5)
    metrics["image_retrieval_median_rank"] = float(np.median(text_to_image))
    metrics["text_retrieval_median_rank"] = float(np.median(image_to_text))
    return metrics


def _without_certain_hits(metrics: dict[str, float], galleries: dict[str, int], dataset: str) -> dict[str, float]:
    """`metrics` without the recalls that cannot miss (R@k with k >= the gallery's size) and the
    median rank of a one-item gallery, left out in one line."""
    said, dropped = [], set()
    for direction, size in galleries.items():
        certain = [k for k in metrics if k.startswith(direction) and (
            k.endswith("median_rank") and size < 2 or "@" in k and int(k.rsplit("@", 1)[1]) >= size)]
        if certain:
            what = "images" if direction == "image_retrieval" else "distinct captions"
            said.append(f"{', '.join(certain)} ({size} {what})")
        dropped.update(certain)
    if said:
        note(f"retrieval on {dataset}: left out {'; '.join(said)}: no rank can exceed the gallery")
    return {k: v for k, v in metrics.items() if k not in dropped}


def recall_curve(ranks_: np.ndarray, max_k: int) -> list[float]:
    """R@1 .. R@max_k (for plotting)."""
    counts = np.bincount(np.minimum(ranks_, max_k + 1) - 1, minlength=max_k + 1)[:max_k]
    return (np.cumsum(counts) / len(ranks_)).tolist()


def flatten_captions(captions_per_image: Sequence[Sequence[str]]) -> tuple[list[str], list[int]]:
    """[[c, ...] per image] -> (texts, text_image)."""
    texts, text_image = [], []
    for i, caps in enumerate(captions_per_image):
        if isinstance(caps, str):
            caps = [caps]
        texts.extend(caps)
        text_image.extend([i] * len(caps))
    return texts, text_image


def evaluate(model: EvalModel, data: EvalData, *, cache: Context | None = None, **settings
             ) -> list[TaskResult]:
    """Retrieval among `data`'s test images (all of a set given by path, as CLIP_benchmark does;
    eval.retrieval_limit of them when set, or of a built-in set) and all their captions: one
    zeroshot_retrieval result, R@1/5/10 both ways, both median ranks, and how many images, texts
    and distinct texts; details: the recall curves to R@50. A recall that cannot miss (k at
    least the gallery: the images for text -> image, the distinct captions for image -> text) is
    left out, in one line. Needs a caption for every image."""
    ctx = Context.of(model, data, cache, settings)
    ctx.require("retrieval", captions=True)
    d, test = ctx.data, ctx.split("test")
    limit = limit_of(ctx.cfg, "retrieval_limit", d.by_path)
    picked = d.subset(test, limit)
    if d.by_path and len(picked) < len(test):
        note(f"retrieval on {d.name}: {len(picked)} of its {len(test)} test images (eval.retrieval_limit={limit})")
    split, image_embeds = test.take(picked), ctx.embeds("test")[picked]
    texts, text_image = flatten_captions(split.captions)
    galleries = {"image_retrieval": len(split), "text_retrieval": len(set(texts))}
    if max(galleries.values()) < 2:
        raise TaskSkipped("retrieval", d.name, "its gallery is one image and one caption: every rank is 1")
    text_embeds = ctx.embed_texts(texts)
    i2t, t2i = retrieval_ranks(image_embeds, text_embeds, text_image, texts, chunk_size=ctx.cfg.chunk_size)
    metrics = _without_certain_hits(rank_metrics(i2t, t2i), galleries, d.name)
    metrics.update(images=len(split), texts=len(texts), distinct_texts=len(set(texts)))
    details = {"text_retrieval_recall_curve": recall_curve(i2t, RECALL_CURVE_MAX_K),
               "image_retrieval_recall_curve": recall_curve(t2i, RECALL_CURVE_MAX_K)}
    return [TaskResult(ctx.data.name, ZEROSHOT_RETRIEVAL, metrics, details)]
