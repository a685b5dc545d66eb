"""Typed run configuration: dataclasses for model, objective, data, train and eval, read from a
preset or YAML file with `--set a.b=c` overrides (merged as mappings in lipkit.config_layers) and
written back as YAML. Every unknown key or wrong type is a one-line `ConfigError`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lipkit.config_layers import apply_overrides, load_layers, with_recipe
from lipkit.model_config import (  # noqa: F401  (part of this module's API)
    LORA_HEADS,
    VisionConfig,
    TextConfig,
    PrototypeHeadConfig,
    SslHeadConfig,
    LoraTargetsConfig,
    LoraConfig,
    ModelConfig,
)
from lipkit.objective_config import (  # noqa: F401  (part of this module's API)
    ClipObjectiveConfig,
    ClipRegObjectiveConfig,
    CyClipObjectiveConfig,
    NClipObjectiveConfig,
    ObjectiveConfig,
    SigLipObjectiveConfig,
    SlipObjectiveConfig,
    SquareObjectiveConfig,
    XClipObjectiveConfig,
)
from lipkit.typed_config import ConfigError, from_mapping, to_dict  # noqa: F401  (part of this module's API)
from lipkit.yaml_loader import dump_yaml

# --------------------------------------------------------------------------- data
@dataclass
class StrongAugmentConfig:
    """SimCLR's / SLIP's image augmentation (lipkit.data.augment), for the extra image views."""

    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random resized crop area share
    flip: float = 0.5  # probability of a horizontal flip
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])  # Gaussian blur radius range, pixels at 224 px


@dataclass
class TextAugmentConfig:
    """EDA (Wei & Zou 2019) on training captions (lipkit.data.text_augment): each operation is
    applied to a caption with its probability; `rate` is the share of words it touches (at
    least one). Synonyms come from WordNet (Debian's wordnet-base) when it is installed."""

    enabled: bool = False
    synonym_p: float = 0.4  # replace words by a WordNet synonym
    insert_p: float = 0.0  # insert a synonym of a word at a random place (EDA's random insertion)
    swap_p: float = 0.4  # swap two words
    delete_p: float = 0.2  # delete words (one word is always kept)
    rate: float = 0.1


@dataclass
class SourceConfig:
    """One source of image-caption pairs (docs/guides/data.md)."""

    # a built-in name (fashion-mnist, digits, tuxpaint, openclipart), a folder of images with
    # .txt captions, a .csv/.tsv/.jsonl file, or a WebDataset shard pattern (x-{000..009}.tar)
    path: str = ""
    format: Literal["auto", "builtin", "folder", "csv", "tsv", "jsonl", "webdataset"] = "auto"
    weight: float = 1.0  # share of the mixed stream: weight / sum of weights
    # built-in sources: tuxpaint all|train|holdout (train = all but the 200-item hold-out) or
    # fit|validation (train split again: 150 stamps held back for choosing settings)
    split: str = ""
    image_column: str = "image"  # CSV/TSV column or JSONL key holding the image path
    caption_column: str = "caption"  # ... the caption (JSONL and WebDataset .json: a string or a list)
    label_column: str = ""  # ... an integer label (optional)
    limit: int = 0  # use only the first N pairs (0 = all; map-style sources)


@dataclass
class DataConfig:
    # One source (see SourceConfig.path), or several in `sources`, which then replaces `source`.
    source: str = "fashion-mnist"
    sources: list[SourceConfig] = field(default_factory=list)
    # Training captions are drawn from these templates; evaluation uses a disjoint set.
    caption_templates: list[str] = field(
        default_factory=lambda: [
            "a photo of a {}.",
            "a picture of a {}.",
            "an image of a {}.",
            "a {} in grayscale.",
            "a small photo of the {}.",
            "this is a {}.",
        ]
    )
    train_limit: int = 0  # use only the first N training images (0 = all)
    # loosely paired data: this share of training pairs (drawn anew each epoch, by seed, epoch and
    # index) gets a caption of another class; Fashion-MNIST and labelled map-style sources
    caption_noise: float = 0.0
    num_workers: int = 0
    # images of pair sources: resize + crop to model.vision.image_size, then (x - mean) / std
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    # How the training images were normalised, recorded by the trainer (a value given is replaced)
    # and repeated by evaluation and lipkit.load: "mean-std" is image_mean / image_std,
    # "fashion-mnist" the data set's own statistics on the native tensors it gives a 1x28x28 tower
    # (lipkit.data.builtins). A run recorded before this field: see from_dict.
    normalization: Literal["mean-std", "fashion-mnist"] = "mean-std"
    crop: Literal["center", "random"] = "center"  # random: random resized crop for training
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # area share of a random crop
    hflip: bool = False  # random horizontal flips in training
    # Views of each training image: view 1 is the image as above; views 2..N are drawn
    # independently, through the strong augmentation (view_augment: strong) or the same transform
    # (same). Objectives read them (objective.clip.views: all, SLIP). 0: what the objective needs
    # (1; SLIP: 3, its own layout), filled in by the trainer and recorded.
    image_views: int = 0
    view_augment: Literal["strong", "same"] = "strong"
    strong_augment: StrongAugmentConfig = field(default_factory=StrongAugmentConfig)
    text_augment: TextAugmentConfig = field(default_factory=TextAugmentConfig)
    max_bad_fraction: float = 0.01  # stop when more of the samples are unusable (each is logged once)
    max_image_pixels: int = 64_000_000  # larger images are refused before decoding
    shuffle_buffer: int = 1000  # WebDataset sample shuffle buffer (per worker)
    cache_features: bool = True  # both towers fully locked: compute tower features once, train heads on them


# --------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    steps: int = 470
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_clip_norm: float = 0.0  # 0 disables clipping
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    log_every_steps: int = 10
    save_every_steps: int = 0  # 0 saves only at the end
    progress: bool = True
    # ---- training at scale (docs/guides/scale.md)
    accum_steps: int = 1  # micro-batches per optimizer step; the objective still sees the whole batch
    save_every_minutes: float = 0.0  # also checkpoint every N minutes (0 = off)
    keep_checkpoints: int = 3  # checkpoint directories kept under RUN/checkpoints
    max_bad_steps: int = 5  # non-finite losses in a row that are skipped before the run stops
    precision: Literal["auto", "fp32", "bf16", "fp16", "fp64"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU; fp64 for parity checks
    compile: bool = False  # torch.compile the model
    strategy: Literal["ddp", "fsdp"] = "ddp"  # under torchrun; fsdp shards every block (FSDP2)
    channels_last: bool = True  # images and conv weights channels-last on CUDA
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)
    data_wait_warn_share: float = 0.2  # warn when waiting for data exceeds this share of step time
    # nCLIP collapse guard (lipkit.train.collapse_guard): after the warm-up, a batch mutual
    # information I/log min(N, K) under the threshold for `collapse_patience` logged steps in a row
    # warns once, or stops the run with stop_on_collapse
    collapse_threshold: float = 0.05
    collapse_patience: int = 3
    stop_on_collapse: bool = False
    # ---- evaluation during training (lipkit.train.in_training_eval; docs/guides/fine-tuning.md):
    # `lipkit eval`'s tasks on one dataset, trimmed by the eval.* limits, before the first step, every
    # N steps and/or minutes, and after the last; recorded in metrics.jsonl. 0 and 0: off
    eval_every_steps: int = field(default=0, metadata={"neutral_default": True})
    eval_every_minutes: float = field(default=0.0, metadata={"neutral_default": True})
    eval_tasks: list[str] = field(default_factory=list, metadata={"neutral_default": True})  # []: zeroshot when the data has classes, else retrieval
    eval_dataset: str = field(default="", metadata={"neutral_default": True})  # a path or built-in name, as `lipkit eval --dataset`; "": the run's held-back split
    # the evaluation whose metric (TASK/METRIC as metrics.jsonl names it, e.g. zeroshot/acc1) is best
    # keeps its weights in RUN/checkpoints/best ("": none kept)
    keep_best: str = field(default="", metadata={"neutral_default": True})
    keep_best_mode: Literal["max", "min"] = field(default="max", metadata={"neutral_default": True})


@dataclass
class EmergentConfig:
    """The `emergent` eval task (lipkit.eval.emergent): attention localisation, prototype gallery,
    neighbours."""
    masks: str = ""  # folder of foreground masks, one per test image ("": the images' alpha, or Tux Paint composites)
    attention_mass: float = 0.6  # a map keeps the patches holding this share of its mass (DINO)
    rollout: bool = False  # also score attention rollout
    prior_sigma: float = 0.25  # the centred Gaussian baseline's standard deviation, as a share of the side
    composites_per_image: int = 3  # tuxpaint: composites of each test stamp on clutter
    backgrounds: list[str] = field(default_factory=lambda: ["openclipart", "fashion-mnist", "noise"])
    overlays: int = 8  # images whose attention is drawn (the first of the set: the same in every run)
    gallery_prototypes: int = 12  # most used prototypes drawn with their top images
    gallery_top_k: int = 8  # images per prototype (and neighbours per query)
    neighbour_queries: int = 6  # test images whose nearest neighbours are drawn


@dataclass
class AdamWProbeConfig:
    """The linear probe trained as CLIP_benchmark's `linear_probe` trains it (eval.linear_solver:
    adamw); its defaults are CLIP_benchmark's (--fewshot_lr, --fewshot_epochs, --batch_size, and the
    weight decay it uses without a validation split)."""
    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    weight_decay: float = 0.0


@dataclass
class EvalConfig:
    # training images for the linear probe and the kNN bank (None: 10,000 of a built-in set, all of a set given by path)
    linear_train_limit: int | None = None
    batch_size: int = 1000
    # `lipkit eval` (src/lipkit/eval/registry.py names the tasks): which data they use and their settings.
    # A dataset is a built-in name (fashion-mnist, tuxpaint) or a path: class folders, a
    # CSV/TSV/JSONL table, WebDataset shards (docs/guides/evaluate.md). The *_limit
    # fields take the first N images of a built-in set, N spread evenly over a set given by path
    # (0: all); a set given by path is read whole unless a limit is set, as CLIP_benchmark reads it.
    dataset: str = "fashion-mnist"
    datasets: list[str] = field(default_factory=list)  # several, each evaluated; replaces `dataset`
    dataset_train: str = ""  # the probes' training images from this dataset instead
    shift: str = ""  # a dataset with the same classes: the OOD task's shifted set
    image_column: str = "image"  # table column (JSONL key) of the image path
    label_column: str = "label"  # ... of the label: a class name or an index (optional)
    caption_columns: list[str] = field(default_factory=lambda: ["caption"])  # ... of captions (optional)
    # A labelled set given by path with a test split only: 0 = the probes train on --dataset-train (else they
    # are skipped); in (0, 1) = this share of each class trains them and they score the rest (zero-shot and
    # retrieval still score the whole split)
    probe_train_fraction: float = 0.0
    num_workers: int = 2  # processes decoding image files
    test_limit: int = 0  # use only N test images (0 = all)
    # test: the data set's test split; validation: training data the run held back, for choosing
    # settings without touching the test split (fashion-mnist: the training images after
    # data.train_limit; tuxpaint: the 150 validation stamps of the training split)
    split: Literal["test", "validation"] = "test"
    prompts_path: str = ""  # JSON with "class_names" and "templates" ("" = the dataset's own)
    features: Literal["pre", "post"] = "pre"  # linear/kNN on pooled tower features or embeddings
    few_shot_k: int = 0  # linear probe on k training samples per class (0 = all)
    # lbfgs: logistic regression on standardised features, C chosen on a validation split; adamw:
    # CLIP_benchmark's probe (L2-normalised features, AdamW with a cosine schedule: eval.adamw)
    linear_solver: Literal["lbfgs", "adamw"] = "lbfgs"
    adamw: AdamWProbeConfig = field(default_factory=AdamWProbeConfig)
    knn_k: int = 20
    knn_temperature: float = 0.07
    # images in the retrieval gallery (None: 1,000 of a built-in set, all of a set given by path)
    retrieval_limit: int | None = None
    retrieval_captions_per_image: int = 0  # Fashion-MNIST prompts per image (0 = every template)
    ood_limit: int = 1000  # test images corrupted per (corruption, severity)
    ood_corruptions: list[str] = field(default_factory=lambda: ["gaussian_noise", "motion_blur", "fog", "contrast"])
    ood_severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    wordsim_path: str = ""  # word<TAB>word<TAB>score file ("" = WordSim-353 from the gensim wheel)
    chunk_size: int = 1024  # queries (and gallery items) per chunk in retrieval and kNN
    emergent: EmergentConfig = field(default_factory=EmergentConfig)


@dataclass
class RunConfig:
    # "strong": the strong training recipe layer (presets/recipes/strong.yaml: image views, strong
    # and text augmentation, label smoothing) lies under the run's own settings
    recipe: Literal["basic", "strong"] = "basic"
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- (de)serialisation
def from_dict(data: dict, recorded: bool = False) -> RunConfig:
    """`recorded`: `data` is a config a run wrote (see typed_config.from_mapping)."""
    cfg = from_mapping(RunConfig, data, recorded=recorded)
    if recorded and "normalization" not in (data.get("data") or {}):
        # A run from before data.normalization: lipkit evaluated one-channel towers with
        # Fashion-MNIST's statistics and every other tower with data.image_mean / image_std.
        cfg.data.normalization = "fashion-mnist" if cfg.model.vision.channels == 1 else "mean-std"
    return cfg


def load_config(name_or_path: str | None = None, overrides: list[str] = (), recorded: bool = False) -> RunConfig:
    """A preset or YAML file plus `--set` overrides. `recorded`: the file is a run's own
    config.yaml, whose missing keys mean what they meant when it was written."""
    data = load_layers(name_or_path) if name_or_path else {}
    return from_dict(with_recipe(apply_overrides(data, list(overrides), source=name_or_path or "")),
                     recorded=recorded)


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(dump_yaml(to_dict(cfg)), encoding="utf-8")
