"""Errors raised by the dataset loaders: every message names the file and, where there is one, the line."""

from __future__ import annotations

import os
from typing import Iterable, Optional


class DataError(ValueError):
  """A dataset file is missing, empty or malformed, or its ids are inconsistent."""


def require_files(data_dir: str, names: Iterable[str], dataset: str) -> None:
  """Raises `DataError` naming every expected file when any is missing."""
  names = list(names)
  if not os.path.isdir(data_dir):
    raise DataError(
        f"{dataset}: data_dir {data_dir!r} is not a directory; expected it to "
        f"contain {', '.join(names)}")
  missing = [n for n in names if not os.path.isfile(os.path.join(data_dir, n))]
  if missing:
    raise DataError(
        f"{dataset}: missing {', '.join(missing)} in {data_dir!r}; expected the "
        f"files {', '.join(names)}")


def malformed(path: str, line: Optional[int], what: str) -> DataError:
  """A `DataError` for a malformed record: `path:line: what`."""
  where = f"{path}:{line}" if line is not None else path
  return DataError(f"{where}: {what}")
