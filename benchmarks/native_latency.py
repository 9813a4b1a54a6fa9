"""Times an exported servable from C, as a C++ model server runs it.

    python -m benchmarks.native_latency EXPORT_DIR --requests=FILE.json
        [--k=100] [--calls=200] [--batch=1000] [--inter_op=-1]

`benchmarks.servable_latency` calls a loaded signature from Python, so every
call it times includes TensorFlow's Python call path (argument conversion,
the eager call of the function, fetching the result): about 0.1 to 0.25 ms
on this machine, more than the graph itself takes for an inverted-file
search of one query. A model server pays none of it: TF Serving loads the
SavedModel into a C++ session and runs the signature's tensors. This module
does the same through TensorFlow's C API (`native_latency.c`, compiled here
with the C compiler against the installed `tensorflow` wheel's headers and
libraries): load the version, then time `--calls` one-row requests (a
different row each call; building the request tensors counts) and one
`--batch`-row request. One intra-op thread, and by default every op runs in
the calling thread (`inter_op_parallelism_threads = -1`, `--inter_op`), as
a latency-tuned server runs single requests: handing each op to a one-thread
inter-op pool (`--inter_op=1`, what `benchmarks.servable_latency` does) cost
0.01-0.07 ms per call on this 2-core VM, a signature that only adds 1
answering in 0.003-0.005 ms without the hand-off. Prints one JSON line like
`benchmarks.servable_latency`'s.

Numeric inputs only (float32, int32): the request file gives the signature's
float inputs (`{"query_embedding": [[...], ...]}`); an int32 `k` input is
filled with `--k`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(_HERE, "native_latency.c")
BUILD_DIR = os.path.join(os.path.dirname(_HERE), "runs", "benchmarks",
                         "native_latency")


def _tensorflow_dir() -> str:
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec("tensorflow")
  if spec is None or spec.origin is None:
    raise SystemExit("tensorflow is not installed in this interpreter")
  return os.path.dirname(spec.origin)


def compile_harness() -> str:
  """Compiles `native_latency.c` (again when the source is newer) and
  returns the binary's path; SystemExit with the compiler's message if it
  cannot be built."""
  binary = os.path.join(BUILD_DIR, "native_latency")
  if (os.path.exists(binary) and
      os.path.getmtime(binary) >= os.path.getmtime(SOURCE)):
    return binary
  os.makedirs(BUILD_DIR, exist_ok=True)
  tf_dir = _tensorflow_dir()
  cmd = [os.environ.get("CC", "cc"), "-O2", "-std=c11",
         "-D_POSIX_C_SOURCE=199309L", SOURCE,
         "-I", os.path.join(tf_dir, "include"), "-L", tf_dir,
         "-l:libtensorflow_cc.so.2", "-l:libtensorflow_framework.so.2",
         f"-Wl,-rpath,{tf_dir}", "-o", binary]
  done = subprocess.run(cmd, capture_output=True, text=True)
  if done.returncode:
    raise SystemExit("cannot compile the C harness:\n" + " ".join(cmd) +
                     "\n" + done.stderr[-2000:])
  return binary


def _signature(version_dir: str, name: str):
  """The signature's inputs {name: (op, dtype)} and outputs {name: (op,
  index)} in the SavedModel's graph."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import dtypes  # pylint: disable=g-import-not-at-top
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags]
  if not graphs or name not in graphs[0].signature_def:
    raise SystemExit(f"{version_dir} has no 'serve' signature {name!r}")
  signature = graphs[0].signature_def[name]

  def split(tensor_name):
    op, index = tensor_name.rsplit(":", 1)
    return op, int(index)

  inputs = {k: (split(v.name)[0], dtypes.as_dtype(v.dtype).name)
            for k, v in signature.inputs.items()}
  outputs = {k: split(v.name) for k, v in signature.outputs.items()}
  return inputs, outputs


def time_servable(version_dir: str, rows: Dict[str, np.ndarray],
                  calls: int = 200, batch: int = 1000,
                  signature: str = "serving_default",
                  inter_op: int = -1) -> dict:
  """p50 / p99 ms of one-row calls and rows/s of a `batch`-row call of the
  SavedModel at `version_dir`, run from C (see the module docstring).
  `rows` gives every input of the signature as `[rows, ...]` values."""
  binary = compile_harness()
  inputs, outputs = _signature(version_dir, signature)
  if set(rows) != set(inputs):
    raise ValueError(f"the signature takes {sorted(inputs)}, got "
                     f"{sorted(rows)}")
  with tempfile.TemporaryDirectory() as folder:
    lines = [f"export {os.path.abspath(version_dir)}", f"calls {calls}",
             f"batch {batch}", "intra_op 1", f"inter_op {inter_op}"]
    for name, (op, dtype) in inputs.items():
      if dtype not in ("float32", "int32"):
        raise ValueError(f"input {name!r} is {dtype}: the C harness takes "
                         "float32 and int32 inputs")
      values = np.ascontiguousarray(rows[name], dtype)
      if values.ndim not in (1, 2):
        raise ValueError(f"input {name!r} must be [rows] or [rows, width]")
      path = os.path.join(folder, f"{len(lines)}.bin")
      values.tofile(path)
      width = values.shape[1] if values.ndim == 2 else 0
      lines.append(f"input {op} {dtype} {width} {path}")
    lines += [f"output {op} {index}" for op, index in outputs.values()]
    spec = os.path.join(folder, "spec.txt")
    with open(spec, "w") as f:
      f.write("\n".join(lines) + "\n")
    done = subprocess.run([binary, spec], capture_output=True, text=True)
  if done.returncode:
    raise RuntimeError(f"native_latency failed on {version_dir}:\n"
                       f"{done.stderr[-2000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def call_floor_ms(dim: int = 64, calls: int = 1000) -> float:
  """p50 ms of a signature that only adds 1 to a `[1, dim]` query, timed
  from C as `time_servable` times a servable: the fixed cost of one session
  run on this machine, below which no servable's native p50 can go."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  module = tf.Module()
  module.serve = tf.function(
      lambda query_embedding: {"output": query_embedding + 1.0},
      input_signature=[tf.TensorSpec([None, dim], tf.float32,
                                     name="query_embedding")])
  with tempfile.TemporaryDirectory() as folder:
    tf.saved_model.save(module, folder, signatures={
        "serving_default": module.serve.get_concrete_function()})
    return time_servable(
        folder, {"query_embedding": np.zeros([1, dim], np.float32)},
        calls=calls, batch=1)["p50_ms"]


def main(argv):
  export_dir = argv[1]
  options = dict(a[2:].split("=", 1) for a in argv[2:])
  if "requests" not in options:
    raise SystemExit(__doc__)
  with open(options["requests"]) as f:
    request = {name: np.asarray(values) for name, values in
               json.load(f).items()}
  from retrieval_tf.export import latest_version_dir  # pylint: disable=g-import-not-at-top
  version = latest_version_dir(export_dir)
  inputs, _ = _signature(version, "serving_default")
  count = len(next(iter(request.values())))
  if "k" in inputs and "k" not in request:
    request["k"] = np.full([count], int(options.get("k", 100)), np.int32)
  result = time_servable(version, request,
                         calls=int(options.get("calls", 200)),
                         batch=int(options.get("batch", 1000)),
                         inter_op=int(options.get("inter_op", -1)))
  print(json.dumps(dict(result, servable=version)))


if __name__ == "__main__":
  main(sys.argv)
