"""S3Rec-style Amazon sequence files (Zhou et al., CIKM'20 preparation).

`Beauty.txt`: one line per user, `user item1 item2 ...` in chronological
order; `Beauty_item2attributes.json`: `{"item": [attribute ids]}` (category
and brand ids, without names). Any file pair of this format loads, e.g. the
Toys and Games one. Event order within a user's line is the timestamp.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Optional

import numpy as np

from retrieval_tf.datasets.errors import DataError, malformed
from retrieval_tf.datasets.reading import read_lines, read_text, record_rows
from retrieval_tf.datasets.types import (Interactions, RecDataset, Vocabulary,
                                         pad_ragged)


def load_sequences(sequences_path: str,
                   attributes_path: Optional[str] = None,
                   name: str = "amazon") -> RecDataset:
  """Loads a `user item item ...` file (+ optional item2attributes.json).

  Both files are UTF-8 (a byte-order mark is accepted); blank lines are
  skipped, and a last line without a newline is warned about (a file cut
  mid-line loses its last user's later items).
  """
  if not os.path.isfile(sequences_path):
    raise DataError(f"{name}: sequence file {sequences_path!r} not found")
  stats = {}
  user_ids, users, items, first_line = [], [], [], {}
  for number, line in enumerate(read_lines(sequences_path, stats), 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) < 2:
      raise malformed(sequences_path, number,
                      "a user with no items (expected 'user item ...')")
    if fields[0] in first_line:
      raise malformed(sequences_path, number, f"user {fields[0]!r} already "
                      f"has line {first_line[fields[0]]}; expected one line "
                      "per user")
    first_line[fields[0]] = number
    user_ids.append(fields[0])
    users.append(np.full(len(fields) - 1, len(user_ids) - 1))
    items.append(fields[1:])
  user_vocab = Vocabulary(user_ids, name="user")
  flat_items = [x for row in items for x in row]
  item_vocab = Vocabulary.from_values(flat_items, name="item")
  positions = np.concatenate([np.arange(len(row)) for row in items])
  log = Interactions(np.concatenate(users), item_vocab.lookup(flat_items),
                     timestamp=positions)
  dataset = RecDataset(name, log, user_vocab, item_vocab, load_stats=stats)
  if attributes_path is not None:
    _attach_attributes(dataset, attributes_path)
  return dataset


def _attach_attributes(dataset: RecDataset, path: str) -> None:
  """Reads `{item: [attribute ids]}` into `item_features["attributes"]`;
  entries of items absent from the sequences count as skipped rows."""
  try:
    table = json.loads(read_text(path, line_based=False))
  except json.JSONDecodeError as e:
    raise malformed(path, e.lineno, f"invalid JSON: {e.msg}") from None
  except RecursionError:
    raise malformed(path, None, "invalid JSON: nested too deeply") from None
  if not isinstance(table, dict):
    raise malformed(path, None, "expected an object {item: [attribute ids]}")
  for item, values in table.items():
    if not isinstance(values, list) or not all(
        isinstance(v, int) and v >= 0 for v in values):
      raise malformed(path, None, f"item {item!r}: attributes must be a list "
                      "of non-negative integers")
  rows = [table.get(item, []) for item in dataset.items.ids]
  vocab = Vocabulary.from_values((v for row in rows for v in row),
                                 name="attributes")
  dataset.item_features["attributes"] = pad_ragged(
      [vocab.lookup(row) for row in rows])
  dataset.feature_vocabularies["attributes"] = vocab
  unused = sum(1 for item in table if item not in dataset.items)
  record_rows(dataset.load_stats, path, len(table) - unused, unused)


def load_amazon(data_dir: str, name: Optional[str] = None) -> RecDataset:
  """The one `*.txt` sequence file of a folder and its
  `*_item2attributes.json`, e.g. `amazon-beauty/`."""
  if not os.path.isdir(data_dir):
    raise DataError(f"amazon: {data_dir!r} is not a folder; expected a "
                    "'<Name>.txt' sequence file and optionally "
                    "'<Name>_item2attributes.json' in it")
  texts = sorted(glob.glob(os.path.join(data_dir, "*.txt")))
  if len(texts) != 1:
    raise DataError(f"amazon: expected exactly one '<Name>.txt' sequence "
                    f"file in {data_dir!r}, found {len(texts)}")
  stem = os.path.splitext(os.path.basename(texts[0]))[0]
  attributes = os.path.join(data_dir, f"{stem}_item2attributes.json")
  return load_sequences(
      texts[0], attributes if os.path.isfile(attributes) else None,
      name=name or f"amazon-{stem.lower()}")
