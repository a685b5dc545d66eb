"""The theory lab of Chen et al. (ICLR 2024): a synthetic data model with shared and
modality-unique features, small encoders trained by any lipkit objective, zero-shot measures
(top-r accuracy, margins, positive cosine) and five studies that write JSON and PNG plots.
`lipkit theory STUDY --out DIR`; the claims and what the runs show are in docs/theory.md."""
from lipkit.faces import lazy_face

_HOMES = {"TheoryConfig": "config", "load_theory_config": "config", "SyntheticDataModel": "data", "SyntheticEncoders": "encoders", "run_studies": "lab", "positive_cosine": "measures", "zero_shot_measures": "measures", "STUDIES": "studies", "run_config": "train", "train_and_measure": "train"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
