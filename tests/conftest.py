"""Shared fixtures: where the real datasets are, a clean TF state, how
the CLI tests run a command as a user does, and a Keras file round trip."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_root() -> pathlib.Path:
  """`$RETRIEVAL_TF_DATA`, else `../shared/data` beside the repository."""
  env = os.environ.get("RETRIEVAL_TF_DATA")
  return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> pathlib.Path:
  """The real-data folder; skips when absent, but fails under CI=true."""
  root = shared_data_root()
  if not root.is_dir():
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
      pytest.fail(f"CI=true but the real datasets are missing at {root}")
    pytest.skip(f"real datasets not found at {root} (set RETRIEVAL_TF_DATA)")
  return root


def dataset_dir(data_root: pathlib.Path, name: str) -> pathlib.Path:
  path = data_root / name
  if not path.is_dir():
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
      pytest.fail(f"CI=true but dataset folder {path} is missing")
    pytest.skip(f"dataset folder {path} not found")
  return path


def run_module(module: str, *args: str, timeout: float = 900
               ) -> subprocess.CompletedProcess:
  """`python -m module args...` in a fresh process from the repository root,
  output captured (the CLI tests' way of running a command)."""
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  return subprocess.run([sys.executable, "-m", module, *args],
                        capture_output=True, text=True, cwd=REPO_ROOT,
                        env=env, timeout=timeout)


def read_metrics(output_dir) -> dict:
  """`output_dir/metrics.json` of a finished run."""
  return json.loads((pathlib.Path(output_dir) / "metrics.json").read_text())


def keras_file_round_trip(model, path, model_class):
  """`model.save(path)` + `keras.models.load_model(path)`: the loaded model,
  checked to be a `model_class` with `model`'s config."""
  from retrieval_tf.compat import keras
  model.save(str(path))
  loaded = keras.models.load_model(str(path))
  assert isinstance(loaded, model_class)
  assert loaded.get_config() == model.get_config()
  return loaded


def saved_model_matches(trained):
  """`tf.saved_model.load(trained["root"] / "dir")` (the SavedModel written
  right after fit), checked to give `trained["model"]`'s outputs on the
  first training batch; returns the loaded object."""
  import numpy as np
  from retrieval_tf.compat import tf
  model = trained["model"]
  loaded = tf.saved_model.load(str(trained["root"] / "dir"))
  batch = next(iter(trained["train"]))
  np.testing.assert_allclose(loaded(batch, training=False).numpy(),
                             model(batch, training=False).numpy(),
                             atol=1e-6)
  return loaded
