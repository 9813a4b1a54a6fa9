"""Query an exported servable from the command line and read its top-K.

    python -m retrieval_tf.query EXPORT_DIR --json '{"user_id": ["1"],
        "history": [["32", "34"]], "k": [5]}'

EXPORT_DIR is a model base folder (its highest version is used) or a version
folder. The JSON holds the signature's inputs by name, batched as TF
Serving's columnar `{"inputs": ...}` body. Results are printed with titles
when the export ships `assets/items.txt` and `assets/item_titles.txt`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Dict

from absl import app
from absl import flags
import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.export import latest_version_dir

FLAGS = flags.FLAGS


def _titles(path: str) -> Dict[str, str]:
  """`{item id: title}` from the version folder `path`'s assets; empty
  when it ships no titles."""
  ids = os.path.join(path, "assets", "items.txt")
  titles = os.path.join(path, "assets", "item_titles.txt")
  if not (os.path.exists(ids) and os.path.exists(titles)):
    return {}
  with open(ids, encoding="utf-8") as a, open(titles, encoding="utf-8") as b:
    return dict(zip(a.read().splitlines(), b.read().splitlines()))


class QueryError(ValueError):
  """A request or an export the query CLI cannot use; the message names the
  input or the path and says what to fix."""


def load_signature(export_dir: str, signature: str = "serving_default"):
  """The concrete function `signature` of the export's highest version.

  Args:
    export_dir: a model base folder or a version folder.
    signature: the signature's name.

  Returns:
    `(version folder, concrete function)`.

  Raises:
    QueryError: no version folder, a damaged export (one that does not load:
      truncated variables, a corrupt graph...), or no such signature.
  """
  try:
    path = latest_version_dir(export_dir)
  except FileNotFoundError as e:
    raise QueryError(str(e)) from None
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # pylint: disable=broad-except
    # A damaged SavedModel fails in many ways (IndexError, DataLossError,
    # DecodeError, OSError...): every one means the same to a caller.
    reason = (str(e).strip().splitlines() or [""])[0][:200]
    raise QueryError(f"damaged export: {path} ({type(e).__name__}: "
                     f"{reason}); re-export it") from e
  if signature not in loaded.signatures:
    raise QueryError(f"no signature {signature!r}; the export has "
                     f"{', '.join(sorted(loaded.signatures))}")
  return path, loaded.signatures[signature]


def request_tensors(request, specs: Dict[str, tf.TensorSpec],
                    signature: str = "serving_default"
                    ) -> Dict[str, tf.Tensor]:
  """Checks a parsed JSON request against a signature's inputs.

  Args:
    request: the parsed JSON: `{input name: nested lists}`, batched (one
      entry per request row); in process, tuples, NumPy arrays and scalars
      are taken as lists and Python scalars.
    specs: the signature's `{input name: tf.TensorSpec}` (the second part of
      `structured_input_signature`).
    signature: the signature's name, for messages.

  Returns:
    `{input name: tensor of the spec's dtype and shape}`.

  Raises:
    QueryError: the request is not an object; an input is unknown or
      missing; a value has the wrong nesting (e.g. a scalar for a batch),
      ragged rows, the wrong type, or an integer outside the input's dtype
      (checked before any cast, so nothing wraps around); inputs disagree on
      the batch size.
  """
  if not isinstance(request, dict):
    raise QueryError("the request must be a JSON object {input name: "
                     f"batched value}}, got {type(request).__name__}")
  accepted = ", ".join(sorted(specs))
  unknown = sorted(set(request) - set(specs), key=str)
  if unknown:
    raise QueryError(f"unknown input(s) {', '.join(map(repr, unknown))}; "
                     f"{signature} takes {accepted}")
  missing = sorted(set(specs) - set(request))
  if missing:
    raise QueryError(f"the request lacks input(s) {', '.join(missing)}; "
                     f"{signature} takes {accepted}")
  tensors = {name: _tensor(name, request[name], spec)
             for name, spec in sorted(specs.items())}
  rows = {name: int(t.shape[0]) for name, t in tensors.items()
          if t.shape.rank}
  if len(set(rows.values())) > 1:
    sizes = ", ".join(f"{name} has {n}" for name, n in rows.items())
    raise QueryError(f"inputs disagree on the batch size ({sizes} rows); "
                     "every input needs one entry per request row")
  return tensors


_SAMPLES = {tf.string: '"a"', tf.int32: "5", tf.int64: "5",
            tf.float32: "0.5", tf.bool: "true"}


def _shape_text(shape: tf.TensorShape) -> str:
  """`[None, None]` -> `[batch, any]`; fixed sizes are kept."""
  dims = ["batch" if i == 0 and d is None else "any" if d is None else str(d)
          for i, d in enumerate(shape.as_list())]
  return f"[{', '.join(dims)}]"


def _tensor(name: str, value, spec: tf.TensorSpec) -> tf.Tensor:
  """One input's JSON value -> a tensor of `spec`; `QueryError` otherwise."""
  rank = spec.shape.rank
  want = _shape_text(spec.shape)
  shape, level = [], [value]
  for depth in range(rank):
    sizes = set()
    children = []
    for v in level:
      if isinstance(v, (np.ndarray, np.generic)):
        v = v.tolist()
      elif isinstance(v, tuple):
        v = list(v)
      if not isinstance(v, list):
        if depth:
          got = f"only {depth} level(s) of lists"
        elif isinstance(v, dict):
          got = "a JSON object"
        else:
          got = "the scalar " + _short(v)
        example = "[" * rank + _SAMPLES.get(spec.dtype, "...") + "]" * rank
        raise QueryError(f"input {name!r} must have shape {want} ({rank} "
                         f"level(s) of lists, e.g. {example}), got {got}")
      sizes.add(len(v))
      children.extend(v)
    if len(sizes) > 1:
      a, b = sorted(sizes)[:2]
      raise QueryError(f"input {name!r} is ragged: its lists at depth "
                       f"{depth + 1} have lengths {a} and {b}; shape {want} "
                       "needs equal lengths (pad the shorter ones)")
    shape.append(sizes.pop() if sizes else 0)
    level = children
  for size, fixed in zip(shape, spec.shape.as_list()):
    if fixed is not None and size != fixed:
      raise QueryError(f"input {name!r} has shape {shape}; expected {want}")
  level = [v.item() if isinstance(v, np.generic) else v for v in level]
  for leaf in level:
    _check_leaf(name, leaf, spec.dtype, want)
  return tf.reshape(tf.constant(level, spec.dtype), shape)


