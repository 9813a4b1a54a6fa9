"""Versioned, atomic SavedModel export, laid out the way TF Serving expects.

`export_servable(export_dir, module, signatures, model_card)` writes
`export_dir/<version>/` with `version` one above the highest existing numeric
version (1 for an empty folder). The SavedModel is written to a temporary
folder inside `export_dir` and renamed into place, so a failed export leaves
no version folder and an existing version is never overwritten. The model
card is written to `<version>/assets.extra/model_card.json` (TF Serving
ignores `assets.extra`; tools read it).

The temporary folder is named `.tmp-export-<pid>@<host>.<random>`. An export
killed before its rename leaves it behind; the next export into the same
folder removes such leftovers: those of this host whose process is gone, and
any (another host's, an older naming's, a reused pid's) untouched for
`STALE_AFTER_S` (a day). A live export on this host is never removed, nor
one on another host that is younger than a day.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import re
import shutil
import socket
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional

from retrieval_tf.compat import keras, tf
from retrieval_tf.files import write_json_atomic

MODEL_CARD = os.path.join("assets.extra", "model_card.json")
_VERSION = re.compile(r"^\d+$")
_TMP = ".tmp-export-"
_TMP_OWNER = re.compile(
    r"^\.tmp-export-(?P<pid>\d+)@(?P<host>.+)\.[^.]+$")
STALE_AFTER_S = 24 * 3600


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


def _host() -> str:
  """This machine's name, reduced to characters safe in a folder name."""
  return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())


def _temp_prefix() -> str:
  """`.tmp-export-<pid>@<host>.`: the owner of a temporary export folder."""
  return f"{_TMP}{os.getpid()}@{_host()}."


def _running(pid: int) -> bool:
  """Whether process `pid` exists on this machine."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def remove_stale_temp_dirs(export_dir: str) -> List[str]:
  """Removes the temporary folders that killed exports left in `export_dir`
  (see the module docstring for which); returns their paths."""
  removed = []
  for name in sorted(os.listdir(export_dir)):
    path = os.path.join(export_dir, name)
    if not name.startswith(_TMP) or not os.path.isdir(path):
      continue
    owner = _TMP_OWNER.match(name)
    dead = (owner is not None and owner["host"] == _host()
            and not _running(int(owner["pid"])))
    try:
      old = time.time() - os.path.getmtime(path) > STALE_AFTER_S
    except OSError:  # renamed or removed meanwhile
      continue
    if dead or old:
      shutil.rmtree(path, ignore_errors=True)
      logging.getLogger(__name__).info(
          "removed %s, left by an export that did not finish", path)
      removed.append(path)
  return removed


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
  remove_stale_temp_dirs(export_dir)
  tmp = tempfile.mkdtemp(prefix=_temp_prefix(), dir=export_dir)
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
