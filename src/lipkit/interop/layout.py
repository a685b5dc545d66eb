"""What a lipkit model must be to leave lipkit as a CLIP, and the renaming of its weights.

open_clip's CLIP and Hugging Face's CLIPModel are the same network as lipkit's ViT + causal text
transformer with CLIP heads: pre-norm blocks with a fused (open_clip) or split (HF) q/k/v, a
LayerNorm before the ViT blocks (ln_pre) and on the pooled rows, bias-free projections, a learnt
log logit scale. Two details differ and are rewritten exactly (`canonical_state`):
- lipkit's patch embedding has a bias, theirs none: the bias is added to every patch position
  only, so it moves into the patch rows of the position embedding;
- a grayscale tower (channels 1) becomes an RGB one whose three input channels carry the
  weights times PIL's luma coefficients (L = 0.299 R + 0.587 G + 0.114 B), so a gray image (R =
  G = B) gives the same patch embedding, and a colour image about what lipkit's conversion to L
  gives.
Everything else is a renaming (`Rule`), with transposes where a format stores x @ W."""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from lipkit.config import ModelConfig
from lipkit.errors import LipkitError
from lipkit.files import staged_directory
from lipkit.runs.directory import as_os_error

LUMA = (0.299, 0.587, 0.114)  # PIL's "L" conversion (ITU-R 601-2)
# heads a plain CLIP has no counterpart for, left out of an export (nCLIP's prototypes, SLIP's projector)
DROPPED_HEAD_PREFIXES = ("image_prototypes.", "text_prototypes.", "image_ssl.")


class InteropError(LipkitError, ValueError):
    """A model that cannot move between lipkit and another format, stated in one line."""


@contextlib.contextmanager
def staged_output(out: Path, what: str) -> Iterator[Path]:
    """lipkit.files.staged_directory for the folder an export or import writes (`what`): an OS
    error on the way (a full disk, a read-only or busy folder, from Python or from a Rust writer)
    is one line naming OUT, and nothing of OUT is kept."""
    try:
        with staged_directory(Path(out), refuse=InteropError) as tmp:
            yield tmp
    except LipkitError:
        raise
    except Exception as e:
        os_error = as_os_error(e, Path(out))
        if os_error is None:
            raise
        raise InteropError(f"{out}: cannot write the {what} ({os_error.strerror or os_error}); nothing of it "
                           f"was kept") from None


def pickled_weights_refused(source: str, error: Exception) -> InteropError:
    """The one line for weights torch.load refused (weights_only): a pickle that holds more than
    tensors and plain containers, which only loading with code execution would read."""
    found = re.search(r"unsupported GLOBAL (\S+)", str(error))
    what = f" (it refers to {found.group(1)})" if found else ""
    return InteropError(f"{source}: its weights file is a pickle holding more than tensors{what}; lipkit does not "
                        "load it, as that could run code: convert it to safetensors where you trust it")


