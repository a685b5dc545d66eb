from lipkit.models.lip import HEADS, LIPModel

__all__ = ["HEADS", "LIPModel"]
