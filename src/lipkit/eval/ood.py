"""Out-of-distribution classification: zero-shot and linear-probe accuracy on shifted test sets,
and the drop relative to the clean set.

Shifts are any named test sets: ImageNet-C-style corruptions of the clean images (`corrupt`,
from `imagecorruptions-imaug`: 19 corruptions x severities 1-5), another domain (Tux Paint
photos -> cartoons) or another dataset with the same classes. The zero-shot classifier is built
once and the linear probe is fitted once on clean training features (`linear.fit`); both then
score every shifted set. `evaluate(model, data)` is the task; `shift_metrics` scores any clean
and shifted sets of model-ready images.

Metrics, for each method m in (zeroshot, linear): `m_clean_acc1`, `m_<shift>_acc1` per shift,
`m_shifted_acc1` (the mean over shifts), `m_drop` = clean - shifted (accuracy points lost) and
`m_relative_drop` = drop / clean.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial

import numpy as np
import torch
from PIL import Image

from .context import Context
from .errors import EvalError
from .features import FeatureFn, embed_images
from .images import ImageFiles
from .linear import LinearProbe, train_probe
from .metrics import classification_metrics
from .adapter import EvalModel
from .registry import OOD_CLASSIFICATION
from .results import TaskResult
from .splits import EvalData, Split
from .zeroshot import zeroshot_classifier

Images = torch.Tensor
ShiftedSet = tuple[Images, object]  # (model-ready images, labels)


def _imagecorruptions():
    try:
        import imagecorruptions
    except ImportError as e:  # the extra is not installed, or one of its libraries fails
        raise EvalError("ood: corruptions come from the 'imagecorruptions-imaug' package, which "
                        f"cannot be imported ({e}); install it with "
                        "pip install -c constraints.txt 'lipkit[eval]'") from None
    return imagecorruptions


def corruption_names() -> list[str]:
    """All 19 corruption names (15 ImageNet-C + 4 validation corruptions)."""
    return _imagecorruptions().get_corruption_names("all")


def check_corruptions(names: Sequence[str], severities: Sequence[int]) -> None:
    known = corruption_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EvalError(f"ood: unknown corruption(s) {', '.join(unknown)}; available: "
                        f"{', '.join(known)}")
    bad = [s for s in severities if s not in (1, 2, 3, 4, 5)]
    if bad or not severities:
        raise EvalError(f"ood: severities must be integers 1-5, got {list(severities)}")


def corrupt(images: np.ndarray, name: str, severity: int, *, min_size: int = 32,
            seed: int = 0, first_index: int = 0) -> np.ndarray:
    """Corrupt uint8 images [N, H, W] (grayscale) or [N, H, W, 3]; same shape back.

    Images smaller than `min_size` (the library needs >= 32 px) are zero-padded around the
    centre, corrupted, and cropped back. Grayscale images go through the library as 3 equal
    channels and come back as their channel mean. The library draws from NumPy's global RNG:
    it is seeded per image from (seed, name, severity, first_index + i) and restored afterwards,
    so an image's corruption does not depend on how the images were batched.
    """
    lib = _imagecorruptions()
    check_corruptions([name], [severity])
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4
                                                                 and images.shape[-1] != 3):
        raise ValueError(f"images must be uint8 [N, H, W] or [N, H, W, 3], got {images.dtype} "
                         f"{images.shape}")
    h, w = images.shape[1:3]
    top, left = max(0, (min_size - h + 1) // 2), max(0, (min_size - w + 1) // 2)
    bottom, right = max(0, min_size - h - top), max(0, min_size - w - left)
    pad = ((top, bottom), (left, right)) + (((0, 0),) if images.ndim == 4 else ())
    out = np.empty_like(images)
    state = np.random.get_state()
    try:
        for i, image in enumerate(images):
            np.random.seed(zlib.crc32(f"{seed}/{name}/{severity}/{first_index + i}".encode()))
            x = lib.corrupt(np.pad(image, pad), severity=severity, corruption_name=name)
            x = x[top:top + h, left:left + w]
            if images.ndim == 3:
                x = np.rint(x.astype(np.float64).mean(axis=-1))
            out[i] = np.clip(x, 0, 255).astype(np.uint8)
    finally:
        np.random.set_state(state)
    return out


def shift_name(corruption: str, severity: int) -> str:
    return f"{corruption}_s{severity}"


def _summarise(prefix: str, clean: float, shifted: Mapping[str, float]) -> dict[str, float]:
    out = {f"{prefix}_clean_acc1": clean}
    out.update({f"{prefix}_{name}_acc1": acc for name, acc in shifted.items()})
    mean = float(np.mean(list(shifted.values())))
    out[f"{prefix}_shifted_acc1"] = mean
    out[f"{prefix}_drop"] = clean - mean
    out[f"{prefix}_relative_drop"] = (clean - mean) / clean if clean > 0 else float("nan")
    return out


Encode = Callable[[Images], tuple[torch.Tensor | None, torch.Tensor | None]]


def shift_metrics(model, tokenize, clean: ShiftedSet, shifted: Mapping[str, ShiftedSet],
                  classnames: Sequence[str] | None = None, templates=None, *,
                  probe: LinearProbe | None = None, probe_feature_fn: FeatureFn | None = None,
                  probe_normalize: bool = False, encode: Encode | None = None,
                  batch_size: int = 256, device=None, progress: Callable | None = None
                  ) -> dict[str, float]:
    """Zero-shot (when `classnames` and `templates` are given) and linear-probe (when a fitted
    `probe` is given, with the features it was fitted on: `probe_feature_fn`, `probe_normalize`)
    accuracy on the clean set and each shifted set.

    `encode(images) -> (unit embeddings, probe features)` replaces the two embedding passes
    (e.g. to run a tower once for both); `progress` wraps the loop over shifts (e.g. tqdm)."""
    if not shifted:
        raise ValueError("no shifted test sets")
    if classnames is None and probe is None:
        raise ValueError("nothing to evaluate: give classnames and templates, or a probe")
    classifier = None
    if classnames is not None:
        classifier = zeroshot_classifier(model, tokenize, classnames, templates, batch_size,
                                         device=device)
    if encode is None:
        def encode(images):
            embeds = features = None
            if classifier is not None:
                embeds = embed_images(model, images, batch_size, normalize=True, device=device)
            if probe is not None:
                features = embed_images(model, images, batch_size, normalize=probe_normalize,
                                        feature_fn=probe_feature_fn, device=device)
            return embeds, features

    def accuracies(images, labels) -> dict[str, float]:
        embeds, features = encode(images)
        accs = {}
        if classifier is not None:
            accs["zeroshot"] = classification_metrics(embeds @ classifier.T, labels, (1,))["acc1"]
        if probe is not None:
            accs["linear"] = probe.evaluate(features, labels, (1,))["acc1"]
        return accs

    clean_accs = accuracies(*clean)
    per_shift: dict[str, dict[str, float]] = {}
    names = list(shifted)
    for name in (progress(names) if progress else names):
        per_shift[name] = accuracies(*shifted[name])
    metrics: dict[str, float] = {}
    for method, clean_acc in clean_accs.items():
        metrics.update(_summarise(method, clean_acc,
                                  {name: accs[method] for name, accs in per_shift.items()}))
    return metrics


def _corrupt_image(corruption: str, severity: int, seed: int, image: Image.Image,
                   index: int) -> Image.Image:
    return Image.fromarray(corrupt(np.asarray(image)[None], corruption, severity, seed=seed,
                                   first_index=index)[0])


class _Corrupted(Mapping):
    """name -> (images, labels) for each (corruption, severity), built on access; image files
    are corrupted after decoding, in the loader's workers."""

    def __init__(self, ctx: Context, split: Split):
        self.ctx, self.split = ctx, split
        self.keys_ = {shift_name(c, s): (c, s) for c in ctx.cfg.ood_corruptions
                      for s in ctx.cfg.ood_severities}

    def __getitem__(self, name):
        corruption, severity = self.keys_[name]
        images, seed = self.split.images, self.ctx.em.seed
        edit = partial(_corrupt_image, corruption, severity, seed)
        if isinstance(images, np.ndarray):
            images = corrupt(images, corruption, severity, seed=seed)
        elif isinstance(images, ImageFiles):
            images = images.edited(edit)
        else:  # PIL images of different sizes: one at a time
            images = [edit(im, i) for i, im in enumerate(images)]
        return images, self.split.labels

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def evaluate(model: EvalModel, data: EvalData, *, cache: Context | None = None, **settings
             ) -> list[TaskResult]:
    """Zero-shot (with class names) and linear-probe accuracy under shift, one ood_classification
    result per kind of shift the data has: `<name>-c`, eval.ood_corruptions x eval.ood_severities
    of the first eval.ood_limit of the probes' test images (none with no corruptions);
    `<name>-style`, Tux Paint photos -> cartoons; `<name>-shift`, the probes' test images against
    `data.shift`. The probe is the linear task's. Needs labels, two classes or more to train the
    probe on."""
    ctx = Context.of(model, data, cache, settings)
    ctx.require("ood", labels=True, probe_classes=True, choose_C=ctx.cfg.linear_solver == "lbfgs")
    c, d, em = ctx.cfg, ctx.data, ctx.em
    if c.ood_corruptions:  # none: the shifted datasets alone
        check_corruptions(c.ood_corruptions, c.ood_severities)
    # without two class names or more: the probe alone
    names = d.class_names if d.class_names is not None and len(d.class_names) > 1 else None
    common = dict(probe=ctx.once(train_probe), encode=ctx.encode, batch_size=ctx.batch_size)
    prompts = (names, d.templates if names is not None else None)
    results = []
    clean = ctx.split("probe_test")  # the images the probe did not train on
    if c.ood_corruptions:
        rows = d.subset(clean, c.ood_limit)
        split = clean.take(rows)
        metrics = shift_metrics(em.model, em.tokenize, (("probe_test", rows), split.labels),  # embedded already
                                _Corrupted(ctx, split), *prompts,
                                progress=lambda xs: ctx.bar(xs, "ood: corruptions"), **common)
        metrics.update(images=len(split), features=ctx.feature_kind)
        results.append(TaskResult(f"{d.name}-c", OOD_CLASSIFICATION, metrics,
                                  {"corruptions": list(c.ood_corruptions),
                                   "severities": list(c.ood_severities)}))
    if d.style is not None:
        photos, cartoons = d.style
        style = shift_metrics(em.model, em.tokenize, (photos.images, photos.labels),
                              {"cartoon": (cartoons.images, cartoons.labels)}, *prompts, **common)
        style.update(photos=len(photos), cartoons=len(cartoons), features=ctx.feature_kind)
        results.append(TaskResult(f"{d.name}-style", OOD_CLASSIFICATION, style))
    if d.shift is not None:  # the probes' whole test set against the whole shifted set
        shifted = ctx.split("shift")
        key = d.shift_name.replace("/", "_")
        shift = shift_metrics(em.model, em.tokenize, ("probe_test", clean.labels),
                              {key: ("shift", shifted.labels)}, *prompts, **common)
        shift.update(images=len(clean), shifted_images=len(shifted), shift_dataset=d.shift_name,
                     features=ctx.feature_kind)
        results.append(TaskResult(f"{d.name}-shift", OOD_CLASSIFICATION, shift))
    return results