def _one(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (t,)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class Rule:
    """lipkit key <-> their key(s); `export` maps our tensor to theirs, `import_` back."""
    ours: str
    theirs: tuple[str, ...]
    export: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = _one
    import_: Callable[..., torch.Tensor] = _same


def rename(ours: str, theirs: str) -> Rule:
    return Rule(ours, (theirs,))


def transposed(ours: str, theirs: str) -> Rule:
    return Rule(ours, (theirs,), lambda t: (t.t(),), lambda t: t.t())


def unbatched(ours: str, theirs: str, batch_dims: int) -> Rule:
    """Our [1, ..., W] parameter is their [..., W] (cls token, position embeddings)."""
    return Rule(ours, (theirs,), lambda t: (t.reshape(t.shape[batch_dims:]),),
                lambda t: t.reshape((1,) * batch_dims + tuple(t.shape)))


def affine(ours: str, theirs: str) -> list[Rule]:
    """A layer's weight and bias (Linear, LayerNorm)."""
    return [rename(f"{ours}.weight", f"{theirs}.weight"), rename(f"{ours}.bias", f"{theirs}.bias")]


def per_block(rules: list[Rule], ours: str, theirs: str, layers: int) -> list[Rule]:
    """`rules` written for one block (keys relative to it), for blocks 0..layers-1."""
    return [Rule(f"{ours}.{i}.{r.ours}", tuple(f"{theirs}.{i}.{t}" for t in r.theirs), r.export, r.import_)
            for i in range(layers) for r in rules]


def _few(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def to_theirs(state: dict[str, torch.Tensor], rules: list[Rule], fmt: str) -> dict[str, torch.Tensor]:
    left = set(state) - {r.ours for r in rules}
    if left:
        raise InteropError(f"{fmt}: no counterpart for lipkit weights {_few(left)}")
    out = {}
    for r in rules:
        out.update(zip(r.theirs, (t.contiguous() for t in r.export(state[r.ours]))))
    return out


def to_ours(state: dict[str, torch.Tensor], rules: list[Rule], fmt: str) -> dict[str, torch.Tensor]:
    wanted = {k for r in rules for k in r.theirs}
    missing, extra = wanted - set(state), set(state) - wanted
    if missing or extra:
        parts = [f"missing {_few(missing)}"] if missing else []
        parts += [f"no lipkit counterpart for {_few(extra)}"] if extra else []
        raise InteropError(f"{fmt} weights do not match a ViT + text transformer CLIP: " + "; ".join(parts))
    return {r.ours: r.import_(*(state[k] for k in r.theirs)).contiguous() for r in rules}


# ----------------------------------------------------------------------------- lipkit side
def check_exportable(cfg: ModelConfig, heads: frozenset[str], fmt: str) -> list[str]:
    """Refuse what has no counterpart in a CLIP (one line naming the part); notes for what is dropped."""
    v, t = cfg.vision, cfg.text
    if v.name != "vit":
        raise InteropError(f"{fmt}: the image tower model.vision.name={v.name} has no counterpart (only the ViT exports)")
    if t.name != "transformer":
        raise InteropError(f"{fmt}: the text tower model.text.name={t.name} has no counterpart "
                           "(only lipkit's text transformer exports)")
    if "clip" not in heads:
        raise InteropError(f"{fmt}: the model has no CLIP heads (model.heads={sorted(heads)}); "
                           "an nCLIP-only model embeds in prototype space and cannot be exported as a CLIP")
    if cfg.adapter_layers:
        raise InteropError(f"{fmt}: adapter layers (model.adapter_layers={cfg.adapter_layers}) have no counterpart")
    if not t.causal:
        raise InteropError(f"{fmt}: the bidirectional text tower (model.text.causal=false) has no counterpart: "
                           "CLIP text towers are causal")
    if t.pooling == "mean":
        raise InteropError(f"{fmt}: mean pooling of the text tower (model.text.pooling=mean) has no counterpart: "
                           "CLIP pools at the end token")
    if v.channels not in (1, 3):
        raise InteropError(f"{fmt}: model.vision.channels={v.channels}: only 1 or 3 channels export")
    notes = []
    if "prototypes" in heads:
        notes.append("the nCLIP prototype heads are left out (they do not change the CLIP embeddings)")
    if "ssl" in heads:
        notes.append("SLIP's image projector (the ssl head) is left out (it does not change the CLIP embeddings)")
    if v.channels == 1:
        notes.append("the grayscale image tower becomes an RGB one (weights x luma coefficients): "
                     "gray images embed as in lipkit, colour ones as after lipkit's conversion to L")
    return notes


def canonical_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's fp32 weights as a plain CLIP has them: no prototype or SLIP heads, no patch bias,
    three input channels (see the module docstring)."""
    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()
             if not k.startswith(DROPPED_HEAD_PREFIXES)}
    bias = state.pop("vision.patchify.bias")
    state["vision.pos_embed"][:, 1:] += bias
    conv = state["vision.patchify.weight"]
    if conv.shape[1] == 1:
        state["vision.patchify.weight"] = conv * torch.tensor(LUMA).view(1, 3, 1, 1)
    return state


def rgb_normalisation(preprocess) -> tuple[list[float], list[float]]:
    """(mean, std) for three channels: a grayscale transform's single values repeated."""
    repeat = 3 // len(preprocess.mean)
    return list(preprocess.mean) * repeat, list(preprocess.std) * repeat


def lipkit_state(canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LIPModel state dict from imported CLIP weights (the patch bias zero)."""
    width = canonical["vision.cls_token"].shape[-1]
    return {**canonical, "vision.patchify.bias": torch.zeros(width)}


def text_pooling(pad_is_special: bool, end_id: int, vocab_size: int, fmt: str) -> str:
    """lipkit's pooling for a text tower that reads the end token: `eos` (the last non-padding
    position) when id 0 is a padding token no text produces, else `argmax`, which needs the end
    token to be the highest id (then the first end token is the first maximum)."""
    if pad_is_special:
        return "eos"
    if end_id == vocab_size - 1:
        return "argmax"
    raise InteropError(f"{fmt}: the end token (id {end_id}) is not the vocabulary's highest id and id 0 is a real "
                       "token: no lipkit text pooling finds it")
