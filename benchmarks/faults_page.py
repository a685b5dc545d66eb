"""docs/reliability.md from the results of benchmarks/faults.py (`make faults`), which passes
everything the page states (it imports nothing from faults.py)."""
from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_page(path: Path, points: list, seed: int, others: list[dict], command: str, *, train_command: str,
               steps: int, save_every: int) -> None:
    """`points`: faults.KillPoint results; `train_command`: the run each fault interrupts."""
    equal = sum(p.bitwise_equal and p.metrics_complete for p in points)
    killed = sum(p.killed for p in points)
    lines = [
        "# Reliability: faults injected, what was lost",
        "",
        f"Written by `{command}` (benchmarks/faults.py) on {datetime.date.today().isoformat()}, "
        f"{os.cpu_count()} cores ({_cpu()}); kill moments drawn with seed {seed}. Do not edit: rerun it.",
        "",
        "The run: a fashion-tiny xCLIP model with dropout, nCLIP running centers (objective buffers) and "
        f"accumulation over 2 micro-batches, {steps} steps of 128 pairs over 640 pairs (5 steps an epoch), a "
        f"checkpoint every {save_every} steps:",
        "",
        "```",
        train_command,
        "```",
        "",
        "Each faulty run is continued with the same command plus `--resume latest`, and compared with an "
        "uninterrupted run: model and objective weights bitwise, and metrics.jsonl holding every step once.",
        "",
        "## SIGKILL at random moments",
        "",
        f"**{equal}/{len(points)}** resumed runs ended bitwise equal to the uninterrupted one, with every step logged "
        f"once ({killed} of the {len(points)} runs were killed as planned).",
        "",
        "| # | killed | last step logged | resumed at step | bitwise equal | metrics complete | notes |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for i, p in enumerate(points, 1):
        lines.append(f"| {i} | {_cell(p.moment)}{'' if p.killed else ' (not killed)'} | {p.last_logged_step} | "
                     f"{p.resumed_at} | {'yes' if p.bitwise_equal else '**no**'} | "
                     f"{'yes' if p.metrics_complete else '**no**'} | {_cell('; '.join(p.notes))} |")
    lines += ["", "## Damaged checkpoints, full disk, read-only folders", "",
              "| case | how | what the user saw | afterwards |", "|---|---|---|---|"]
    for c in others:
        saw = [f"exit {c['status']}" if "status" in c else ""]
        saw += [f"`{c['error']}`"] if c.get("error") else []
        saw += [f"`{w}`" for w in c.get("warnings", [])]
        saw += ["a traceback"] if c.get("traceback") else []
        saw += ["tasks ran first"] if c.get("tasks_run") else []
        after = []
        if "intact" in c:
            after.append(f"checkpoints left intact: {', '.join(c['intact']) or 'none'}")
        if "resumed_at" in c:
            after.append(f"`--resume latest` exit {c.get('resume_status', c.get('status'))}, resumed at step "
                         f"{c['resumed_at']}, bitwise equal: {'yes' if c['bitwise_equal'] else '**no**'}")
        lines.append(f"| {_cell(c['case'])} | {_cell(c.get('how') or c.get('damage', ''))} | "
                     f"{_cell('; '.join(s for s in saw if s))} | {_cell('; '.join(after)) or '–'} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
