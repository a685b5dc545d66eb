"""What the evaluation runner needs of a model, and how to get it from a spec.

`EvalModel` bundles a model with `encode_image(images, normalize=)` / `encode_text(tokens,
normalize=)`, its tokenize function and its image preprocessing (PIL image -> tensor), plus
optional hooks: pre-projection tower features (for the linear / kNN "pre" option) and prototype
logits (for the collapse task). Nothing here looks at model names: a lipkit model gets the hooks
from the towers and heads it was built with; an open_clip model gets none.

Specs: a lipkit run directory, or `open_clip:ARCH[:PRETRAINED]` (open_clip is imported only
then; it is not installable beside lipkit's CPU torch here, so that path has a clear error).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lipkit.config import EvalConfig, RunConfig

from .errors import EvalError

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
OPEN_CLIP_PREFIX = "open_clip:"
LOCAL_DIR = "local-dir:"  # open_clip's scheme for a model folder


@dataclass
class EvalModel:
    model: object
    tokenize: Callable[[list[str]], torch.Tensor]
    preprocess: Callable[[Image.Image], torch.Tensor]  # one PIL image -> [C, H, W]
    name: str
    pretrained: str
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig | None = None  # the training config of a lipkit run
    image_features: FeatureFn | None = None  # pre-projection (pooled tower) features
    text_features: FeatureFn | None = None
    # Tower features -> what encode_image returns (unnormalised): lets the runner run the image
    # tower once per image set for both the embeddings and the probe features.
    image_head: FeatureFn | None = None
    image_prototype_head: FeatureFn | None = None  # tower features -> prototype logits [B, K]
    text_prototypes: FeatureFn | None = None  # tokens -> prototype logits [B, K]
    num_prototypes: int = 0
    prototype_temperature: float = 0.1
    seed: int = 0
    # A faster exact path for uint8 arrays (e.g. Fashion-MNIST for a model trained on it).
    preprocess_array: Callable[[np.ndarray], torch.Tensor] | None = None

    def images(self, images: Sequence[Image.Image] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Model-ready batch from PIL images or a uint8 array [N, H, W] / [N, H, W, 3]; a tensor
        is model-ready already."""
        if isinstance(images, torch.Tensor):
            return images
        if isinstance(images, np.ndarray):
            if self.preprocess_array is not None:
                return self.preprocess_array(images)
            images = [Image.fromarray(a) for a in images]
        return torch.stack([self.preprocess(im) for im in images])


def _fashion_mnist_array_path(transform, cfg: RunConfig):
    """A uint8-array fast path equal to `transform`: Fashion-MNIST's normalisation in one pass for
    a run that recorded it (`data.normalization`) on arrays of its image size, the transform per
    image otherwise."""
    from lipkit.data import fashion_mnist

    size, native = cfg.model.vision.image_size, cfg.data.normalization == "fashion-mnist"

    def array_path(images: np.ndarray) -> torch.Tensor:
        if native and images.ndim == 3 and images.shape[1:] == (size, size):
            return fashion_mnist.normalize(images)
        return torch.stack([transform(Image.fromarray(a)) for a in images])

    return array_path


# Runs recorded every eval field, so the defaults of their day sit in their config.yaml as if
# chosen. Those values read as unset: a dataset given by path is then read whole (CLIP_benchmark's
# protocol) and a built-in one with the limits it always had; `--set` can still choose them.
_OLD_DEFAULTS = {"retrieval_limit": (1000, None), "linear_train_limit": (10000, None),
                 "probe_train_fraction": (0.5, 0.0)}


def _recorded_eval(cfg: RunConfig) -> RunConfig:
    """A run's recorded config with the old eval defaults read as unset."""
    changes = {k: unset for k, (old, unset) in _OLD_DEFAULTS.items() if getattr(cfg.eval, k) == old}
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **changes)) if changes else cfg


