"""Verifies that a SavedModel is servable by stock TensorFlow Serving.

    python -m retrieval_tf.serving.check EXPORT_DIR [--signature=NAME]

EXPORT_DIR is a model base folder (its highest version is checked) or a
version folder. Four checks, each in a process that imports nothing but
TensorFlow, so that no custom-op library (ScaNN, ...) can hide a problem:

1. ops: every op in the graph and in its function library is a stock
   TensorFlow op (listed in `tf.raw_ops` or registered by TensorFlow itself);
   any other op is named, with the functions that use it;
2. load: `tf.saved_model.load` + a call of the signature with an example
   request;
3. cli: `saved_model_cli run` answers the same example;
4. rest: the TF Serving REST bodies `{"instances": ...}` and
   `{"inputs": ...}` are converted to a `PredictRequest` (tensorflow-serving-
   api protos), decoded as the server does, and the answer equals the direct
   call.

The example request is `example_request` of the export's model card when it
has one; otherwise one is generated from the signature (zeros, empty
strings, one row). Exits 0 when all checks pass, 1 otherwise, with a report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from absl import app
from absl import flags

flags.DEFINE_string("signature", "serving_default", "Signature to check.")
FLAGS = flags.FLAGS

# Runs in a fresh interpreter that imports only TensorFlow.
_PROBE = r'''
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

path, signature, request_path = sys.argv[1:4]
report = {"ops": {}, "unknown_ops": {}}
sm = saved_model_pb2.SavedModel()
with open(os.path.join(path, "saved_model.pb"), "rb") as f:
  sm.ParseFromString(f.read())
stock = set(dir(tf.raw_ops))
for mg in sm.meta_graphs:
  places = [("<graph>", mg.graph_def.node)]
  places += [(fn.signature.name, fn.node_def)
             for fn in mg.graph_def.library.function]
  for where, nodes in places:
    for node in nodes:
      report["ops"][node.op] = report["ops"].get(node.op, 0) + 1
      if node.op not in stock and op_def_registry.get(node.op) is None:
        report["unknown_ops"].setdefault(node.op, [])
        if where not in report["unknown_ops"][node.op]:
          report["unknown_ops"][node.op].append(where)
if report["unknown_ops"]:
  print(json.dumps(report)); sys.exit(0)

loaded = tf.saved_model.load(path)
fn = loaded.signatures[signature]
_, specs = fn.structured_input_signature
with open(request_path) as f:
  request = json.load(f)
if request is None:  # generate one row: zeros and empty strings
  request = {}
  for name, spec in specs.items():
    nested = "" if spec.dtype == tf.string else 0
    for d in reversed([1 if d is None else d for d in spec.shape.as_list()]):
      nested = [nested] * d
    request[name] = nested
report["request"] = request
inputs = {}
for name, spec in specs.items():
  if name not in request:
    raise SystemExit(f"example request lacks input {name!r}")
  inputs[name] = tf.constant(request[name], dtype=spec.dtype)
outputs = fn(**inputs)
report["direct"] = {k: v.numpy().tolist() if v.dtype != tf.string else
                    [x.decode() if isinstance(x, bytes) else x
                     for x in np.asarray(v.numpy()).ravel().tolist()]
                    for k, v in outputs.items()}
report["output_shapes"] = {k: list(v.shape) for k, v in outputs.items()}
report["input_specs"] = {k: [s.dtype.name, s.shape.as_list()]
                         for k, s in specs.items()}
print(json.dumps(report))
'''


class CheckFailed(Exception):
  """A servable check failed; the message says which and why."""


def _run_probe(path: str, signature: str, request: Optional[Dict]) -> Dict:
  with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    json.dump(request, f)
  try:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, path, signature,
                           f.name], capture_output=True, text=True,
                          env=env, timeout=600, cwd=tempfile.gettempdir())
  finally:
    os.remove(f.name)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode != 0 or not lines:
    raise CheckFailed("load: loading or calling the SavedModel in a fresh "
                      "TensorFlow-only process failed:\n" +
                      proc.stderr[-3000:])
  return json.loads(lines[-1])


def example_request(path: str, signature: str) -> Optional[Dict]:
  """The model card's `example_requests[signature]`, or None (the probe
  then generates one row of zeros and empty strings)."""
  card_path = os.path.join(path, "assets.extra", "model_card.json")
  if os.path.exists(card_path):
    with open(card_path) as f:
      return json.load(f).get("example_requests", {}).get(signature)
  return None


def _saved_model_cli(path: str, signature: str, request: Dict) -> str:
  exprs = ";".join(f"{name}={value!r}"
                   for name, value in request.items())
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  command = [cli if os.path.exists(cli) else "saved_model_cli", "run",
             "--dir", path, "--tag_set", "serve", "--signature_def",
             signature, "--input_exprs", exprs]
  proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
  if proc.returncode != 0 or "Result for output key" not in proc.stdout:
    raise CheckFailed("cli: saved_model_cli run failed:\n" +
                      (proc.stderr or proc.stdout)[-3000:])
  return proc.stdout


def rest_round_trip(path: str, signature: str, request: Dict,
                    direct: Dict) -> List[str]:
  """Converts both REST body formats to a PredictRequest, answers it as TF
  Serving does, and compares with the direct call; returns the formats."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  from retrieval_tf.compat import tf  # pylint: disable=g-import-not-at-top

  fn = tf.saved_model.load(path).signatures[signature]
  _, specs = fn.structured_input_signature
  rows = len(next(iter(request.values())))
  bodies = {
      "instances": {"instances": [{k: v[i] for k, v in request.items()}
                                  for i in range(rows)]},
      "inputs": {"inputs": request},
  }
  for form, body in bodies.items():
    body = json.loads(json.dumps(body))  # exactly what a client would send
    if form == "instances":
      columns = {k: [row[k] for row in body["instances"]] for k in specs}
    else:
      columns = body["inputs"]
    proto = predict_pb2.PredictRequest()
    proto.model_spec.name = "model"
    proto.model_spec.signature_name = signature
    for name, spec in specs.items():
      proto.inputs[name].CopyFrom(tf.make_tensor_proto(
          np.array(columns[name], dtype=spec.dtype.as_numpy_dtype
                   if spec.dtype != tf.string else object)))
    decoded = {k: tf.constant(tf.make_ndarray(v), dtype=specs[k].dtype)
               for k, v in proto.inputs.items()}
    outputs = fn(**decoded)
    for key, value in outputs.items():
      got = value.numpy()
      if value.dtype == tf.string:
        got = [x.decode() for x in np.asarray(got).ravel().tolist()]
        same = got == direct[key]
      else:
        same = np.allclose(got, np.array(direct[key]), atol=1e-5)
      if not same:
        raise CheckFailed(f"rest: output {key!r} from the {form!r} body "
                          "differs from the direct call")
  return list(bodies)


