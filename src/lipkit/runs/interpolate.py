"""Weight-space interpolation of two runs (WiSE-FT, Wortsman et al., CVPR 2022): the run directory
whose weights are (1 − α)·A + α·B, tensor by tensor, for two runs of one architecture (B is
typically A fine-tuned: `lipkit train --init A`). A and B are run or checkpoint directories.

- Same architecture: the towers and the heads both runs have hold the same keys, shapes and dtypes,
  or the pair is refused with the keys that differ. A head only one run has (the nCLIP prototypes
  of a CLIP fine-tuned with xCLIP) is left out, with a note: the mix has the heads both have.
- Same tokenizer: token ids index the embedding table, so a mix of two vocabularies means nothing.
- Floating-point tensors are mixed in float64 and rounded once to their dtype. α = 0 and α = 1 take
  A's and B's tensors themselves, bitwise (the formula would turn −0.0 into +0.0, and 0·inf into NaN).
- Tensors that are not floating point (BatchNorm's num_batches_tracked, integer or boolean buffers)
  have no mix: where the runs agree they are copied; where they differ the nearer end's value is
  taken (A's for α < 0.5, B's from 0.5 on), and a note names them.
- A run with LoRA adapters is mixed as its merged model (the adapters folded into the base
  weights, as `lipkit.load(path, merged=True)` gives it); the mix is a plain model.

OUT holds B's config (its heads: those both runs have) and tokenizer, the mixed weights, an empty
objective state (a mix has no training state), `interpolation.json` (A, B, α, each model file's
SHA-256, the notes) and `manifest.json` (checksums). It is written whole into a staging folder and
renamed into place (`staged_mix`), so OUT is complete or absent; a caller may add files first.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lipkit.config import RunConfig, to_dict
from lipkit.errors import LipkitError
from lipkit.files import fsync, staged_directory, write_json
from lipkit.runs.checksums import MANIFEST_FILE, damage, file_sha256, write_manifest
from lipkit.runs.directory import (
    MODEL_FILE,
    OBJECTIVE_FILE,
    TOKENIZER_FILE,
    as_os_error,
    load_run_config,
    read_tensors,
    save_run_config,
    write_tensors,
)

INTERPOLATION_FILE = "interpolation.json"
_SHOWN = 4  # keys named in one line


class InterpolateError(LipkitError, ValueError):
    """Two runs that cannot be mixed, or a mix that cannot be written, stated in one line."""


@dataclass
class Endpoint:
    """One end of the line: a run or checkpoint directory, read."""
    path: Path
    config: RunConfig
    state: dict[str, torch.Tensor]
    tokenizer: dict  # tokenizer.json, parsed


@dataclass
class Pair:
    """Two runs checked to mix: the keys mixed and the config the mix is written with."""
    a: Endpoint
    b: Endpoint
    config: RunConfig  # B's, with the heads both runs have
    keys: list[str]
    notes: list[str] = field(default_factory=list)

    def mix(self, alpha: float) -> dict[str, torch.Tensor]:
        return mix_states(self.a.state, self.b.state, alpha, self.keys)


def _few(items: Sequence[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def check_alpha(alpha: float, what: str = "--alpha") -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:  # also NaN
        raise InterpolateError(f"{what}: must be between 0 (run A) and 1 (run B), got {alpha:g}")
    return alpha


def read_endpoint(spec: str | Path, which: str) -> Endpoint:
    """Run `which` ("A" or "B"): config, weights (LoRA folded in) and tokenizer of a run or
    checkpoint directory, refused in one line when one is missing or damaged (a checkpoint's
    manifest says so)."""
    from lipkit.tokenizer import Tokenizer

    path = Path(spec)
    if not path.is_dir():
        raise InterpolateError(f"run {which} {spec}: no such run or checkpoint directory")
    if (path / MANIFEST_FILE).is_file():
        why = damage(path)
        if why is not None:
            raise InterpolateError(f"run {which} {spec}: damaged ({why})")
    cfg = load_run_config(path)
    if not (path / MODEL_FILE).is_file():
        raise InterpolateError(f"run {which} {spec}: no {MODEL_FILE} (a run that has not saved weights yet)")
    state = read_tensors(path / MODEL_FILE)
    if cfg.model.lora.enabled:  # the merged model, as lipkit.load(path, merged=True) gives it
        from lipkit.models.lora import fold_lora_state, without_lora

        state = fold_lora_state(state, cfg.model.lora)
        cfg = dataclasses.replace(cfg, model=without_lora(cfg.model))
    tokenizer = json.loads(Tokenizer.load(path / TOKENIZER_FILE).hf.to_str())
    return Endpoint(path, cfg, state, tokenizer)


def _heads(cfg: RunConfig) -> set[str]:
    from lipkit.models.lip import DEFAULT_HEADS

    return set(cfg.model.heads or DEFAULT_HEADS)


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def pair_runs(a: str | Path, b: str | Path) -> Pair:
    """Read runs A and B and check that they mix (module docstring); InterpolateError names what
    differs."""
    from lipkit.models import LIPModel

    ea, eb = read_endpoint(a, "A"), read_endpoint(b, "B")
    if ea.tokenizer != eb.tokenizer:
        raise InterpolateError(f"{a} and {b} have different tokenizers (tokenizer.json): token ids would "
                               f"mean different words in each; interpolate runs fine-tuned one from the other")
    common = _heads(ea.config) & _heads(eb.config)
    if not common:
        raise InterpolateError(f"{a} and {b} share no head (A has {sorted(_heads(ea.config))}, "
                               f"B {sorted(_heads(eb.config))})")
    cfg = dataclasses.replace(eb.config, model=dataclasses.replace(eb.config.model, heads=sorted(common)))
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        skeleton = LIPModel(cfg.model).state_dict()  # the keys and shapes of the mix
    problems = []
    for end, which in ((ea, "A"), (eb, "B")):
        missing = [k for k in skeleton if k not in end.state]
        if missing:
            problems.append(f"{which} lacks {_few(missing)}")
        own_heads_only = _heads(end.config) - common
        unexpected = [k for k in end.state if k not in skeleton]
        if unexpected and not own_heads_only:
            problems.append(f"only {which} has {_few(unexpected)}")
    both = [k for k in skeleton if k in ea.state and k in eb.state]
    shapes = [f"{k} {list(ea.state[k].shape)} vs {list(eb.state[k].shape)}" for k in both
              if ea.state[k].shape != eb.state[k].shape]
    if shapes:
        problems.append("shape differs for " + _few(shapes))
    dtypes = [f"{k} {ea.state[k].dtype} vs {eb.state[k].dtype}".replace("torch.", "") for k in both
              if ea.state[k].shape == eb.state[k].shape and ea.state[k].dtype != eb.state[k].dtype]
    if dtypes:
        problems.append("dtype differs for " + _few(dtypes))
    if not problems:  # both agree, but not with the model B's config builds
        wrong = [f"{k} {list(eb.state[k].shape)} vs {list(skeleton[k].shape)}" for k in both
                 if eb.state[k].shape != skeleton[k].shape]
        if wrong:
            problems.append(f"the weights do not fit B's config.yaml: {_few(wrong)}")
    if problems:
        raise InterpolateError(f"{a} and {b} are not the same architecture: " + "; ".join(problems))
    return Pair(ea, eb, cfg, list(skeleton), _notes(ea, eb, common))


def _notes(a: Endpoint, b: Endpoint, common: set[str]) -> list[str]:
    from lipkit.runs.loading import image_transform

    notes = []
    for end, which in ((a, "A"), (b, "B")):
        dropped = sorted(_heads(end.config) - common)
        if dropped:
            notes.append(f"left out: the {', '.join(dropped)} head(s) only run {which} has")
    fa, fb = _flat(to_dict(a.config)["model"]), _flat(to_dict(b.config)["model"])
    unmixed = {"heads"} | (_heads(a.config) | _heads(b.config)) - common  # model.prototypes: its head's settings
    differ = [f"model.{k} {fa.get(k)!r} vs {fb.get(k)!r}" for k in sorted(set(fa) | set(fb))
              if k.split(".")[0] not in unmixed and fa.get(k) != fb.get(k)]
    if differ:
        notes.append(f"the runs' configs differ in {_few(differ)}; the mix is written with B's")
    if image_transform(a.config) != image_transform(b.config):
        notes.append("the runs preprocess images differently; the mix is written (and evaluated) with B's")
    return notes


def mix_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float,
               keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """{key: (1 − α)·a[key] + α·b[key]} over `keys` (default: a's), the rules of the module
    docstring: float64 arithmetic rounded once, the ends exact, non-float tensors from the nearer end
    where they differ."""
    alpha = check_alpha(alpha, "alpha")
    out = {}
    for k in a if keys is None else keys:
        ta, tb = a[k], b[k]
        if alpha == 0.0 or (not ta.is_floating_point() and (alpha < 0.5 or torch.equal(ta, tb))):
            out[k] = ta.clone()
        elif alpha == 1.0 or not ta.is_floating_point():
            out[k] = tb.clone()
        else:
            out[k] = ((1.0 - alpha) * ta.double() + alpha * tb.double()).to(ta.dtype)
    return out


def non_float_differences(pair: Pair) -> list[str]:
    """The keys of tensors that are not floating point and differ between the runs."""
    return [k for k in pair.keys if not pair.a.state[k].is_floating_point()
            and not torch.equal(pair.a.state[k], pair.b.state[k])]


def _record(pair: Pair, alpha: float, notes: list[str]) -> dict:
    return {"format": 1, "alpha": alpha, "formula": "(1 - alpha) * A + alpha * B",
            "a": {"path": str(pair.a.path.resolve()), "model_sha256": file_sha256(pair.a.path / MODEL_FILE)},
            "b": {"path": str(pair.b.path.resolve()), "model_sha256": file_sha256(pair.b.path / MODEL_FILE)},
            "tensors": len(pair.keys), "notes": notes}


def mix_notes(pair: Pair, alpha: float) -> list[str]:
    """What the user should know about the pair and the mix at `alpha`."""
    differ = non_float_differences(pair)
    taken = "A's" if alpha < 0.5 else "B's"
    return pair.notes + ([f"not floating point and different in A and B, so taken from the nearer run "
                          f"({taken}): {_few(differ)}"] if differ and 0.0 < alpha < 1.0 else [])


@contextlib.contextmanager
def staged_mix(pair: Pair, alpha: float, out: str | Path) -> Iterator[Path]:
    """The run directory of the mix at `alpha`, written into a staging folder that is yielded
    (add files there) and renamed to `out` when the block ends; nothing of `out` is kept when it
    fails. `out` must not exist yet, or be an empty folder."""
    alpha = check_alpha(alpha)
    out = Path(out)
    try:
        with staged_directory(out, refuse=InterpolateError) as tmp:
            save_run_config(pair.config, tmp)
            shutil.copyfile(pair.b.path / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
            write_tensors(pair.mix(alpha), tmp / MODEL_FILE)
            write_tensors({}, tmp / OBJECTIVE_FILE)
            write_json(tmp / INTERPOLATION_FILE, _record(pair, alpha, mix_notes(pair, alpha)), indent=2)
            yield tmp
            names = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
            for name in names:
                fsync(tmp / name)
            fsync(write_manifest(tmp, names))
    except LipkitError:
        raise
    except Exception as e:
        os_error = as_os_error(e, out)
        if os_error is None:
            raise
        raise InterpolateError(f"{out}: cannot write the interpolated run ({os_error.strerror or os_error}); "
                               f"nothing of it was kept") from None


def interpolate_runs(a: str | Path, b: str | Path, alpha: float, out: str | Path) -> Pair:
    """Write the run directory (1 − α)·A + α·B to `out`; returns the checked pair (its notes)."""
    alpha = check_alpha(alpha)
    pair = pair_runs(a, b)
    with staged_mix(pair, alpha, out):
        pass
    return pair
