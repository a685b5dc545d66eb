"""Typed run configuration: dataclasses for model, objective, data, train and eval, read from a
preset or YAML file with `--set a.b=c` overrides (merged as mappings in lipkit.config_layers) and
written back as YAML. Every unknown key or wrong type is a one-line `ConfigError`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from lipkit.config_layers import apply_overrides, load_layers
from lipkit.typed_config import check_choices
from lipkit.typed_config import ConfigError, from_mapping, to_dict  # noqa: F401  (part of this module's API)

# --------------------------------------------------------------------------- model
@dataclass
class VisionConfig:
    # vit: trained from scratch; efficientnet_lite0: ImageNet CNN (224 px, 3 channels, 1280-d
    # features; the ViT fields below do not apply to it)
    name: Literal["vit", "efficientnet_lite0"] = "vit"
    pretrained: bool = False  # load the tower's packaged weights (efficientnet_lite0)
    image_size: int = 28
    patch_size: int = 4
    channels: int = 1
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # FLIP: fraction of patch tokens dropped at random in training (the cls token is always kept);
    # the tower's compute falls about in proportion. 0 disables; evaluation always sees all patches.
    patch_dropout: float = 0.0
    # MLP activation: gelu (erf), or quick_gelu x * sigmoid(1.702 x) as OpenAI's CLIP (imported models)
    activation: Literal["gelu", "quick_gelu"] = "gelu"


@dataclass
class TextConfig:
    # transformer: trained from scratch with a BPE tokenizer trained on the captions; minilm:
    # all-MiniLM-L6-v2 (384-d, mean-pooled) with its own WordPiece tokenizer (only
    # context_length applies to it)
    name: Literal["transformer", "minilm"] = "transformer"
    pretrained: bool = False  # load the tower's packaged weights (minilm)
    vocab_size: int = 1000  # BPE target size; the run records the trained tokenizer's real size
    context_length: int = 32
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    causal: bool = True
    # eos: the last non-padding position; argmax: the position of the highest token id (OpenAI
    # CLIP's rule, for imported models whose vocabulary has a real token at the padding id 0)
    pooling: Literal["eos", "mean", "argmax"] = "eos"
    activation: Literal["gelu", "quick_gelu"] = "gelu"
    # The trained BPE gives <eos> the vocabulary's last id instead of id 2, as CLIP's end token:
    # Hugging Face CLIP reads eos_token_id 2 as its legacy argmax pooling, so exporting there needs
    # this. A run's ids live in its tokenizer.json; the field only shapes newly trained tokenizers.
    eos_last: bool = False


@dataclass
class PrototypeHeadConfig:
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    # K: of the order of the concepts the data can express, and at most the global batch (ME-MAX
    # can spread confident predictions over at most N prototypes of a batch of N)
    num_prototypes: int = 256
    # BatchNorm after the MLP's first layer, with the statistics of the global batch. It removes
    # the component every sample shares at initialisation, without which nCLIP alone collapses
    # to a constant output on real data (README "Objectives"). Runs recorded before this field
    # existed had none.
    batch_norm: bool = field(default=True, metadata={"recorded_default": False})


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 128
    init_logit_scale: float = 1 / 0.07
    learn_logit_scale: bool = True  # false fixes the scale at init_logit_scale (a fixed temperature)
    max_logit_scale: float = 100.0
    prototypes: PrototypeHeadConfig = field(default_factory=PrototypeHeadConfig)
    # LiT: freeze a tower (weights and norm statistics) except its last N blocks.
    lock_image: bool = False
    lock_image_unlocked_blocks: int = 0
    lock_text: bool = False
    lock_text_unlocked_blocks: int = 0
    # Trainable residual MLP blocks on each tower's pooled features, shared by every head. With
    # locked towers (LiT) they are the only shared trainable trunk, so CLIP and nCLIP heads can
    # interact through them while the tower features stay cached.
    adapter_layers: int = 0
    # Which heads to build: "clip" (linear projections) and/or "prototypes" (nCLIP heads).
    # Empty means "what the objective needs"; the trainer fills it in and the run records it.
    heads: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- objectives
@dataclass
class ClipObjectiveConfig:
    direction_reduction: Literal["mean", "sum"] = "mean"


@dataclass
class NClipObjectiveConfig:
    # Default: information maximisation (OBJECTIVES.md 2): unsharpened stop-gradient targets and
    # lambda_sharp = lambda_smooth, so the regularizers are minus the mutual information between
    # input and prototype, per modality.
    temperature: float = 0.1  # student temperature tau
    target_temperature: float = 0.1  # targets tau_t; below tau sharpens them (rewards a flat-tailed collapse);
    # unused by the sinkhorn balances, whose sharpness is sinkhorn_epsilon
    stopgrad_target: bool = True
    # targets and balancing: memax = softmax targets + ME-MAX; sinkhorn = equipartitioned targets;
    # sinkhorn_memax = both (MSN); center = centred softmax targets (DINO); none = softmax targets only
    balance: Literal["memax", "sinkhorn", "sinkhorn_memax", "center", "none"] = "memax"
    lambda_smooth: float = 1.0  # weight of the ME-MAX smoothness term (memax, sinkhorn_memax)
    lambda_sharp: float = 1.0  # weight of the sharpness (per-sample entropy) term
    sinkhorn_iterations: int = 3
    sinkhorn_epsilon: float = 0.05
    center_momentum: float = 0.9


@dataclass
class XClipObjectiveConfig:
    w_clip: float = 1.0
    w_nclip: float = 1.0


@dataclass
class ClipRegObjectiveConfig:
    form: Literal["sqdist", "neg_cos"] = "sqdist"
    lam: float = field(default=0.1, metadata={"key": "lambda"})
    scale_by_logit_scale: bool = True
    pairs: Literal["positive", "negative", "both"] = "positive"


@dataclass
class SigLipObjectiveConfig:
    init_scale: float = 10.0  # t, stored as log t (as in the SigLIP paper)
    init_bias: float = -10.0  # b
    learnable: bool = True  # false keeps t and b fixed at their initial values
    chunk_size: int = 1024  # local rows scored per chunk (recomputed in backward); 0 = all at once


@dataclass
class CyClipObjectiveConfig:
    lambda_inmodal: float = 0.25  # lambda_1 on (S_II - S_TT)^2
    lambda_crossmodal: float = 0.25  # lambda_2 on (S_IT - S_TI)^2
    # batch_sum: the mean over the N^2 entries times N, as CyCLIP's published code, for which its
    # lambda = 0.25 was tuned (with the plain mean the terms are ~1e-3 of the CLIP loss and do
    # nothing); mean: the literal mean of OBJECTIVES.md 5
    reduction: Literal["mean", "batch_sum"] = "batch_sum"


@dataclass
class SquareObjectiveConfig:
    negative_weight: float = 1.0  # weight of mean_{i!=j} s_ij^2 against mean_i (s_ii - 1)^2


@dataclass
class ObjectiveConfig:
    name: str = "clip"
    clip: ClipObjectiveConfig = field(default_factory=ClipObjectiveConfig)
    nclip: NClipObjectiveConfig = field(default_factory=NClipObjectiveConfig)
    xclip: XClipObjectiveConfig = field(default_factory=XClipObjectiveConfig)
    clip_reg: ClipRegObjectiveConfig = field(default_factory=ClipRegObjectiveConfig)
    siglip: SigLipObjectiveConfig = field(default_factory=SigLipObjectiveConfig)
    cyclip: CyClipObjectiveConfig = field(default_factory=CyClipObjectiveConfig)
    square: SquareObjectiveConfig = field(default_factory=SquareObjectiveConfig)

    def validate(self) -> None:
        """One-line ConfigErrors for what parsing checks (the choices, again for a config built or
        changed in code) and for what it cannot (ranges); `build_objective` calls this."""
        check_choices(self, "objective")
        if not self.siglip.init_scale > 0:
            raise ConfigError(f"objective.siglip.init_scale: must be > 0, got {self.siglip.init_scale}")
        if self.siglip.chunk_size < 0:
            raise ConfigError(f"objective.siglip.chunk_size: must be >= 0 (0 = no chunking), "
                              f"got {self.siglip.chunk_size}")
        n = self.nclip
        for key, ok, rule in (("temperature", n.temperature > 0, "> 0"),
                              ("target_temperature", n.target_temperature > 0, "> 0"),
                              ("sinkhorn_epsilon", n.sinkhorn_epsilon > 0, "> 0"),
                              ("sinkhorn_iterations", n.sinkhorn_iterations >= 1, ">= 1"),
                              ("center_momentum", 0 <= n.center_momentum < 1, "in [0, 1)"),
                              ("lambda_smooth", n.lambda_smooth >= 0, ">= 0"),
                              ("lambda_sharp", n.lambda_sharp >= 0, ">= 0")):
            if not ok:  # NaN fails every rule too
                raise ConfigError(f"objective.nclip.{key}: must be {rule}, got {getattr(n, key)}")


# --------------------------------------------------------------------------- data
@dataclass
class SourceConfig:
    """One source of image-caption pairs (README "Your own data")."""

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
    # ---- training at scale (README "Training at scale")
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


@dataclass
class EvalConfig:
    linear_train_limit: int = 10000  # training images for the linear probe and the kNN bank
    batch_size: int = 1000
    # `lipkit eval` (src/lipkit/eval/registry.py names the tasks): which data they use and their settings.
    # A dataset is a built-in name (fashion-mnist, tuxpaint) or a path: class folders, a
    # CSV/TSV/JSONL table, WebDataset shards (README "Evaluate on your own data"). The *_limit
    # fields take the first N images of a built-in set, N spread evenly over a set given by path.
    dataset: str = "fashion-mnist"
    datasets: list[str] = field(default_factory=list)  # several, each evaluated; replaces `dataset`
    dataset_train: str = ""  # the probes' training images from this dataset instead
    shift: str = ""  # a dataset with the same classes: the OOD task's shifted set
    image_column: str = "image"  # table column (JSONL key) of the image path
    label_column: str = "label"  # ... of the label: a class name or an index (optional)
    caption_columns: list[str] = field(default_factory=lambda: ["caption"])  # ... of captions (optional)
    probe_train_fraction: float = 0.5  # one labelled split: this share of each class trains the probes
    num_workers: int = 2  # processes decoding image files
    test_limit: int = 0  # use only N test images (0 = all)
    # test: the data set's test split; validation: training data the run held back, for choosing
    # settings without touching the test split (fashion-mnist: the training images after
    # data.train_limit; tuxpaint: the 150 validation stamps of the training split)
    split: Literal["test", "validation"] = "test"
    prompts_path: str = ""  # JSON with "class_names" and "templates" ("" = the dataset's own)
    features: Literal["pre", "post"] = "pre"  # linear/kNN on pooled tower features or embeddings
    few_shot_k: int = 0  # linear probe on k training samples per class (0 = all)
    knn_k: int = 20
    knn_temperature: float = 0.07
    retrieval_limit: int = 1000  # images in the retrieval gallery (0 = all test images)
    retrieval_captions_per_image: int = 0  # Fashion-MNIST prompts per image (0 = every template)
    ood_limit: int = 1000  # test images corrupted per (corruption, severity)
    ood_corruptions: list[str] = field(default_factory=lambda: ["gaussian_noise", "motion_blur", "fog", "contrast"])
    ood_severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    wordsim_path: str = ""  # word<TAB>word<TAB>score file ("" = WordSim-353 from the gensim wheel)
    chunk_size: int = 1024  # queries (and gallery items) per chunk in retrieval and kNN


@dataclass
class RunConfig:
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
    return from_dict(apply_overrides(data, list(overrides)), recorded=recorded)


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
