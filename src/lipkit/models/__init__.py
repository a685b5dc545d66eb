"""The model: image and text towers (vision, text, efficientnet, minilm, towers), the CLIP
projections and nCLIP prototype heads (heads, batch_norm), and LIPModel (lip), which returns every
embedding an objective reads. Models know nothing of objectives, nor of run directories
(LIPModel.save_pretrained / from_pretrained reach lipkit.run_dir and lipkit.loading when called)."""
from lipkit.models.lip import HEADS, LIPModel

__all__ = ["HEADS", "LIPModel"]
