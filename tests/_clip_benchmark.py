"""CLIP_benchmark 1.6.2 (LAION-AI/CLIP_benchmark) beside `lipkit eval`, on the same open_clip model
and the same data, in .venv-peer: datasets written by CLIP_benchmark's own writer
(`clip_benchmark.webdataset_builder`), its three tasks run as its command line runs them for a
`wds/` dataset, and `lipkit eval` on the same folders. Shared by
tests/test_clip_benchmark_agreement.py (the numbers) and benchmarks/clip_benchmark_speed.py (the
time).

CLIP_benchmark's `run()` is followed call for call (load_clip, build_dataset, a DataLoader over
`dataset.batched(batch_size)`, the task's `evaluate` with amp off, as `--no_amp` gives) rather than
called: `clip_benchmark.cli` imports its captioning metric, whose pycocoevalcap (104 MB of Java
jars) nothing here uses. Two things are changed, only to run it here, never its arithmetic:
- `accuracy()` calls float() on a one-element array, which numpy 2 refuses: `patched_accuracy`,
  the same function with `.item()`, replaces it (in the two modules that bound it);
- the linear probe asserts a CUDA device and moves tensors there, which CPU-only torch cannot:
  `cpu_for_cuda()` keeps `.cuda()` and `.to("cuda")` on the CPU while it runs.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

from lipkit.interop.gateway import import_open_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import_open_clip()  # torchvision made importable (clip_benchmark imports it) before clip_benchmark

from clip_benchmark.datasets.builder import build_dataset, get_dataset_collate_fn
from clip_benchmark.metrics import linear_probe, zeroshot_classification, zeroshot_retrieval
from clip_benchmark.models import load_clip
from clip_benchmark.webdataset_builder import PIL_to_bytes, convert_dataset, convert_retrieval_dataset

RECALL_K = [1, 5, 10]
LR, EPOCHS, SEED = 0.1, 10, 0  # CLIP_benchmark's linear-probe defaults (--fewshot_lr, --fewshot_epochs, --seed)


def patched_accuracy(output, target, topk=(1,)):
    """CLIP_benchmark 1.6.2's `accuracy`, with `.item()` where it called float() on an array."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [float(correct[:k].reshape(-1).float().sum(0, keepdim=True).cpu().numpy().item()) / n for k in topk]


zeroshot_classification.accuracy = patched_accuracy
linear_probe.accuracy = patched_accuracy


@contextlib.contextmanager
def cpu_for_cuda():
    """`.cuda()` and `.to("cuda")` leave tensors and modules on the CPU (CLIP_benchmark's linear
    probe insists on CUDA; this torch has none)."""
    to = torch.Tensor.to

    def cpu_to(self, *args, **kwargs):
        args = tuple("cpu" if str(a).startswith("cuda") else a for a in args)
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return to(self, *args, **kwargs)

    with mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self), \
            mock.patch.object(torch.nn.Module, "cuda", lambda self, *a, **k: self), \
            mock.patch.object(torch.Tensor, "to", cpu_to):
        yield


class _Labelled(list):
    """(image, label) pairs with the `classes` and `templates` convert_dataset writes beside them."""
    classes: list[str]
    templates: list[str]


def write_classification(folder: Path, splits: dict[str, list], classes: list[str], templates: list[str],
                         shard_size: int = 10_000) -> Path:
    """CLIP_benchmark's layout, written by its own `convert_dataset` (lossless WebP): folder/{split}/
    0.tar ... + nshards.txt, classnames.txt, zeroshot_classification_templates.txt. (Its loader
    gives each decoding worker whole shards: a set read by n workers needs n shards or more.)"""
    for split, pairs in splits.items():
        data = _Labelled(pairs)
        data.classes, data.templates = classes, templates
        with contextlib.redirect_stdout(io.StringIO()):
            convert_dataset(data, split, str(folder), transform=PIL_to_bytes("webp"), max_count=shard_size,
                            verbose=False)
    return folder


def write_retrieval(folder: Path, pairs: list, shard_size: int = 10_000) -> Path:
    """(image, [captions]) pairs in CLIP_benchmark's retrieval layout, by `convert_retrieval_dataset`."""
    with contextlib.redirect_stdout(io.StringIO()):
        convert_retrieval_dataset(pairs, "test", str(folder), transform=PIL_to_bytes("webp"), max_count=shard_size,
                                  verbose=False)
    return folder


@dataclass
class ClipBenchmark:
    """An open_clip model folder as CLIP_benchmark loads it, and its tasks on `wds/` datasets."""
    model_folder: Path
    batch_size: int = 64
    num_workers: int = 0

    def __post_init__(self):
        self.model, self.transform, self.tokenizer = load_clip(
            model_type="open_clip", model_name=f"local-dir:{self.model_folder}", pretrained="",
            cache_dir=None, device="cpu")
        self.model.eval()

    def _dataset(self, folder: Path, split: str, task: str):
        return build_dataset(dataset_name=f"wds/{folder.name}", root=str(folder), transform=self.transform,
                             split=split, annotation_file="", download=True, language="en", task=task,
                             custom_template_file=None, custom_classname_file=None, wds_cache_dir=None)

    def _loader(self, dataset):
        return torch.utils.data.DataLoader(dataset.batched(self.batch_size), batch_size=None, shuffle=False,
                                           num_workers=self.num_workers)

    def zeroshot_classification(self, folder: Path) -> dict:
        dataset = self._dataset(folder, "test", "zeroshot_classification")
        return zeroshot_classification.evaluate(self.model, self._loader(dataset), self.tokenizer, dataset.classes,
                                                dataset.templates, device="cpu", amp=False, verbose=False)

    def zeroshot_retrieval(self, folder: Path) -> dict:
        dataset = self._dataset(folder, "test", "zeroshot_retrieval")
        return zeroshot_retrieval.evaluate(self.model, self._loader(dataset), self.tokenizer,
                                           recall_k_list=RECALL_K, device="cpu", amp=False)

    def linear_probe(self, folder: Path, feature_root: Path) -> dict:
        torch.manual_seed(SEED)  # as its run() does first
        test = self._dataset(folder, "test", "linear_probe")
        train = self._dataset(folder, "train", "linear_probe")
        train_loader = torch.utils.data.DataLoader(
            train, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
            collate_fn=get_dataset_collate_fn(f"wds/{folder.name}"), pin_memory=True)
        with cpu_for_cuda():
            return linear_probe.evaluate(self.model, train_loader, self._loader(test), -1, self.batch_size,
                                         self.num_workers, LR, EPOCHS, folder.name, SEED, str(feature_root),
                                         val_dataloader=None, device="cuda", normalize=True, amp=False,
                                         verbose=False)


def lipkit_eval(model_folder: Path, datasets: list[Path], tasks: str, out: Path, batch_size: int = 64,
                settings: tuple[str, ...] = ()) -> list[dict]:
    """`lipkit eval open_clip:local-dir:MODEL --dataset ... --tasks ... --out OUT --set ...`: its records."""
    from lipkit.cli import main

    args = ["eval", f"open_clip:local-dir:{model_folder}", "--tasks", tasks, "--out", str(out), "--quiet",
            "--set", f"eval.batch_size={batch_size}", "--set", "eval.num_workers=0"]
    for d in datasets:
        args += ["--dataset", str(d)]
    for s in settings:
        args += ["--set", s]
    if main(args) != 0:
        raise RuntimeError(f"lipkit {' '.join(args)} failed")
    return json.loads(out.read_text())


def timed(fn, *args, **kwargs):
    """(fn's result, wall seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
