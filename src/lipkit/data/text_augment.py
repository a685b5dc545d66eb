"""EDA text augmentation (Wei & Zou 2019, "Easy Data Augmentation") for training captions, as
clip-rocket's strong recipe uses it (data.text_augment).

Each operation is applied to a caption with its own probability, in EDA's order:
- synonym replacement: n words that are not stop words become a random WordNet synonym;
- random insertion: n times, a synonym of a random word is inserted at a random place;
- random swap: n times, two random words trade places;
- random deletion: each word is dropped with probability `rate` (one word is always kept);
with n = max(1, round(rate * words)). Words are split on whitespace; punctuation stays attached.

Synonyms come from WordNet 3.0's data files (Debian's `wordnet-base`, /usr/share/wordnet, read
once per process, about a second): the other lemmas of every synset holding the word (lower case,
multi-word lemmas joined by spaces). Where those files are absent, synonym replacement and
insertion do nothing and the trainer says so once; `make test` installs the package.

The generator is passed in, seeded per (seed, epoch, index) by the datasets, so the augmented
caption of an item does not depend on workers or resumes.
"""
from __future__ import annotations

import functools
import os
import random
import re
from pathlib import Path

from lipkit.config import ConfigError, TextAugmentConfig

WORDNET_DIR = Path(os.environ.get("LIPKIT_WORDNET_DIR", "/usr/share/wordnet"))
TEXT_STREAM = 300  # sample_hash stream of a caption's augmentation
# EDA's stop words (never replaced by a synonym)
STOP_WORDS = frozenset("""i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom this that these those am
is are was were be been being have has had having do does did doing a an the and but if or because as until while
of at by for with about against between into through during before after above below to from up down in out on off
over under again further then once here there when where why how all any both each few more most other some such
no nor not only own same so than too very s t can will just don should now""".split())
_LEMMA = re.compile(r"\(.*\)$")  # adjective markers: galore(ip)


def _words_of_synsets(path: Path) -> list[list[str]]:
    synsets = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" ", 4)
            count = int(fields[3], 16)
            parts = line.split(" ")[4: 4 + 2 * count: 2]
            synsets.append([_LEMMA.sub("", w).replace("_", " ").lower() for w in parts])
    return synsets


@functools.lru_cache(maxsize=2)
def wordnet_synonyms(directory: Path = WORDNET_DIR) -> dict[str, tuple[str, ...]] | None:
    """word -> its WordNet synonyms (sorted, without itself); None where WordNet is not installed."""
    files = [directory / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        return None
    table: dict[str, set[str]] = {}
    for f in files:
        for words in _words_of_synsets(f):
            for w in words:
                if " " not in w:
                    table.setdefault(w, set()).update(o for o in words if o != w)
    return {w: tuple(sorted(s)) for w, s in table.items() if s}


class TextAugmenter:
    """caption, generator -> augmented caption (see the module docstring)."""

    def __init__(self, cfg: TextAugmentConfig, synonyms: dict[str, tuple[str, ...]] | None = None):
        check_text_augment(cfg)
        self.cfg = cfg
        uses_synonyms = cfg.synonym_p > 0 or cfg.insert_p > 0
        self.synonyms = (synonyms if synonyms is not None else wordnet_synonyms() or {}) if uses_synonyms else {}
        self.missing_wordnet = uses_synonyms and not self.synonyms

    def _synonym(self, word: str, rng: random.Random) -> str | None:
        core = word.strip(".,;:!?\"'()").lower()
        options = self.synonyms.get(core, ()) if core not in STOP_WORDS else ()
        return word.lower().replace(core, rng.choice(options)) if options else None

    def __call__(self, caption: str, rng: random.Random) -> str:
        words = caption.split()
        if not words:
            return caption
        cfg = self.cfg
        n = max(1, round(cfg.rate * len(words)))
        if rng.random() < cfg.synonym_p:
            order = list(range(len(words)))
            rng.shuffle(order)
            replaced = 0
            for i in order:
                new = self._synonym(words[i], rng)
                if new is not None:
                    words[i], replaced = new, replaced + 1
                    if replaced == n:
                        break
        if rng.random() < cfg.insert_p:
            for _ in range(n):
                candidates = [s for s in (self._synonym(w, rng) for w in words) if s is not None]
                if candidates:
                    words.insert(rng.randint(0, len(words)), rng.choice(candidates))
        if rng.random() < cfg.swap_p and len(words) > 1:
            for _ in range(n):
                i, j = rng.randrange(len(words)), rng.randrange(len(words))
                words[i], words[j] = words[j], words[i]
        if rng.random() < cfg.delete_p and len(words) > 1:
            kept = [w for w in words if rng.random() >= cfg.rate]
            words = kept or [words[rng.randrange(len(words))]]
        return " ".join(words)


def check_text_augment(cfg: TextAugmentConfig) -> None:
    for key in ("synonym_p", "insert_p", "swap_p", "delete_p", "rate"):
        value = getattr(cfg, key)
        if not 0 <= value <= 1:  # NaN fails too
            raise ConfigError(f"data.text_augment.{key}: must be in [0, 1], got {value}")
