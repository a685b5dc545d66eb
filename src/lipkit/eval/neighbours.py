"""Nearest neighbours in the model's spaces: do an image's neighbours share its class?

- by image: each image's `k` nearest other images by cosine of the image features (the probes'
  features, `eval.features`), `image_neighbour_precision` = the share of them in the image's class;
- by caption: each image's caption's `k` nearest images by cosine in the shared embedding space
  (its own image among them), `caption_neighbour_precision` = the share in the caption's class.

Scored over the whole split in chunks of queries (memory: chunk × N similarities); for a few
fixed queries the neighbours themselves are kept for drawing. Ties rank the lower index first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest(queries: torch.Tensor, gallery: torch.Tensor, k: int, exclude: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices [Q, k], cosines [Q, k]) of each query's k nearest gallery rows, most similar first;
    `exclude` [Q]: a gallery row each query may not return (itself)."""
    sims = F.normalize(queries.double(), dim=-1) @ F.normalize(gallery.double(), dim=-1).T
    if exclude is not None:
        sims[torch.arange(len(queries)), exclude] = float("-inf")
    k = min(k, sims.shape[1] - (exclude is not None))
    order = sims.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return order, sims.gather(1, order)


def precision(queries: torch.Tensor, gallery: torch.Tensor, query_labels, gallery_labels, k: int,
              exclude_self: bool, chunk_size: int = 1024) -> float:
    """The share of the queries' k nearest gallery rows whose label is the query's."""
    query_labels, gallery_labels = torch.as_tensor(query_labels), torch.as_tensor(gallery_labels)
    hits, total = 0, 0
    for start in range(0, len(queries), chunk_size):
        stop = min(start + chunk_size, len(queries))
        exclude = torch.arange(start, stop) if exclude_self else None
        idx, _ = nearest(queries[start:stop], gallery, k, exclude)
        hits += int((gallery_labels[idx] == query_labels[start:stop, None]).sum())
        total += idx.numel()
    return hits / total if total else float("nan")
