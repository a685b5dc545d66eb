"""The one gateway to open_clip (never a lipkit dependency): every lipkit module that needs
open_clip (interop's export and import, `lipkit eval open_clip:...`, the benchmarks' peer trainer)
calls `import_open_clip()` here, and never imports open_clip itself; code that reaches torchvision
through another library (transformers' CLIP classes, CLIP_benchmark) calls `prepare_torchvision()`
first. In Python, `open_clip = import_open_clip()` is the line to use in .venv-peer (docs/guides/share.md).

The torchvision 0.28.0 wheel (the release that pins torch 2.13.0) is a CUDA build: its C++ ops
cannot load on CPU torch and `import torchvision` stops at "operator torchvision::nms does not
exist", because its meta registrations assume the ops exist. Declaring the two operator schemas
it registers first lets the Python package import; transforms and models then work, only the
detection ops (unused by CLIP) would fail if called."""
from __future__ import annotations

import glob
import importlib.util
import os

import torch

from lipkit.errors import LipkitError


class OpenClipUnavailable(LipkitError):
    """open_clip cannot be imported in this environment."""


_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_shim_lib = None  # keeps the torch.library.Library alive for the process


def _torchvision_ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    for path in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(path)
            return True
        except (OSError, RuntimeError):
            return False
    return False


def prepare_torchvision() -> str:
    """Make `import torchvision` work; returns how ('native ops', 'schemas declared', 'absent')."""
    global _shim_lib
    if importlib.util.find_spec("torchvision") is None:
        return "absent"
    if _torchvision_ops_load():
        return "native ops"
    if _shim_lib is None:
        _shim_lib = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _shim_lib.define(schema)
    return "schemas declared"


def import_open_clip():
    """The open_clip module, with torchvision made importable first; OpenClipUnavailable (one
    line) where it cannot be imported."""
    prepare_torchvision()
    try:
        import open_clip
    except Exception as e:  # ImportError, or torchvision failing inside open_clip's own import
        first = str(e).splitlines()[0] if str(e) else ""
        raise OpenClipUnavailable(
            f"open_clip cannot be imported ({type(e).__name__}: {first}); `make peer` sets up .venv-peer "
            "with open_clip_torch==3.3.0"
        ) from None
    return open_clip
