"""Multi-node DDP as Lightning runs it on a cluster, on one machine: two "nodes" of one process
each, started by hand with the environment torchrun or SLURM would give (MASTER_ADDR, MASTER_PORT,
NODE_RANK), talking over gloo on localhost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, TINY

PROBE = "+callbacks.probe._target_=tests.train_probes.RecordBatches"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_of_one_process_train_together(tmp_path, cache_dir):
    run = tmp_path / "run"
    args = [*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2", PROBE,
            f"hydra.run.dir={run}"]
    port = str(_free_port())
    nodes = []
    for node in (0, 1):
        env = dict(os.environ, ENCDEC_CACHE=str(cache_dir), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(node))
        nodes.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]

    def rows(name, rank):
        return [json.loads(line) for line in (run / f"{name}_rank{rank}.jsonl").read_text().splitlines()]

    seen = [{i for row in rows("batches", r) for i in row["ids"]} for r in (0, 1)]
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    params = [rows("params", r)[-1] for r in (0, 1)]
    assert params[0]["step"] == 4 and params[0]["sha256"] == params[1]["sha256"]
