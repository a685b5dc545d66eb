"""The theory lab of Chen et al. (ICLR 2024): a synthetic data model with shared and
modality-unique features, small encoders trained by any lipkit objective, zero-shot measures
(top-r accuracy, margins, positive cosine) and five studies that write JSON and PNG plots.
`lipkit theory STUDY --out DIR`; the claims and what the runs show are in docs/theory.md."""
from lipkit.theory.config import TheoryConfig, load_theory_config
from lipkit.theory.data import SyntheticDataModel
from lipkit.theory.encoders import SyntheticEncoders
from lipkit.theory.lab import run_studies
from lipkit.theory.measures import positive_cosine, zero_shot_measures
from lipkit.theory.studies import STUDIES
from lipkit.theory.train import run_config, train_and_measure

__all__ = [
    "STUDIES", "SyntheticDataModel", "SyntheticEncoders", "TheoryConfig", "load_theory_config", "positive_cosine",
    "run_config", "run_studies", "train_and_measure", "zero_shot_measures",
]
