"""Several nodes, tested on one machine: two torchrun launches stand for two nodes (c10d rendezvous
on 127.0.0.1, gloo, one process each), as docs/guides/multi-node.md runs them.

- A 2-node run ends with the weights of one process on the same global batch. Not bitwise: the
  2-node gradient is the mean of two half-batch gradients, which rounds differently from one
  full-batch sum. As in tests/test_ddp_train.py the runs are fp64 (fp32 rounding alone moves
  zero-initialised biases by ~1e-5 relative in 10 Adam steps) and differences are judged at rel
  1e-5 on a scale of at least 1e-4; a one-process run on batch 16 (each node's share) is not
  within that tolerance.
- Elastic: under `--max-restarts`, rank 0 (the writer, holding the run directory's lock) killed
  with SIGKILL mid-run, after two checkpoints, makes torchrun restart the group; every rank
  resumes from the newest checkpoint (`--resume latest`: step 6, of 3 and 6) and the run ends
  bitwise equal to the uninterrupted 2-node run, every step logged once. The dead writer's lock
  does not refuse the restarted group (the OS releases it with the process). torchrun's agents
  run with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: with the shared store, restarted groups here
  often failed to connect (lipkit.distributed.elastic_store_warning).
- A run directory that is not shared (each node starts in its own folder with a relative --out,
  as two machines with node-local disks would) stops every rank in one line naming the directory
  and the rank and host that cannot see it, before training, with nothing written."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from _ports import free_port

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

STEPS, SAVE_EVERY, DIE_RANK, DIE_STEP = 10, 3, 0, 8  # checkpoints at 3, 6, 9, 10: the kill resumes from 6
SETTINGS = [
    f"train.steps={STEPS}", "train.batch_size=32", "train.warmup_steps=2", "train.log_every_steps=1",
    "train.progress=false", f"train.save_every_steps={SAVE_EVERY}", "train.lr=2.0e-3", "train.precision=fp64",
    "train.threads=1", "train.strategy=ddp", "data.train_limit=256",
    "model.vision.width=32", "model.vision.layers=2", "model.vision.heads=2",
    "model.text.width=32", "model.text.layers=2", "model.text.heads=2", "model.embed_dim=16",
    # xCLIP: the feature all-gather, the prototype heads' BatchNorm over the global batch, nCLIP centers
    "objective.name=xclip", "objective.nclip.balance=center",
    "model.prototypes.num_prototypes=16", "model.prototypes.hidden_dim=32", "model.prototypes.bottleneck_dim=8",
]
TRAIN = ["train", "--config", "fashion-tiny", *(f"--set={s}" for s in SETTINGS)]
RTOL, SCALE_FLOOR = 1e-5, 1e-4  # the reasons: tests/test_ddp_train.py
WORKERS = Path(__file__).resolve().parent / "_multinode_workers.py"
TIMEOUT = 300


def _two_nodes(script: list[str], logs: Path, cwd: list[Path], max_restarts: int = 0,
               env: dict | None = None) -> list[tuple[int, str]]:
    """Two torchrun launches, one worker each, meeting at a fresh rendezvous; (status, torchrun's
    output) of each. Workers' output goes to `logs`/node-N (see `_worker_stderr`), torchrun's to
    `logs`/torchrun-N.out."""
    port, run_id = free_port(), uuid.uuid4().hex[:8]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    procs = []
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for node in range(2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
                   "--local-addr", "127.0.0.1", "--max-restarts", str(max_restarts), "--monitor-interval", "0.1",
                   "--log-dir", str(logs / f"node-{node}"), "--redirects", "3", *script]
            with open(logs / f"torchrun-{node}.out", "w") as out:  # a file: a full pipe would block torchrun
                procs.append(subprocess.Popen(cmd, cwd=cwd[node], env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        statuses = [p.wait(timeout=TIMEOUT) for p in procs]
        return [(status, (logs / f"torchrun-{node}.out").read_text()) for node, status in enumerate(statuses)]
    finally:
        for p in procs:  # whatever a failed launch left behind
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _worker_stderr(logs: Path) -> list[str]:
    """Every worker's stderr, every attempt (torchrun's LOG_DIR/RUN_ID/attempt_N/0/stderr.log)."""
    return [p.read_text() for p in sorted(logs.glob("node-*/*/attempt_*/*/stderr.log"))]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in load_file(run_dir / "model.safetensors").items()}
    state.update({f"objective.{k}": v for k, v in load_file(run_dir / "objective.safetensors").items()})
    return state


def _far(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> list[str]:
    assert got.keys() == want.keys()
    bad = []
    for key, w in want.items():
        scale = w.abs().max().clamp_min(SCALE_FLOOR)
        if (got[key] - w).abs().max() > RTOL * scale:
            bad.append(f"{key}: max diff {(got[key] - w).abs().max():.3g} (scale {scale:.3g})")
    return bad


def _logged_steps(run_dir: Path) -> list[int]:
    import json

    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("two-nodes")
    results = _two_nodes(["-m", "lipkit", *TRAIN, "--out", str(work / "run")], work / "logs", [work, work])
    assert [status for status, _ in results] == [0, 0], "\n".join(out[-3000:] for _, out in results)
    return work / "run"


def _one_process(run_dir: Path, *extra: str) -> Path:
    from lipkit.config import load_config
    from lipkit.train import train

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train(load_config("fashion-tiny", SETTINGS + list(extra)), run_dir)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def test_two_nodes_match_one_process(two_node_run, tmp_path):
    single = _weights(_one_process(tmp_path / "single"))
    bad = _far(_weights(two_node_run), single)
    assert not bad, "2 nodes differ from 1 process:\n" + "\n".join(bad)
    assert _logged_steps(two_node_run) == list(range(1, STEPS + 1))
    # the tolerance tells a real difference: one node's share of the batch, trained alone
    assert _far(_weights(_one_process(tmp_path / "half", "train.batch_size=16")), single)


def test_lost_worker_restarts_the_group_and_ends_bitwise_equal(two_node_run, tmp_path):
    run, record = tmp_path / "run", tmp_path / "starts.txt"
    script = [str(WORKERS), "--die", str(DIE_RANK), str(DIE_STEP), "--record", str(record), "--",
              *TRAIN, "--out", str(run), "--resume", "latest"]
    results = _two_nodes(script, tmp_path / "logs", [tmp_path, tmp_path], max_restarts=2,
                         env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    assert [status for status, _ in results] == [0, 0], "\n".join(out[-3000:] for _, out in results)
    # the first attempt: both ranks from step 0 (rank 0 killed after step 8); the restarted group:
    # both from step 6, the newest checkpoint
    starts = [tuple(map(int, line.split())) for line in record.read_text().splitlines()]
    assert sorted(starts[:2]) == [(0, 0), (1, 0)] and sorted(starts[2:]) == [(0, 6), (1, 6)], starts
    assert (tmp_path / "starts.txt.died").exists()
    assert not any("lipkit: warning: torchrun" in log for log in _worker_stderr(tmp_path / "logs"))  # sharing off
    want, got = _weights(two_node_run), _weights(run)
    assert got.keys() == want.keys()
    assert [k for k in want if not torch.equal(got[k], want[k])] == []
    assert _logged_steps(run) == list(range(1, STEPS + 1))  # steps 7 and 8 logged once, not twice


def test_unshared_run_directory_stops_every_rank_in_one_line(tmp_path):
    # each "node" in its own folder with a relative --out: two machines' local disks
    nodes = [tmp_path / "node-a", tmp_path / "node-b"]
    for folder in nodes:
        folder.mkdir()
    results = _two_nodes(["-m", "lipkit", *TRAIN, "--out", "run"], tmp_path / "logs", nodes)
    assert [status for status, _ in results] == [1, 1]  # torchrun: a worker failed
    errors = _worker_stderr(tmp_path / "logs")
    assert len(errors) == 2, errors
    for stderr in errors:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("lipkit: error: --out "), stderr
        line = lines[0]
        assert "not every process sees the run directory" in line
        assert f"rank 1 (host {socket.gethostname()}) found nothing in" in line
        assert str(nodes[0]) in line and str(nodes[1]) in line  # where rank 0 wrote, where rank 1 looked
    # the same line on both ranks, each naming its own --out
    assert sorted(e.split(": ", 3)[2] for e in errors) == [f"--out {folder / 'run'}" for folder in nodes]
    assert errors[0].split(": ", 3)[3] == errors[1].split(": ", 3)[3]
    # nothing written: no run directory, no check file left, on either node
    assert [sorted(p.name for p in folder.iterdir()) for folder in nodes] == [[], []]


def test_run_dir_checks_agree_on_every_rank(tmp_path):
    """The checks themselves in 2 spawned gloo processes: a shared directory passes and leaves
    nothing; an --out rank 0 cannot write, and ranks that found different checkpoints to resume,
    stop both ranks in one line."""
    import json

    import torch.multiprocessing as mp

    from _multinode_workers import check_worker

    (tmp_path / "a-file").write_text("not a folder")
    mp.spawn(check_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert first["shared"] == second["shared"] == "ok" and first["same checkpoint"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "rank0.json", "rank1.json"]  # no check file
    reason = f"--out {tmp_path / 'a-file' / 'run'}: {tmp_path / 'a-file'} is a file, not a folder"
    assert first["unwritable"] == f"NotWritableError: {reason}"
    assert second["unwritable"] == f"NotWritableError: rank 0 (host {socket.gethostname()}): {reason}"
    assert first["different checkpoints"] == second["different checkpoints"]
    assert first["different checkpoints"].startswith(
        "RunDirNotSharedError: --resume: the processes found different checkpoints to continue from "
        "(rank 0: step-00000006, rank 1: step-00000003)")


def test_elastic_store_warning():
    from lipkit.distributed import elastic_store_warning

    shared = {"TORCHELASTIC_MAX_RESTARTS": "3", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in elastic_store_warning(shared)
    assert elastic_store_warning({**shared, "TORCHELASTIC_USE_AGENT_STORE": "False"}) is None  # sharing off
    assert elastic_store_warning({**shared, "TORCHELASTIC_MAX_RESTARTS": "0"}) is None  # no restarts
    assert elastic_store_warning({}) is None  # not under torchrun
