"""The `lipkit eval` tasks by name: the records each writes, their headline metrics, the images it reads.

A task's name is also its module in `lipkit.eval`, whose `evaluate(model, data, *, cache=None,
**settings)` runs it (`Task.evaluate` imports it on first use). Record task names follow
CLIP_benchmark. This module imports neither torch nor numpy, so `lipkit --help` lists the tasks
from here.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .errors import EvalError

# The `task` of the records the tasks write.
ZEROSHOT_CLASSIFICATION = "zeroshot_classification"
LINEAR_PROBE = "linear_probe"
OOD_CLASSIFICATION = "ood_classification"
ZEROSHOT_RETRIEVAL = "zeroshot_retrieval"
KNN_CLASSIFICATION = "knn_classification"
WORD_SIMILARITY = "word_similarity"
CAPTION_PROBE = "caption_probe"
PROTOTYPE_COLLAPSE = "prototype_collapse"
ATTENTION_LOCALIZATION = "attention_localization"
PROTOTYPE_GALLERY = "prototype_gallery"
NEAREST_NEIGHBOURS = "nearest_neighbours"


@dataclass(frozen=True)
class Task:
    name: str  # the `--tasks` name, and the module of lipkit.eval that runs it
    headline: Mapping[str, tuple[str, ...]]  # record task -> the metrics the printed table shows
    image_splits: tuple[str, ...]  # the data's image splits it reads (embedded before any task runs)
    by_default: bool = True  # run by `lipkit eval` without --tasks (else only when named)

    @property
    def evaluate(self) -> Callable:
        """`lipkit.eval.<name>.evaluate`."""
        return importlib.import_module(f"{__package__}.{self.name}").evaluate


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("zeroshot", {ZEROSHOT_CLASSIFICATION: ("acc1", "acc5", "mean_per_class_recall")}, ("test",)),
    Task("linear", {LINEAR_PROBE: ("acc1", "acc5", "mean_per_class_recall", "best_C")}, ("train", "test")),
    Task("ood", {OOD_CLASSIFICATION: ("zeroshot_clean_acc1", "zeroshot_shifted_acc1", "zeroshot_drop",
                                      "linear_clean_acc1", "linear_shifted_acc1", "linear_drop")},
         ("train", "test", "shift")),
    Task("retrieval", {ZEROSHOT_RETRIEVAL: ("text_retrieval_recall@1", "text_retrieval_recall@5",
                                            "image_retrieval_recall@1", "image_retrieval_recall@5",
                                            "text_retrieval_median_rank", "image_retrieval_median_rank")},
         ("test",)),
    Task("knn", {KNN_CLASSIFICATION: ("acc1", "acc5", "mean_per_class_recall")}, ("train", "test")),
    Task("text", {WORD_SIMILARITY: ("wordsim_spearman",), CAPTION_PROBE: ("caption_probe_acc1",)},
         ("train", "test")),
    Task("collapse", {PROTOTYPE_COLLAPSE: ("image_mutual_information_ratio", "text_mutual_information_ratio",
                                           "image_label_nmi", "text_label_nmi", "argmax_agreement",
                                           "image_distinct_prototypes")}, ("test",)),
    Task("emergent", {ATTENTION_LOCALIZATION: ("jaccard_mean_map", "jaccard_best_head", "jaccard_rollout",
                                               "jaccard_gaussian_prior", "jaccard_uniform"),
                      PROTOTYPE_GALLERY: ("image_purity", "text_purity", "cross_modal_agreement",
                                          "prototypes_used"),
                      NEAREST_NEIGHBOURS: ("image_neighbour_precision", "caption_neighbour_precision")},
         ("test",), by_default=False),
)}
DEFAULT_TASKS = [t.name for t in TASKS.values() if t.by_default]

# Short names of metrics in the printed table.
SHORT_LABELS = {
    "mean_per_class_recall": "mpcr", "text_retrieval_recall@1": "i→t R@1",
    "text_retrieval_recall@5": "i→t R@5", "image_retrieval_recall@1": "t→i R@1",
    "image_retrieval_recall@5": "t→i R@5", "text_retrieval_median_rank": "i→t medR",
    "image_retrieval_median_rank": "t→i medR", "zeroshot_clean_acc1": "zs clean",
    "zeroshot_shifted_acc1": "zs shifted", "zeroshot_drop": "zs drop",
    "linear_clean_acc1": "lin clean", "linear_shifted_acc1": "lin shifted", "linear_drop": "lin drop",
    "wordsim_spearman": "Spearman ρ", "caption_probe_acc1": "acc1",
    "image_usage_entropy_ratio": "img usage H/logK", "text_usage_entropy_ratio": "txt usage H/logK",
    "image_sample_entropy_ratio": "img per-sample H/logK", "argmax_agreement": "img/txt agree",
    "image_distinct_prototypes": "prototypes used", "image_mutual_information_ratio": "img MI ratio",
    "text_mutual_information_ratio": "txt MI ratio", "image_label_nmi": "img NMI", "text_label_nmi": "txt NMI",
    "jaccard_mean_map": "J heads' mean", "jaccard_best_head": "J best head", "jaccard_rollout": "J rollout",
    "jaccard_gaussian_prior": "J centred prior", "jaccard_uniform": "J uniform", "image_purity": "img purity",
    "text_purity": "txt purity", "cross_modal_agreement": "img/txt agree", "prototypes_used": "prototypes used",
    "image_neighbour_precision": "img→img P@k", "caption_neighbour_precision": "txt→img P@k",
}


def headline(record_task: str) -> tuple[str, ...] | None:
    """The metrics the printed table shows for records of `record_task` (None: not a lipkit task)."""
    return next((t.headline[record_task] for t in TASKS.values() if record_task in t.headline), None)


def task_of_record(record_task: str) -> str:
    """The task that writes records of `record_task` (the name itself when no task does)."""
    return next((t.name for t in TASKS.values() if record_task in t.headline), record_task)


def parse_tasks(text: str | Sequence[str]) -> list[str]:
    """Task names from "a,b" or a list, each once, in the order given; an EvalError for an unknown one."""
    tasks = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise EvalError(f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; "
                        f"available: {', '.join(TASKS)}")
    return list(dict.fromkeys(tasks))
