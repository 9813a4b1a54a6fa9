"""Every --strategy trains the two-tower baseline with a falling loss.

Each strategy runs in its own process (devices and clusters are set once per
process): MirroredStrategy on 2 logical CPU devices, MultiWorkerMirrored with
2 worker processes on loopback via TF_CONFIG, ParameterServerStrategy with an
in-process cluster and `model.fit`.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

JOB = str(pathlib.Path(__file__).with_name("distributed_job.py"))


def _result(stdout: str) -> dict:
  lines = [l for l in stdout.splitlines() if l.startswith("{")]
  assert lines, stdout
  return json.loads(lines[-1])


def _check(result, replicas):
  losses = result["loss"]
  assert result["replicas"] == replicas
  assert result["steps"] == 30
  assert all(l == l for l in losses)  # finite, not NaN
  assert losses[-1] < losses[0], losses


# ParameterServerStrategy runs one replica per worker step (workers are
# asynchronous), so num_replicas_in_sync is 1.
@pytest.mark.parametrize("strategy, replicas", [("mirrored", 2),
                                                ("parameter_server", 1)])
def test_single_process_strategies(tmp_path, strategy, replicas):
  proc = subprocess.run([sys.executable, JOB, strategy, str(tmp_path)],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _check(_result(proc.stdout), replicas)


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_multi_worker_mirrored_two_processes(tmp_path):
  workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps({
        "cluster": {"worker": workers},
        "task": {"type": "worker", "index": index}}))
    procs.append(subprocess.Popen(
        [sys.executable, JOB, "multi_worker", str(tmp_path / f"w{index}")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
  outputs = [p.communicate(timeout=300) for p in procs]
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
  results = [_result(out) for out, _ in outputs]
  for result in results:
    _check(result, 2)
  # Synchronous training: both workers see the same all-reduced loss.
  assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)
