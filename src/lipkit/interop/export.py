"""`lipkit export RUN --to open_clip|hf OUT`: a lipkit model as the other library's own folder,
checked by loading it back there (when that library is importable) before OUT appears."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lipkit.runs.loading import load_directory

from . import hf, openclip
from .agreement import Agreement, check
from .gateway import OpenClipUnavailable, import_open_clip
from .layout import InteropError, canonical_state, check_exportable, staged_output, to_theirs

FORMATS = {"open_clip": openclip, "hf": hf}


@dataclass
class ExportReport:
    out: Path
    notes: list[str] = field(default_factory=list)
    agreement: Agreement | None = None  # None: the target library is not importable here


def _target_importable(fmt: str) -> bool:
    if fmt == "hf":
        import importlib.util

        return importlib.util.find_spec("transformers") is not None
    try:
        import_open_clip()
    except OpenClipUnavailable:
        return False
    return True


def export_run(spec: str | Path, fmt: str, out: str | Path) -> ExportReport:
    if fmt not in FORMATS:
        raise InteropError(f"--to {fmt}: unknown format; choose {' or '.join(FORMATS)}")
    module = FORMATS[fmt]
    loaded = load_directory(spec, merged=True)  # LoRA adapters folded into the base weights
    cfg, model, tokenizer = loaded.config.model, loaded.model, loaded.tokenizer
    notes = check_exportable(cfg, model.heads, fmt)
    module.check_tokenizer(cfg, tokenizer)
    state = to_theirs(canonical_state(model), module.rules(cfg), fmt)
    report = ExportReport(Path(out), notes)
    with staged_output(Path(out), "export") as tmp:
        module.write(tmp, cfg, state, tokenizer, loaded.preprocess)
        if _target_importable(fmt):
            # the whole padded rows agree, unless the vocabulary pads with its end token there (write_tokenizer)
            report.agreement = check(model, tokenizer, module.exported(tmp, tokenizer), f"{fmt} export",
                                     exact_ids=tokenizer.pads_with_special_token)
        else:
            report.notes.append(f"not checked here: {fmt} is not importable in this environment "
                                "(.venv-peer has it: make peer)")
    return report
