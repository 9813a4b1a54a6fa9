"""Shared fixtures: where the real datasets are, and a clean TF state."""

import os
import pathlib

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