def _check_leaf(name: str, leaf, dtype: tf.DType, want: str) -> None:
  """`QueryError` unless one JSON value fits `dtype` exactly (integers in
  range, finite numbers, strings, booleans)."""
  if isinstance(leaf, (list, dict)):
    what = "list" if isinstance(leaf, list) else "JSON object"
    raise QueryError(f"input {name!r} must have shape {want}, got a {what} "
                     f"where a {dtype.name} value belongs")
  is_number = isinstance(leaf, (int, float)) and not isinstance(leaf, bool)
  if dtype == tf.string:
    ok = isinstance(leaf, (str, bytes))
    hint = "; quote it" if is_number else ""
  elif dtype == tf.bool:
    ok, hint = isinstance(leaf, bool), ""
  elif dtype.is_integer:
    ok = is_number and isinstance(leaf, int)
    hint = ""
    if ok and not dtype.min <= leaf <= dtype.max:
      raise QueryError(f"input {name!r}: {leaf} is outside {dtype.name} "
                       f"({dtype.min}..{dtype.max})")
  elif dtype.is_floating:
    ok = is_number and math.isfinite(leaf) and abs(leaf) <= dtype.max
    hint = f" (finite, |x| <= {dtype.max:.4g})" if is_number else ""
  else:
    raise QueryError(f"input {name!r} has dtype {dtype.name}, which the "
                     "query CLI cannot send")
  if not ok:
    raise QueryError(f"input {name!r} holds {dtype.name} values; got "
                     f"{_short(leaf)}{hint}")


def _short(value) -> str:
  """A value as JSON, cut to 40 characters."""
  text = json.dumps(value, default=repr)
  return text if len(text) <= 40 else text[:37] + "..."


def query(export_dir: str, request, signature: str = "serving_default"
          ) -> Dict[str, object]:
  """Calls the signature with `request` (the parsed JSON); returns numpy
  outputs.

  Raises:
    QueryError: see `load_signature` and `request_tensors`.
    tf.errors.InvalidArgumentError: the servable's own checks (k, empty
      batch...).
  """
  _, fn = load_signature(export_dir, signature)
  _, specs = fn.structured_input_signature
  inputs = request_tensors(request, specs, signature)
  return {k: v.numpy() for k, v in fn(**inputs).items()}


def _error_summary(message: str) -> str:
  """The assertion text of a graph error (its first line is generic)."""
  found = re.search(r"assertion failed: \[([^\]]+)\]", message)
  if found:
    return found.group(1)
  lines = [l.strip() for l in message.splitlines() if l.strip()]
  return next((l for l in lines if "error" not in l.lower()[:20]),
              lines[0] if lines else message)


def main(argv):
  """Prints the top-K of the `--json` request to the export `argv[1]`;
  returns the exit code: 0, or 2 with a one-line error (a bad request or
  export: `QueryError`, invalid JSON, or a request the servable's own checks
  refuse, e.g. a k outside 1..max_k)."""
  if len(argv) != 2 or FLAGS.json is None:
    raise app.UsageError("usage: python -m retrieval_tf.query EXPORT_DIR "
                         "--json '{...}'")
  try:
    request = json.loads(FLAGS.json)
  except (json.JSONDecodeError, RecursionError) as e:
    print(f"error: --json is not valid JSON: {e}", file=sys.stderr)
    return 2
  try:
    outputs = query(argv[1], request, FLAGS.signature)
  except QueryError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except tf.errors.InvalidArgumentError as e:
    print(f"error: the servable rejected the request: "
          f"{_error_summary(e.message)}", file=sys.stderr)
    return 2
  if "item_ids" not in outputs:
    for key, value in outputs.items():
      print(f"{key}: {value.tolist()}")
    return 0
  titles = _titles(latest_version_dir(argv[1]))
  for row, (ids, scores) in enumerate(zip(outputs["item_ids"],
                                          outputs["scores"])):
    print(f"request row {row}:")
    for rank, (item, score) in enumerate(zip(ids, scores), 1):
      item = item.decode()
      title = f"  {titles[item]}" if item in titles else ""
      print(f"  {rank:>3}. {item:<12} {score:8.4f}{title}")
  return 0


def run_main():
  """Defines the CLI's flags and runs `main`. The flags are not defined at
  import, so that a process may import this module next to others that
  define `--signature` (e.g. `retrieval_tf.serving.check`)."""
  flags.DEFINE_string("json", None,
                      "The request: {input name: batched value}.")
  flags.DEFINE_string("signature", "serving_default", "Signature to call.")
  app.run(main)


if __name__ == "__main__":
  run_main()
