"""The model: image and text towers (vision, text, efficientnet, minilm, towers), the CLIP
projections and nCLIP prototype heads (heads, batch_norm), and LIPModel (lip), which returns every
embedding an objective reads; attention_maps reads a ViT tower's class-token attention. Models know nothing of objectives, nor of run directories
(lipkit.runs reads and writes those, and `lipkit.load` builds the model a directory describes)."""
from lipkit.faces import lazy_face

_HOMES = {"HEADS": "lip", "LIPModel": "lip"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
