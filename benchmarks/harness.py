"""What the benchmarks do around their measurements: pin threads, run a
recorded CLI command from the repository root, read a run's metrics."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence

from benchmarks import report

REPO_ROOT = os.path.dirname(report.HERE)


def pin_threads() -> None:
  """One thread for TensorFlow and Faiss in this process (for timing)."""
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  import faiss  # pylint: disable=g-import-not-at-top
  faiss.omp_set_num_threads(1)


def run_command(cmd: Sequence[str], threads: Optional[int] = None) -> str:
  """Prints and runs `python -m ...` (as `cmd` records it) with this
  interpreter from the repository root, with TensorFlow limited to
  `threads` threads when given; returns the command line."""
  line = shlex.join(cmd)
  print("$", line, flush=True)
  env = dict(os.environ)
  if threads:
    env.update(TF_NUM_INTRAOP_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS=str(threads))
  subprocess.run([sys.executable] + list(cmd[1:]), check=True,
                 cwd=REPO_ROOT, env=env)
  return line


def read_metrics(output_dir: str) -> Dict[str, Any]:
  """`metrics.json` of a training run (relative to the repository root)."""
  with open(os.path.join(REPO_ROOT, output_dir, "metrics.json")) as f:
    return json.load(f)
