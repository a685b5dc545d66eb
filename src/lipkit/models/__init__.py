"""The model: image and text towers (vision, text, efficientnet, minilm, towers), the CLIP
projections and nCLIP prototype heads (heads, batch_norm), and LIPModel (lip), which returns every
embedding an objective reads. Models know nothing of run directories or objectives."""
from lipkit.models.lip import HEADS, LIPModel

__all__ = ["HEADS", "LIPModel"]
