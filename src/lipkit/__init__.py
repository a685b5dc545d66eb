"""lipkit: language-image pre-training and evaluation. `lipkit.load(SPEC)` loads a trained model
(see lipkit.runs.loading); the rest lives in the subpackages. Importing lipkit stays cheap: every
package face is lazy (lipkit.faces says why)."""
from lipkit.faces import lazy_face

_HOMES = {"load": "runs.loading"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
