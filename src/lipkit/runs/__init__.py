"""Run directories, above models: the format (directory: config, weights, tokenizer, checkpoints,
trainer state), one writer at a time (lock), each checkpoint's checksums (checksums), and
`lipkit.load` (loading), the one way from a directory to a model; and the weight-space mix of two
runs (interpolate, `lipkit interpolate`). Models never import this layer
(tests/test_layering.py); it imports models to build the model a directory describes.

    from lipkit.runs import load, save_model
    model, preprocess, tokenizer = load("runs/clip")
    save_model(model, Path("runs/copy"))   # the weights file of a run directory
"""
from lipkit.faces import lazy_face

_HOMES = {
    "CheckpointError": "directory", "list_checkpoints": "directory", "load_run_config": "directory",
    "save_model": "directory", "LoadError": "loading", "LoadedModel": "loading", "load": "loading",
    "load_directory": "loading", "load_model": "loading", "load_run": "loading", "RunLock": "lock",
    "RunLockedError": "lock", "InterpolateError": "interpolate", "interpolate_runs": "interpolate",
    "mix_states": "interpolate", "pair_runs": "interpolate",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
