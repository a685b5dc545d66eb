"""Evaluation: one module per task, each with the entry `lipkit eval` calls,

    evaluate(model, data, *, cache=None, **settings) -> list[TaskResult]

    from lipkit.eval import knn, load_model_spec, open_dataset, zeroshot
    model = load_model_spec("runs/clip")  # an EvalModel; from_open_clip wraps an open_clip model
    data = open_dataset("photos/", model.eval)  # EvalData: name, class names, templates, splits
    [result] = zeroshot.evaluate(model, data, batch_size=256)  # result.metrics["acc1"]
    [result] = knn.evaluate(model, data, knn_k=5)

Tasks (`registry.TASKS`): zeroshot, linear, ood, retrieval, knn, text, collapse, emergent. `model` bundles
anything with `encode_image` / `encode_text` (lipkit's or open_clip's) with its tokenizer,
preprocessing and the eval.* settings; `settings` change those for one call. A `TaskResult` is one
CLIP_benchmark record's dataset, task and metrics (plus curves and histograms for the report);
`results` writes records. A task that does not apply to the data (no labels, no captions, no
prototype heads) raises `TaskSkipped`. `cache` is a `Context`: it embeds each image set once and
fits the linear probe once, whichever tasks ask; `runner` (`lipkit eval`) passes one context to
every task on a dataset. Each module also has the task on features or logits you already have
(`linear.evaluate_features`, `knn.evaluate_features`, `retrieval.retrieval_ranks`,
`collapse.prototype_stats`, ...).

Datasets (`datasets.open_dataset`): a built-in name, or a path to labelled images (class folders, a
CSV/TSV/JSONL table, WebDataset shards in CLIP_benchmark's layout: `layouts`, `user_data`), read
in batches (`images`). The package face loads its modules on first use, so `lipkit --help` reads
the task names from `registry` without importing torch.
"""
from lipkit.faces import lazy_face

_HOMES = {  # name -> the module that defines it
    "Context": "context", "EvalData": "datasets", "EvalModel": "adapter", "Split": "datasets",
    "TaskResult": "results", "TaskSkipped": "errors", "classification_metrics": "metrics",
    "embed_images": "features", "embed_texts": "features", "eval_mode": "features",
    "format_table": "results", "from_open_clip": "adapter", "load_model_spec": "adapter",
    "open_dataset": "datasets", "read_results": "results", "record_row": "results",
    "result_record": "results", "write_results": "results", "zeroshot_classifier": "zeroshot",
    "TASKS": "registry",  # and each task's module (a name that is its own home):
    "zeroshot": "zeroshot", "linear": "linear", "ood": "ood", "retrieval": "retrieval", "knn": "knn",
    "text": "text", "collapse": "collapse", "emergent": "emergent",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