def _with_eval_overrides(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """`cfg` with `--set eval.key=value` applied; any other key is refused."""
    from lipkit.config import from_dict, to_dict
    from lipkit.config_layers import apply_overrides

    bad = [o for o in overrides if not o.strip().startswith("eval.")]
    if bad:
        raise EvalError(f"--set {bad[0]}: lipkit eval only overrides eval.* settings")
    return from_dict(apply_overrides(to_dict(cfg), list(overrides))) if overrides else cfg


def from_lipkit_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> EvalModel:
    from lipkit.runs.loading import load_directory

    run_dir = Path(run_dir)
    loaded = load_directory(run_dir)  # what lipkit.load returns, plus the config
    cfg = _with_eval_overrides(_recorded_eval(loaded.config), overrides)
    return from_lipkit_model(loaded.model, loaded.tokenizer, loaded.preprocess, cfg, name=run_dir.name,
                             pretrained=str(run_dir))


def from_lipkit_model(model, tokenize: Callable[[list[str]], torch.Tensor],
                      preprocess: Callable[[Image.Image], torch.Tensor], cfg: RunConfig, *, name: str,
                      pretrained: str) -> EvalModel:
    """A lipkit model (in memory: a run's, or the one evaluated during training) with the hooks
    its towers and heads give, evaluated with `cfg.eval`."""
    # LIPModel.encode_image is projection(vision(x)), or the prototype head without CLIP heads
    # (tests/test_eval_runner.py checks that these hooks reproduce it).
    head = model.image_projection if "clip" in model.heads else model.image_prototypes
    em = EvalModel(model, tokenize, preprocess, name=name, pretrained=pretrained,
                   eval=cfg.eval, run=cfg, image_features=model.image_trunk,
                   text_features=model.text_trunk, image_head=head, seed=cfg.train.seed,
                   preprocess_array=_fashion_mnist_array_path(preprocess, cfg))
    if "prototypes" in model.heads:
        em.image_prototype_head = model.image_prototypes
        em.text_prototypes = lambda t: model.text_prototypes(model.text_trunk(t))
        em.num_prototypes = cfg.model.prototypes.num_prototypes
        em.prototype_temperature = cfg.objective.nclip.temperature
    return em


def from_open_clip(model, preprocess, tokenize, *, name: str, pretrained: str = "",
                   eval_cfg: EvalConfig | None = None) -> EvalModel:
    """Wrap an open_clip-style model: `preprocess` takes one PIL image (RGB), `tokenize` a list
    of strings. Only `encode_image` / `encode_text` are used."""
    for method in ("encode_image", "encode_text"):
        if not callable(getattr(model, method, None)):
            raise EvalError(f"{name}: the model has no {method}() method")

    def rgb_preprocess(im: Image.Image) -> torch.Tensor:
        return preprocess(im.convert("RGB"))

    return EvalModel(model, tokenize, rgb_preprocess, name=name, pretrained=pretrained,
                     eval=eval_cfg or EvalConfig())


def load_open_clip(spec: str, eval_cfg: EvalConfig | None = None) -> EvalModel:
    """`open_clip:ARCH[:PRETRAINED]`, or `open_clip:local-dir:FOLDER` (a folder open_clip reads
    whole, such as `lipkit export --to open_clip` writes), through open_clip's own factory
    (imported lazily, through lipkit's gateway)."""
    rest = spec[len(OPEN_CLIP_PREFIX):]
    if rest.startswith(LOCAL_DIR):
        folder = Path(rest[len(LOCAL_DIR):])
        if not (folder / "open_clip_config.json").is_file():
            raise EvalError(f"{spec}: {folder} is not an open_clip folder (no open_clip_config.json)")
        arch, pretrained = rest, ""
    else:
        arch, _, pretrained = rest.partition(":")
    if not arch:
        raise EvalError(f"{spec}: expected open_clip:ARCH, open_clip:ARCH:PRETRAINED or open_clip:local-dir:FOLDER")
    from lipkit.interop.gateway import OpenClipUnavailable, import_open_clip

    try:
        open_clip = import_open_clip()
    except OpenClipUnavailable as e:
        raise EvalError(f"{spec}: {e}") from None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained or None)
        tokenizer = open_clip.get_tokenizer(arch)
    except (RuntimeError, OSError, ValueError) as e:  # an unknown architecture or weights tag, unreadable files
        raise EvalError(f"{spec}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    model.eval()
    return from_open_clip(model, preprocess, tokenizer, name=arch, pretrained=pretrained,
                          eval_cfg=eval_cfg)


def load_model_spec(spec: str, overrides: Sequence[str] = ()) -> EvalModel:
    """A run directory or `open_clip:ARCH[:PRETRAINED]`; `overrides` are `eval.key=value`."""
    if spec.startswith(OPEN_CLIP_PREFIX):
        return load_open_clip(spec, _with_eval_overrides(RunConfig(), overrides).eval)
    return from_lipkit_run(spec, overrides)
