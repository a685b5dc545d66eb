"""Data: image–caption pairs from any common layout, built-in sources, transforms, robustness.

    from lipkit.data import open_pairs, ImageTransform
    pairs = open_pairs("my_pairs.csv", ImageTransform(224))      # or a folder, .jsonl, shards, a mix
    pairs[0]  # {"image": FloatTensor[3, 224, 224], "caption": str, "index": 0, "skipped": ""}

Modules: `pairs` (map-style datasets, and the replacement of bad samples), `formats` (folder /
CSV / JSONL readers), `shards` (WebDataset; `shard_index` and `tar_headers` index a shard for evaluation), `stream` (rank × worker splitting, mixing streams),
`mix` (weighted map-style mixes), `sources` (`open_pairs`, the run's dataset), `builtins` (the
table of built-in sources: fetch, pairs, evaluation splits, licence), `transforms`, `augment` and `text_augment` (views and caption augmentation), `images` (safe
decoding), `health` (bad-sample accounting), `feature_cache` (frozen towers), `tuxpaint`,
`openclipart`, `fashion_mnist`, `debian`, `svg`, `manifest`, `cache`, `convert`, `composites` (cut-outs
on cluttered backgrounds with known masks).

Nothing here imports models, run directories or loading (tests/test_layering.py). The names below
are imported when first used, so `lipkit.data.builtins` (and the command line's --help) does not
load torch.
"""
from lipkit.faces import lazy_face

_HOMES = {  # public name -> the module that defines it
    "ArrayPairs": "pairs", "FilePairs": "pairs", "PairDataset": "pairs", "PairRecord": "pairs",
    "BUILTINS": "sources", "build_pairs": "sources", "build_train_dataset": "sources", "open_pairs": "sources",
    "transform_from_config": "sources",
    "BadSampleError": "images", "open_image": "images",
    "DataSourceError": "cache", "cache_dir": "cache",
    "FashionMNISTPairs": "fashion_mnist", "Prompts": "fashion_mnist", "fashion_mnist_prompts": "fashion_mnist",
    "load_fashion_mnist": "fashion_mnist",
    "ImageTransform": "transforms",
    "MixedPairs": "mix",
    "SkipTracker": "health", "TooManyBadSamplesError": "health", "TrackedBatches": "health",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
