"""Times an exported servable end to end, as a server would run it.

    python -m benchmarks.servable_latency EXPORT_DIR [--k=100]
        [--calls=200] [--requests=FILE.json]

Runs in its own process that imports only TensorFlow (no retrieval_tf), with
one intra-op and one inter-op thread: the time to load the latest version
from disk, the single-request latency (p50 / p99 over `--calls` one-row
calls of `serving_default`, raw strings in, top-k ids out, a different row
each call) and the rows/s of one 1,000-row request. The rows come from
`--requests` (a request body without `k`, as `{"name": [row, ...]}`) or else
the model card's example request. Prints one JSON line.
"""

import json
import os
import sys
import time

import numpy as np
import tensorflow as tf


def _latest(export_dir: str) -> str:
  versions = [int(v) for v in os.listdir(export_dir) if v.isdigit()]
  if not versions:
    raise SystemExit(f"no numbered version under {export_dir}")
  return os.path.join(export_dir, str(max(versions)))


def _rows(request: dict, rows, k: int) -> dict:
  """The request made of the given row numbers of `request`."""
  out = {"k": tf.fill([len(rows)], k)}
  for name, values in request.items():
    if name != "k":
      out[name] = tf.constant([values[r] for r in rows])
  return out


def main(argv):
  export_dir = argv[1]
  options = dict(a[2:].split("=", 1) for a in argv[2:])
  k, calls = int(options.get("k", 100)), int(options.get("calls", 200))
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  path = _latest(export_dir)
  start = time.perf_counter()
  loaded = tf.saved_model.load(path)
  serve = loaded.signatures["serving_default"]
  load_seconds = time.perf_counter() - start
  if "requests" in options:
    with open(options["requests"]) as f:
      request = json.load(f)
  else:
    with open(os.path.join(path, "assets.extra", "model_card.json")) as f:
      request = json.load(f)["example_requests"]["serving_default"]
  num_rows = len(next(v for n, v in request.items() if n != "k"))
  serve(**_rows(request, [0], k))  # first call: graph warm-up, not timed
  times = []
  for call in range(calls):
    one = _rows(request, [call % num_rows], k)
    start = time.perf_counter()
    serve(**one)["item_ids"].numpy()
    times.append(time.perf_counter() - start)
  batch = _rows(request, [r % num_rows for r in range(1000)], k)
  serve(**batch)
  start = time.perf_counter()
  serve(**batch)["item_ids"].numpy()
  batch_seconds = time.perf_counter() - start
  print(json.dumps({
      "servable": path, "k": k, "load_seconds": round(load_seconds, 3),
      "p50_ms": round(1000 * float(np.percentile(times, 50)), 3),
      "p99_ms": round(1000 * float(np.percentile(times, 99)), 3),
      "batch_1000_rows_per_second": round(1000 / batch_seconds, 1)}))


if __name__ == "__main__":
  main(sys.argv)
