"""Versioned, atomic SavedModel export, laid out the way TF Serving expects.

`export_servable(export_dir, module, signatures, model_card)` writes
`export_dir/<version>/` with `version` one above the highest existing numeric
version (1 for an empty folder). The SavedModel is written to a temporary
folder inside `export_dir` and renamed into place, so a failed export leaves
no version folder and an existing version is never overwritten. The model
card is written to `<version>/assets.extra/model_card.json` (TF Serving
ignores `assets.extra`; tools read it).
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import tempfile
from typing import Any, Dict, Mapping, Optional

from retrieval_tf.compat import keras, tf
from retrieval_tf.files import write_json_atomic

MODEL_CARD = os.path.join("assets.extra", "model_card.json")
_VERSION = re.compile(r"^\d+$")


def versions(export_dir: str) -> list:
  """The numeric version folders of `export_dir`, ascending."""
  if not os.path.isdir(export_dir):
    return []
  return sorted(int(n) for n in os.listdir(export_dir)
                if _VERSION.match(n) and
                os.path.isdir(os.path.join(export_dir, n)))


def latest_version_dir(export_dir: str) -> str:
  """`export_dir/<highest version>`; `export_dir` itself when it already is
  a SavedModel folder."""
  if os.path.exists(os.path.join(export_dir, "saved_model.pb")):
    return export_dir
  found = versions(export_dir)
  if not found:
    raise FileNotFoundError(f"{export_dir!r} holds no SavedModel version "
                            "folder (1/, 2/, ...)")
  return os.path.join(export_dir, str(found[-1]))


def library_versions() -> Dict[str, str]:
  import numpy  # pylint: disable=g-import-not-at-top
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top
  import retrieval_tf  # pylint: disable=g-import-not-at-top
  return {"python": platform.python_version(), "tensorflow": tf.__version__,
          "tf_keras": keras.__version__ if hasattr(keras, "__version__")
                      else _dist_version("tf-keras"),
          "tensorflow_recommenders": tfrs.__version__,
          "numpy": numpy.__version__, "retrieval_tf": retrieval_tf.__version__}


def _dist_version(name: str) -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version(name)
  except metadata.PackageNotFoundError:
    return "unknown"


def export_servable(export_dir: str, module: tf.Module,
                    signatures: Mapping[str, Any],
                    model_card: Optional[Mapping[str, Any]] = None) -> str:
  """Saves `module` with `signatures` as the next version; returns its path.

  Args:
    export_dir: the model's base folder (TF Serving's `--model_base_path`).
    module: the `tf.Module` holding every variable and asset the signatures
      use.
    signatures: `{name: concrete function}`; must contain `serving_default`.
    model_card: model, paper, config, dataset, metrics, index parameters...;
      library versions and the export date are added.
  """
  if "serving_default" not in signatures:
    raise ValueError("signatures must include 'serving_default'")
  os.makedirs(export_dir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=export_dir)
  try:
    tf.saved_model.save(module, tmp, signatures=dict(signatures))
    card = dict(model_card or {})
    card.setdefault("signatures", sorted(signatures))
    card["libraries"] = library_versions()
    card["exported_at"] = datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(os.path.join(tmp, MODEL_CARD), card)
    while True:
      version = (versions(export_dir) or [0])[-1] + 1
      target = os.path.join(export_dir, str(version))
      try:
        os.rename(tmp, target)  # fails if another export took the number
        return target
      except OSError:
        if not os.path.exists(target):
          raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
