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
import os
import re
import sys
from typing import Dict

from absl import app
from absl import flags

from retrieval_tf.compat import tf
from retrieval_tf.export import latest_version_dir

flags.DEFINE_string("json", None, "The request: {input name: batched value}.")
flags.DEFINE_string("signature", "serving_default", "Signature to call.")
FLAGS = flags.FLAGS


def _titles(path: str) -> Dict[str, str]:
  ids = os.path.join(path, "assets", "items.txt")
  titles = os.path.join(path, "assets", "item_titles.txt")
  if not (os.path.exists(ids) and os.path.exists(titles)):
    return {}
  with open(ids, encoding="utf-8") as a, open(titles, encoding="utf-8") as b:
    return dict(zip(a.read().splitlines(), b.read().splitlines()))


def query(export_dir: str, request: Dict, signature: str = "serving_default"
          ) -> Dict[str, object]:
  """Calls the signature with `request`; returns numpy outputs."""
  path = latest_version_dir(export_dir)
  loaded = tf.saved_model.load(path)
  if signature not in loaded.signatures:
    raise KeyError(f"no signature {signature!r}; the export has "
                   f"{', '.join(sorted(loaded.signatures))}")
  fn = loaded.signatures[signature]
  _, specs = fn.structured_input_signature
  missing = sorted(set(specs) - set(request))
  if missing:
    raise KeyError(f"the request lacks input(s) {', '.join(missing)}; "
                   f"{signature} takes {', '.join(sorted(specs))}")
  inputs = {name: tf.constant(request[name], dtype=spec.dtype)
            for name, spec in specs.items()}
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
  if len(argv) != 2 or FLAGS.json is None:
    raise app.UsageError("usage: python -m retrieval_tf.query EXPORT_DIR "
                         "--json '{...}'")
  try:
    request = json.loads(FLAGS.json)
  except json.JSONDecodeError as e:
    print(f"error: --json is not valid JSON: {e}", file=sys.stderr)
    return 2
  try:
    outputs = query(argv[1], request, FLAGS.signature)
  except (KeyError, FileNotFoundError, ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except tf.errors.InvalidArgumentError as e:
    print(f"error: the servable rejected the request: "
          f"{_error_summary(e.message)}", file=sys.stderr)
    return 1
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


if __name__ == "__main__":
  app.run(main)
