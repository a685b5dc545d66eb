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
               steps: int, save_every: int, cases: list = ()) -> None:
    """`points`: faults.KillPoint results; `train_command`: the run each fault interrupts; `cases`:
    faults_cases.Case results, the bad-input section."""
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
    if cases:
        lines += ["", *cases_section(list(cases), command)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


CASES_HEADING = "## Bad input: what the user sees, what was kept"


def cases_section(cases: list, command: str) -> list[str]:
    """The bad-input table (`cases`: faults_cases.Case results), as the lines of its page section."""
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    summary = ", ".join(f"**{n}** {outcome}" for outcome, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    lines = [
        CASES_HEADING, "",
        f"Run by `{command}` on {datetime.date.today().isoformat()}: each case through the command line as a "
        "user types it (a fresh process, stderr not a terminal). Outcomes, decided from what happened: "
        "**one line** (exit 2, one `lipkit: error:` line, no traceback), **works** (exit 0, the expected "
        "result), **lost** (what should have been kept was not), **traceback**. "
        f"{summary}.", "",
        "| was | case | what the user sees | outcome | what was kept |", "|---|---|---|---|---|",
    ]
    for c in cases:
        saw = [f"exit {c.status}"] if c.status is not None else []
        saw += [f"`{line}`" for line in c.saw]
        saw += ["a traceback"] if c.traceback else []
        lines.append(f"| {_cell(c.group)} | {_cell(c.case)} | {_cell('; '.join(saw) or c.skipped)} | "
                     f"{'**' + c.outcome + '**' if c.outcome not in ('one line', 'works') else c.outcome} | "
                     f"{_cell(c.kept) or '–'} |")
    return lines


def write_cases_section(path: Path, cases: list, command: str) -> None:
    """Put the bad-input section into the page at `path` in place of the one it has (or at its
    end), leaving every other section as it was: the kill points are not rerun for it."""
    old = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    start = next((i for i, line in enumerate(old) if line == CASES_HEADING), len(old))
    end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
    before = old[:start]
    while before and not before[-1].strip():
        before.pop()
    lines = [*before, "", *cases_section(cases, command), *([""] + old[end:] if end < len(old) else [])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
