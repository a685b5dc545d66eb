"""The headline numbers an experiment summarises, each read from one CLIP_benchmark record.

A metric names (record task, dataset suffix, metric key): the suffix picks among a task's records
(e.g. "-c" is the corrupted copy of the test set in ood_classification, "-style" the cartoon
shift). Every metric here is higher-is-better, which is what the claims assume. A dataset whose
evaluation has no such record (no style split, no prototype heads) simply lacks the metric.
"""
from __future__ import annotations

from dataclasses import dataclass

from lipkit.eval.registry import (
    ATTENTION_LOCALIZATION,
    CAPTION_PROBE,
    KNN_CLASSIFICATION,
    LINEAR_PROBE,
    NEAREST_NEIGHBOURS,
    OOD_CLASSIFICATION,
    PROTOTYPE_COLLAPSE,
    PROTOTYPE_GALLERY,
    WORD_SIMILARITY,
    ZEROSHOT_CLASSIFICATION,
    ZEROSHOT_RETRIEVAL,
)


@dataclass(frozen=True)
class Metric:
    task: str  # the record's task (lipkit.eval.registry)
    key: str
    label: str
    dataset_suffix: str = ""
    any_dataset: bool = False  # word similarity is scored on WordSim-353, whatever the data
    complement: bool = False  # report 1 - value (so that higher is better)


METRICS: dict[str, Metric] = {
    "zeroshot": Metric(ZEROSHOT_CLASSIFICATION, "acc1", "zero-shot top-1"),
    "linear": Metric(LINEAR_PROBE, "acc1", "linear probe top-1"),
    "knn": Metric(KNN_CLASSIFICATION, "acc1", "kNN top-1"),
    "retrieval_i2t": Metric(ZEROSHOT_RETRIEVAL, "text_retrieval_recall@1", "image→text R@1"),
    "retrieval_t2i": Metric(ZEROSHOT_RETRIEVAL, "image_retrieval_recall@1", "text→image R@1"),
    "ood_zeroshot": Metric(OOD_CLASSIFICATION, "zeroshot_shifted_acc1", "corrupted zero-shot top-1", "-c"),
    "ood_linear": Metric(OOD_CLASSIFICATION, "linear_shifted_acc1", "corrupted linear top-1", "-c"),
    "style_zeroshot": Metric(OOD_CLASSIFICATION, "zeroshot_shifted_acc1", "cartoon zero-shot top-1", "-style"),
    "caption_probe": Metric(CAPTION_PROBE, "caption_probe_acc1", "caption probe top-1"),
    "wordsim": Metric(WORD_SIMILARITY, "wordsim_spearman", "WordSim-353 Spearman ρ", any_dataset=True),
    # prototype collapse: mutual information between input and prototype over log min(K, C) (0 for
    # either collapse), NMI between argmax prototype and class, prototypes used
    "image_mi": Metric(PROTOTYPE_COLLAPSE, "image_mutual_information_ratio", "image prototype MI I/log C"),
    "text_mi": Metric(PROTOTYPE_COLLAPSE, "text_mutual_information_ratio", "text prototype MI I/log C"),
    "image_nmi": Metric(PROTOTYPE_COLLAPSE, "image_label_nmi", "image prototype–class NMI"),
    "text_nmi": Metric(PROTOTYPE_COLLAPSE, "text_label_nmi", "text prototype–class NMI"),
    "prototypes_used": Metric(PROTOTYPE_COLLAPSE, "image_distinct_prototypes", "image prototypes used (argmax)"),
    "agreement": Metric(PROTOTYPE_COLLAPSE, "argmax_agreement", "image/text argmax agreement"),
    # emergent properties (lipkit.eval.emergent): the class token's attention against the object's
    # mask (Jaccard), the trivial baselines (the same numbers for every run on the same images),
    # the prototypes' purity, and whether image neighbours share a class
    "attention_jaccard": Metric(ATTENTION_LOCALIZATION, "jaccard_mean_map", "attention Jaccard, heads' mean"),
    "attention_best_head": Metric(ATTENTION_LOCALIZATION, "jaccard_best_head", "attention Jaccard, best head"),
    "attention_gain": Metric(ATTENTION_LOCALIZATION, "jaccard_gain", "attention Jaccard over the better baseline"),
    "jaccard_prior": Metric(ATTENTION_LOCALIZATION, "jaccard_gaussian_prior", "centred Gaussian Jaccard (baseline)"),
    "jaccard_uniform": Metric(ATTENTION_LOCALIZATION, "jaccard_uniform", "uniform map Jaccard (baseline)"),
    "image_purity": Metric(PROTOTYPE_GALLERY, "image_purity", "image prototype purity"),
    "text_purity": Metric(PROTOTYPE_GALLERY, "text_purity", "caption prototype purity"),
    "neighbour_precision": Metric(NEAREST_NEIGHBOURS, "image_neighbour_precision", "image neighbours in the class"),
}

# The page's two tables per dataset.
TABLE_GROUPS = (
    ("transfer and representation", ("zeroshot", "linear", "knn", "retrieval_i2t", "retrieval_t2i",
                                     "ood_zeroshot", "ood_linear", "style_zeroshot")),
    ("text and prototypes", ("caption_probe", "wordsim", "image_mi", "text_mi", "image_nmi", "text_nmi",
                             "prototypes_used", "agreement")),
    ("emergent properties", ("attention_jaccard", "attention_best_head", "attention_gain", "jaccard_prior",
                             "jaccard_uniform", "image_purity", "text_purity", "neighbour_precision")),
)


def extract(records: list[dict]) -> dict[str, float]:
    """metric name -> value for every metric the records carry."""
    out = {}
    for name, m in METRICS.items():
        for r in records:
            if r["task"] != m.task or m.key not in r["metrics"]:
                continue
            suffix_ok = r["dataset"].endswith(m.dataset_suffix) if m.dataset_suffix else \
                not r["dataset"].endswith(("-c", "-style"))
            if m.any_dataset or suffix_ok:
                value = float(r["metrics"][m.key])
                out[name] = 1.0 - value if m.complement else value
                break
    return out