def check(export_dir: str, signature: str = "serving_default",
          request: Optional[Dict] = None) -> Dict:
  """Runs the four checks; returns a report, raises `CheckFailed`."""
  from retrieval_tf.export import latest_version_dir  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(latest_version_dir(export_dir))
  request = request or example_request(path, signature)
  probe = _run_probe(path, signature, request)
  if probe["unknown_ops"]:
    details = "; ".join(f"{op} (used in {', '.join(where[:3])})"
                        for op, where in sorted(probe["unknown_ops"].items()))
    raise CheckFailed(f"ops: {len(probe['unknown_ops'])} op(s) are not stock "
                      f"TensorFlow ops, so TF Serving cannot run this model: "
                      f"{details}")
  request = probe["request"]
  _saved_model_cli(path, signature, request)
  forms = rest_round_trip(path, signature, request, probe["direct"])
  return {"path": path, "signature": signature,
          "num_op_types": len(probe["ops"]), "inputs": probe["input_specs"],
          "outputs": probe["output_shapes"], "rest_bodies": forms,
          "checks": ["ops", "load", "cli", "rest"]}


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m retrieval_tf.serving.check "
                         "EXPORT_DIR [--signature=NAME]")
  try:
    report = check(argv[1], FLAGS.signature)
  except (CheckFailed, FileNotFoundError) as e:
    print(f"NOT SERVABLE: {e}")
    return 1
  print(f"SERVABLE: {report['path']} ({report['signature']})")
  print(f"  ops: {report['num_op_types']} op types, all stock TensorFlow")
  print(f"  load: fresh TensorFlow-only process, inputs {report['inputs']}, "
        f"outputs {report['outputs']}")
  print("  cli: saved_model_cli run answered")
  print(f"  rest: {', '.join(report['rest_bodies'])} bodies -> "
        "PredictRequest match the direct call")
  return 0


def run_main():
  """Console entry point (`retrieval-tf-check`)."""
  app.run(main)


if __name__ == "__main__":
  run_main()
