"""Text-tower representation quality: WordSim-353 and a caption-category linear probe.

- WordSim-353: the Spearman correlation between the human similarity scores of 353 word pairs
  and the cosine similarities of the words' text embeddings (each word embedded alone).
- Caption probe: logistic regression (`linear.fit`) from caption embeddings to a category label,
  e.g. the class a Fashion-MNIST caption names or a Tux Paint stamp's category.

WordSim-353 is read from the `gensim` 4.4.0 wheel (`gensim/test/test_data/wordsim353.tsv`)
without importing gensim, so only the file is needed; `wordsim_path` takes any file in the same
format (tab-separated word, word, score; '#' comment lines). `evaluate(model, data)` is the task;
`wordsim_spearman` and `caption_probe` are its two halves.
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from . import linear
from .context import NO_PROBE_TRAIN, Context, captions_missing, note, probe_shortfall
from .errors import EvalError
from .features import embed_texts
from .adapter import EvalModel
from .registry import CAPTION_PROBE, WORD_SIMILARITY
from .results import TaskResult
from .splits import EvalData

WORDSIM_IN_GENSIM = "gensim/test/test_data/wordsim353.tsv"
WordPair = tuple[str, str, float]


def wordsim353_path() -> Path:
    """The WordSim-353 file inside the installed gensim distribution (gensim is not imported)."""
    try:
        dist = importlib.metadata.distribution("gensim")
    except importlib.metadata.PackageNotFoundError:
        raise EvalError("WordSim-353 is read from the gensim wheel, which is not installed: "
                        "pip install -c constraints.txt 'lipkit[eval]' (or set eval.wordsim_path "
                        "to a word<TAB>word<TAB>score file)") from None
    path = Path(dist.locate_file(WORDSIM_IN_GENSIM))
    if not path.is_file():
        raise EvalError(f"gensim {dist.version} is installed but has no {WORDSIM_IN_GENSIM}; "
                        "install gensim 4.4.0 or set eval.wordsim_path")
    return path


def read_word_pairs(path: str | Path) -> list[WordPair]:
    """(word1, word2, human score) per line of a tab-separated file; '#' lines are comments."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise EvalError(f"{path}: cannot read word pairs ({e.strerror or e})") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        try:
            if len(fields) != 3:
                raise ValueError
            pairs.append((fields[0].strip(), fields[1].strip(), float(fields[2])))
        except ValueError:
            raise EvalError(f"{path}:{number}: expected word<TAB>word<TAB>score, got "
                            f"{line[:60]!r}") from None
    if len(pairs) < 3:
        raise EvalError(f"{path}: {len(pairs)} word pairs; need at least 3 for a correlation")
    return pairs


def wordsim_spearman(model, tokenize: Callable[[list[str]], torch.Tensor],
                     pairs: Sequence[WordPair], *, batch_size: int = 256,
                     word_template: str = "{}", device=None) -> dict[str, float]:
    """{"wordsim_spearman", "wordsim_pairs"}: Spearman's rho (ties get average ranks) between the
    human scores and cos(embed(w1), embed(w2)). Each distinct word is embedded once, as
    `word_template` filled with the word."""
    words = list(dict.fromkeys(w for a, b, _ in pairs for w in (a, b)))
    if not words:
        raise ValueError("no word pairs")
    index = {w: i for i, w in enumerate(words)}
    embeds = embed_texts(model, tokenize, [word_template.format(w) for w in words], batch_size,
                         normalize=True, device=device).double()
    a = embeds[[index[p[0]] for p in pairs]]
    b = embeds[[index[p[1]] for p in pairs]]
    cosines = (a * b).sum(dim=-1).numpy()
    human = np.array([p[2] for p in pairs], dtype=np.float64)
    rho = spearmanr(human, cosines).statistic
    return {"wordsim_spearman": float(rho), "wordsim_pairs": len(pairs)}


def caption_probe(model, tokenize, train_captions: Sequence[str], train_labels,
                  test_captions: Sequence[str], test_labels, *, batch_size: int = 256,
                  feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  seed: int = 0, device=None, **probe_kwargs) -> dict[str, float]:
    """{"caption_probe_acc1", "caption_probe_mean_per_class_recall", "caption_probe_best_C"}:
    a linear probe on caption embeddings (`feature_fn`: tokens -> features, e.g. the text
    tower's pooled output, instead of `encode_text`). Each distinct caption is embedded once."""
    distinct = list(dict.fromkeys([*train_captions, *test_captions]))
    embeds = embed_texts(model, tokenize, distinct, batch_size, normalize=feature_fn is None,
                         feature_fn=feature_fn, device=device)
    where = {c: i for i, c in enumerate(distinct)}
    train_x = embeds[[where[c] for c in train_captions]]
    test_x = embeds[[where[c] for c in test_captions]]
    metrics = linear.evaluate_features(train_x, train_labels, test_x, test_labels, seed=seed,
                                       topk=(1,), **probe_kwargs)
    return {f"caption_probe_{k}": v for k, v in metrics.items()}


def _caption_probe_skip(ctx: Context) -> str:
    if not ctx.data.has_labels:
        return "it has no labels"
    train = ctx.probe_train()
    if train is None:
        return NO_PROBE_TRAIN
    test = ctx.split("probe_test")
    return (captions_missing(test)
            or (captions_missing(train) and f"its probe training set: {captions_missing(train)}")
            or probe_shortfall(train.labels, few_shot_k=0))


def evaluate(model: EvalModel, data: EvalData, *, cache: Context | None = None, **settings
             ) -> list[TaskResult]:
    """WordSim Spearman (eval.wordsim_path, else WordSim-353) as a word_similarity result named
    after the word-pair file and, when `data` has labels and a caption for every image, a
    caption_probe result: the linear probe from caption to class (on the text tower's pooled
    features with eval.features = pre and a model that exposes them)."""
    ctx = Context.of(model, data, cache, settings)
    em, c, d = ctx.em, ctx.cfg, ctx.data
    if c.wordsim_path:
        pairs, name = read_word_pairs(c.wordsim_path), Path(c.wordsim_path).stem
    else:
        pairs, name = read_word_pairs(wordsim353_path()), "wordsim353"
    results = [TaskResult(name, WORD_SIMILARITY, wordsim_spearman(
        em.model, em.tokenize, pairs, batch_size=ctx.batch_size))]
    reason = _caption_probe_skip(ctx)
    if reason:
        note(f"caption probe on {d.name}: skipped, {reason}")
        return results
    pre = c.features == "pre" and em.text_features is not None
    train, test = ctx.split("train"), ctx.split("probe_test")
    probe = caption_probe(em.model, em.tokenize, train.caption, train.labels,
                          test.caption, test.labels, batch_size=ctx.batch_size,
                          feature_fn=em.text_features if pre else None, seed=em.seed)
    probe.update(features="pre" if pre else "post", train_captions=len(train.caption), captions=len(test.caption))
    results.append(TaskResult(d.name, CAPTION_PROBE, probe))
    return results
