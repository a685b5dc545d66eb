"""`lipkit import open_clip:ARCH[:WEIGHTS_FILE] OUT` / `lipkit import hf:PATH OUT`: another
library's CLIP as a lipkit run directory (config.yaml, model.safetensors, tokenizer.json,
objective.safetensors), checked against the source model before OUT appears.

The run is a CLIP run (objective clip, heads [clip]); `lipkit eval OUT`, `lipkit.load(OUT)` and
`lipkit train --init OUT` (any objective: new heads start fresh) read it. import.json records the
source and the agreement."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lipkit.config import RunConfig, save_config
from lipkit.files import write_json
from lipkit.models import LIPModel
from lipkit.runs.directory import CONFIG_FILE, OBJECTIVE_FILE, TOKENIZER_FILE, save_model, write_tensors

from . import hf, openclip
from .agreement import Agreement, check
from .layout import InteropError, lipkit_state, staged_output, to_ours

SOURCES = {"open_clip": openclip, "hf": hf}
IMPORT_FILE = "import.json"


@dataclass
class ImportReport:
    out: Path
    agreement: Agreement
    notes: list[str] = field(default_factory=list)


def import_model(spec: str, out: str | Path) -> ImportReport:
    fmt, sep, rest = spec.partition(":")
    if not sep or fmt not in SOURCES or not rest:
        raise InteropError(f"{spec}: expected open_clip:ARCH[:WEIGHTS_FILE], open_clip:DIR or hf:PATH")
    module = SOURCES[fmt]
    foreign = module.read(rest)
    cfg = RunConfig(model=foreign.model_cfg)
    cfg.data.image_mean, cfg.data.image_std = foreign.image_mean, foreign.image_std
    cfg.model.text.eos_last = foreign.tokenizer.eos_id == foreign.tokenizer.vocab_size - 1  # as recorded for runs
    model = LIPModel(cfg.model)
    model.load_state_dict(lipkit_state(to_ours(foreign.state, module.rules(cfg.model), fmt)))
    model.eval()
    agreement = check(model, foreign.tokenizer, foreign.target, spec, exact_ids=False)
    with staged_output(Path(out), "import") as tmp:
        save_config(cfg, tmp / CONFIG_FILE)
        save_model(model, tmp)
        foreign.tokenizer.save(tmp / TOKENIZER_FILE)
        write_tensors({}, tmp / OBJECTIVE_FILE)  # the clip objective has no state
        record = {"source": spec, "max_abs_difference": {"image": agreement.image, "text": agreement.text},
                  "notes": foreign.notes}
        write_json(tmp / IMPORT_FILE, record, indent=2)
    return ImportReport(Path(out), agreement, foreign.notes)
