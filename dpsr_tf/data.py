"""DPSR's training and evaluation data from the shared search datasets.

A `SearchTask` holds what training and Table 2's evaluation need:

* the item side: original ids, the text the item tower tokenizes (title,
  plus description on CrowdFlower), categorical columns and their sizes;
* `train`: positive examples (`query` string, `item_id`, and for the
  synthetic world the user's profile `user_<field>` and recent browsing
  `history`, Table 2's -p / -h), feature names as in
  `retrieval_tf.data.pipeline`;
* `test`: held-out positives (Top-k among random items);
* `judged`: human (or ground-truth) labelled pairs of the test queries (AUC);
* `unclicked`: per training example, items shown for its query but not
  chosen (DSSM's negatives).

Protocols (splits are query-disjoint, `retrieval_tf.datasets.splits.
query_disjoint_split`, so test queries are never trained on):

* `crowdflower`: positives are judgments with median relevance >= 3; AUC
  labels >= 3 relevant, <= 2 not; unclicked = the
  query's judged items with median <= 2.
* `bestbuy`: positives are the derived grade-3 pairs (all category facets
  match), at most `MAX_POSITIVES_PER_QUERY` per query, the most popular
  first; AUC labels grade 3 vs lower; unclicked = grade <= 2.
* `synthetic`: positives are search clicks; profile (gender, age, power)
  and the last `history_length` browsing events before the click; AUC on
  the judged pairs with grade >= 2 relevant; unclicked = judged items of
  grade <= 1; `world` kept for P_good and recall@100 against its
  ground-truth relevance.

`load_supervision` reads a human supervision file (Sec. 4.5).
`training_dataset` turns training examples into the `tf.data` batches
`DPSRModel.fit` takes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.datasets import (bestbuy, crowdflower, reading, splits,
                                   synthetic)
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.types import Vocabulary
from retrieval_tf.text import Tokenizer

from dpsr_tf.model import DPSRModel, check_batch_size

DATASETS = {"synthetic": False, "crowdflower": True, "bestbuy": True}
MAX_POSITIVES_PER_QUERY = 50
UNCLICKED_WIDTH = 4


@dataclasses.dataclass
class SearchTask:
  """A search task: the catalogue and its train / test / judged rows (see
  the module docstring). `train` and `test` map feature names (`query`,
  `item_id`, `user_<field>`, `history`) to arrays of one row per example;
  `judged` holds `query`, `item_id` and a bool `label`."""
  name: str
  item_ids: np.ndarray  # object [N]
  item_text: np.ndarray  # object [N]
  item_columns: Dict[str, np.ndarray]  # int32 [N], -1 = absent
  item_feature_sizes: Dict[str, int]
  train: Dict[str, np.ndarray]
  test: Dict[str, np.ndarray]
  judged: Dict[str, np.ndarray]  # query (object), item, label (bool)
  unclicked: np.ndarray  # int32 [len(train), UNCLICKED_WIDTH], -1 padded
  user_vocabularies: Dict[str, List[str]] = dataclasses.field(
      default_factory=dict)
  item_popularity: Optional[np.ndarray] = None
  world: Optional[synthetic.SyntheticWorld] = None
  test_query_ids: Optional[np.ndarray] = None  # synthetic: world query ids
  item_titles: Optional[np.ndarray] = None  # object [N]: titles alone

  @property
  def num_items(self) -> int:
    return len(self.item_ids)

  @property
  def user_feature_sizes(self) -> Dict[str, int]:
    return {k: len(v) for k, v in self.user_vocabularies.items()}


def load_task(name: str, data_dir: Optional[str] = None, seed: int = 0,
              synthetic_config: Optional[synthetic.SyntheticConfig] = None,
              history_length: int = 20, test_fraction: float = 0.2
              ) -> SearchTask:
  """Loads a `SearchTask` (protocols in the module docstring).

  Args:
    name: "synthetic", "crowdflower" or "bestbuy" (`DATASETS`).
    data_dir: the real dataset's folder (unused for "synthetic").
    seed: the query-disjoint split's (and the synthetic world's) seed.
    synthetic_config: the world to generate (default: `SyntheticConfig(
      seed=seed)`).
    history_length: DPSR-h's browsing events per example (synthetic).
    test_fraction: share of the queries held out.

  Returns:
    The task; e.g. `load_task("synthetic").train["item_id"]`.

  Raises:
    DataError: an unknown name or unreadable data.
  """
  if name == "crowdflower":
    return _judged_task(crowdflower.load_crowdflower(data_dir), seed,
                        test_fraction, relevant=3)
  if name == "bestbuy":
    return _judged_task(bestbuy.load_bestbuy(data_dir), seed, test_fraction,
                        relevant=3, columns=("brand", "category_lvl0",
                                             "category_lvl1",
                                             "category_lvl2"),
                        max_positives=MAX_POSITIVES_PER_QUERY)
  if name == "synthetic":
    world = synthetic.generate(synthetic_config or
                               synthetic.SyntheticConfig(seed=seed))
    return _synthetic_task(world, seed, test_fraction, history_length)
  raise DataError(f"unknown dataset {name!r}; choose one of "
                  f"{', '.join(sorted(DATASETS))}")


def _unclicked(queries: np.ndarray, pool_query: np.ndarray,
               pool_item: np.ndarray, seed: int) -> np.ndarray:
  """Up to UNCLICKED_WIDTH random items of each row's query from a pool."""
  rng = np.random.default_rng(seed)
  by_query: Dict[str, np.ndarray] = {}
  order = np.argsort(pool_query, kind="stable")
  keys, starts = np.unique(pool_query[order], return_index=True)
  for key, part in zip(keys, np.split(pool_item[order], starts[1:])):
    by_query[key] = part
  out = np.full((len(queries), UNCLICKED_WIDTH), -1, np.int32)
  for row, q in enumerate(queries):
    pool = by_query.get(q)
    if pool is not None and len(pool):
      pick = rng.choice(pool, min(UNCLICKED_WIDTH, len(pool)), replace=False)
      out[row, :len(pick)] = pick
  return out


def _judged_task(ds, seed: int, test_fraction: float, relevant: float,
                 columns=(), max_positives: Optional[int] = None
                 ) -> SearchTask:
  j = ds.judgments
  query = ds.queries.ids[j.query]
  train_rows, test_rows = splits.query_disjoint_split(query, test_fraction,
                                                      seed)
  positive = j.grade >= relevant
  popularity = ds.item_features.get("popularity", np.zeros(ds.num_items))
  # At most `max_positives` positives per query, the most popular first.
  pos_order = np.lexsort((-popularity[j.item], j.query))
  pos_rank = np.zeros(len(j), np.int64)
  sel = pos_order[positive[pos_order]]
  first = np.searchsorted(j.query[sel], j.query[sel], side="left")
  pos_rank[sel] = np.arange(len(sel)) - first
  keep = positive & (pos_rank < (max_positives or len(j)))
  train = {"query": query[train_rows & keep].astype(object),
           "item_id": j.item[train_rows & keep].astype(np.int32)}
  test = {"query": query[test_rows & keep].astype(object),
          "item_id": j.item[test_rows & keep].astype(np.int32)}
  judged = {"query": query[test_rows].astype(object),
            "item_id": j.item[test_rows].astype(np.int32),
            "label": positive[test_rows]}
  text = ds.item_titles.astype(str)
  if "description" in ds.item_text:
    text = np.char.add(np.char.add(text, " "),
                       ds.item_text["description"].astype(str))
  item_columns = {c: ds.item_features[c].astype(np.int32) for c in columns}
  sizes = {c: len(ds.feature_vocabularies[c]) for c in columns}
  negative = train_rows & ~positive
  unclicked = _unclicked(train["query"], query[negative], j.item[negative],
                         seed)
  return SearchTask(ds.name, ds.items.ids, text.astype(object), item_columns,
                    sizes, train, test, judged, unclicked,
                    item_popularity=(popularity if popularity.any() else
                                     np.bincount(train["item_id"],
                                                 minlength=ds.num_items)),
                    item_titles=ds.item_titles.astype(object))


SYNTHETIC_ITEM_COLUMNS = ("top_category", "mid_category", "leaf_category",
                          "brand", "shop", "price_bucket", "colour", "size")
USER_COLUMNS = ("gender", "age", "power")


def _synthetic_task(world: synthetic.SyntheticWorld, seed: int,
                    test_fraction: float, history_length: int
                    ) -> SearchTask:
  ds = world.to_search_dataset()
  clicks = ds.interactions
  train_rows, test_rows = splits.query_disjoint_split(clicks.query,
                                                      test_fraction, seed)
  history = browsing_history(world, clicks.user, clicks.timestamp,
                             history_length)
  examples = {"query": clicks.query.astype(object),
              "item_id": clicks.item.astype(np.int32),
              "history": history}
  for c in USER_COLUMNS:
    examples[f"user_{c}"] = getattr(world, f"user_{c}")[clicks.user].astype(
        np.int32)
  train = {k: v[train_rows] for k, v in examples.items()}
  test = {k: v[test_rows] for k, v in examples.items()}
  test_query_ids = world.search_query[world.click_search][test_rows]
  test["query_id"] = test_query_ids.astype(np.int32)
  judged_query = ds.queries.ids[ds.judgments.query]
  test_queries = set(np.unique(test["query"]))
  on_test = np.asarray([q in test_queries for q in judged_query])
  judged = {"query": judged_query[on_test].astype(object),
            "item_id": ds.judgments.item[on_test],
            "label": ds.judgments.grade[on_test] >= 2}
  low = ds.judgments.grade <= 1
  unclicked = _unclicked(train["query"], judged_query[low],
                         ds.judgments.item[low], seed)
  vocabs = ds.feature_vocabularies
  return SearchTask(
      "synthetic", ds.items.ids, ds.item_titles.astype(object),
      {c: ds.item_features[c].astype(np.int32)
       for c in SYNTHETIC_ITEM_COLUMNS},
      {c: len(vocabs[c]) for c in SYNTHETIC_ITEM_COLUMNS},
      train, test, judged, unclicked,
      user_vocabularies={c: list(vocabs[c].ids) for c in USER_COLUMNS},
      item_popularity=world.item_popularity, world=world,
      test_query_ids=test_query_ids, item_titles=ds.item_titles.astype(object))


def browsing_history(world: synthetic.SyntheticWorld, users: np.ndarray,
                     times: np.ndarray, length: int) -> np.ndarray:
  """The last `length` browsing events of each user strictly before each
  time, int32 `[n, length]`, right-aligned, -1 padded (DPSR-h's input)."""
  key = world.event_user.astype(np.int64) * (1 << 40) + world.event_time
  order = np.argsort(key, kind="stable")
  key, items = key[order], world.event_item[order]
  user_start = np.searchsorted(key, users.astype(np.int64) * (1 << 40))
  end = np.searchsorted(key, users.astype(np.int64) * (1 << 40) + times,
                        side="left")
  index = end[:, None] - length + np.arange(length)[None, :]
  valid = index >= user_start[:, None]
  return np.where(valid, items[np.clip(index, 0, len(items) - 1)],
                  -1).astype(np.int32)


def load_supervision(path: str, items: Vocabulary
                     ) -> Dict[str, np.ndarray]:
  """Reads a human supervision file (Sec. 4.5): one pair per line,
  `query<TAB>item_id<TAB>label` with label 1 (an extra positive) or 0 (a
  negative for that query); blank lines and `#` comments are skipped.

  Returns `{"query", "item_id", "label"}`. Raises `DataError` listing the line
  numbers of malformed lines and of unknown item ids.
  """
  if not os.path.isfile(path):
    raise DataError(f"supervision file {path!r} does not exist")
  query, item, label, unknown, malformed = [], [], [], [], []
  for number, line in enumerate(reading.read_text(path).split("\n"),
                                start=1):
    line = line.rstrip("\r")
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    parts = line.split("\t")
    if len(parts) != 3 or parts[2].strip() not in ("0", "1") or not parts[
        0].strip():
      malformed.append(number)
      continue
    if parts[1].strip() not in items:
      unknown.append((number, parts[1].strip()))
      continue
    query.append(parts[0].strip())
    item.append(items.index(parts[1].strip()))
    label.append(parts[2].strip() == "1")
  if malformed:
    raise DataError(
        f"{path}: malformed line(s) {_lines(malformed)}: expected "
        "query<TAB>item_id<TAB>label with label 0 or 1")
  if unknown:
    shown = ", ".join(f"line {n}: {i!r}" for n, i in unknown[:10])
    raise DataError(f"{path}: {len(unknown)} unknown item id(s) ({shown}"
                    f"{', ...' if len(unknown) > 10 else ''})")
  if not query:
    raise DataError(f"{path}: no supervision pairs")
  return {"query": np.asarray(query, object),
          "item_id": np.asarray(item, np.int32), "label": np.asarray(label)}


def _lines(numbers: List[int]) -> str:
  return ", ".join(str(n) for n in numbers[:10]) + (
      ", ..." if len(numbers) > 10 else "")


def _append_positives(train: Dict[str, np.ndarray], query: np.ndarray,
                      item: np.ndarray) -> Dict[str, np.ndarray]:
  """`train` with (query, item) positives appended; their other columns
  (user profile, history, hard negatives) are -1: no user, nothing
  labelled."""
  extra = {"query": np.asarray(query, object),
           "item_id": np.asarray(item, np.int32)}
  n = len(extra["item_id"])
  for key, value in train.items():
    if key not in extra:
      extra[key] = np.full((n,) + value.shape[1:], -1, value.dtype)
  return {k: np.concatenate([v, extra[k].astype(v.dtype)])
          for k, v in train.items()}


def add_title_positives(task: SearchTask, train: Dict[str, np.ndarray]
                        ) -> Dict[str, np.ndarray]:
  """Catalogue self-supervision (not in the paper): `train` plus one
  positive per item whose query is the item's title (items without a
  title are skipped). It teaches the towers the catalogue's vocabulary
  when there are too few training queries to learn it from (CrowdFlower:
  209), as the paper's human supervision pairs (Sec. 4.5) teach cases the
  clicks miss."""
  if task.item_titles is None:
    raise ValueError(f"the {task.name} task has no item titles")
  titles = np.asarray([" ".join(str(t).split()) for t in task.item_titles],
                      object)
  keep = np.flatnonzero(titles != "")
  return _append_positives(train, titles[keep], keep)


def add_supervision(task: SearchTask, pairs: Dict[str, np.ndarray],
                    width: int = UNCLICKED_WIDTH, seed: int = 0) -> Dict[
                        str, np.ndarray]:
  """Training examples with the supervision: positives appended (no user:
  profile -1, empty history) and `hard_negatives [n, width]`: for each
  example, up to `width` negatives labelled for its (normalised) query."""
  good = pairs["label"]
  train = _append_positives(task.train, pairs["query"][good],
                            pairs["item_id"][good])
  norm = np.asarray([splits.normalize_query(q) for q in train["query"]],
                    object)
  bad_query = np.asarray([splits.normalize_query(q)
                          for q in pairs["query"][~good]], object)
  train["hard_negatives"] = _unclicked(norm, bad_query,
                                       pairs["item_id"][~good], seed)[:, :width]
  return train


def model_features(config: Mapping[str, Any],
                   examples: Mapping[str, np.ndarray]
                   ) -> Dict[str, np.ndarray]:
  """The columns of `examples` a model of `config` (`DPSRModel.get_config()`)
  reads: `query`, `item_id`, `hard_negatives` when present, `user_<field>`
  of its profile fields (-p, -h) and `history` (-h)."""
  keep = {"query", "item_id", "hard_negatives"}
  keep |= {f"user_{name}" for name in config.get("user_feature_sizes") or {}}
  if config.get("personalization") == "history":
    keep.add("history")
  return {k: v for k, v in examples.items() if k in keep}


def training_dataset(examples: Mapping[str, np.ndarray],
                     model: Union[DPSRModel, Mapping[str, Any]],
                     batch_size: int, seed: int = 0, repeat: bool = True,
                     input_context: Optional[tf.distribute.InputContext] = None
                     ) -> tf.data.Dataset:
  """Shuffled training batches for `DPSRModel.fit` (Algorithm 1's input).

  Args:
    examples: per-example arrays (`SearchTask.train`, or `add_supervision`
      / `add_title_positives` of it): `query` (strings), `item_id` (int,
      the positive), and as the model needs them `user_<field>`, `history`
      `[n, L]` (-1 padded) and `hard_negatives` `[n, H]` (-1 padded).
    model: the `DPSRModel` (or its `get_config()`) the batches are for: its
      tokenizer turns `query` into `query_tokens` (the same ids as in the
      model and the servable) and its variant picks the columns.
    batch_size: examples per batch (per replica under `input_context`'s
      strategy); the last partial batch is dropped, so every batch has it.
    seed: shuffle seed. repeat: repeat forever (use `steps_per_epoch`).
    input_context: `tf.distribute.InputContext` to shard by (the CLI's
      runner passes it); None: one pipeline.

  Returns:
    A `tf.data.Dataset` of dicts: `query_tokens` ragged int64 `[B, None]`,
    `item_id` `[B]` and the model's other columns, batched `[B, ...]`.

  Raises:
    ValueError: `batch_size` below what the hinge loss's batch negatives
      need (`check_batch_size`, named with the fix), missing or ragged
      columns, item ids outside the model's catalogue, or `loss="dssm"`
      without `hard_negatives`.

      ds = training_dataset(task.train, model, batch_size=64)
      model.fit(ds, epochs=2, steps_per_epoch=len(task.train["item_id"]) // 64)
  """
  config = model.get_config() if isinstance(model, DPSRModel) else dict(model)
  context = input_context or tf.distribute.InputContext()
  per_replica = context.get_per_replica_batch_size(int(batch_size))
  if per_replica < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if config.get("loss", "hinge") == "hinge":
    check_batch_size(per_replica, config["num_negatives"], config["alpha"])
  for key in ("query", "item_id"):
    if key not in examples:
      raise ValueError(f"examples need {key!r}; got {sorted(examples)}")
  columns = model_features(config, examples)
  needed = {f"user_{n}" for n in config.get("user_feature_sizes") or {}}
  if config.get("personalization") == "history":
    needed.add("history")
  if config.get("loss") == "dssm":
    needed.add("hard_negatives")
  missing = sorted(needed - set(columns))
  if missing:
    raise ValueError(f"examples lack {missing}, which this model reads")
  n = len(columns["item_id"])
  if n < per_replica:
    raise ValueError(f"{n} examples make no batch of {per_replica}; use a "
                     "smaller batch_size")
  for key, value in columns.items():
    if len(value) != n:
      raise ValueError(f"examples[{key!r}] has {len(value)} rows, "
                       f"item_id {n}")
  items = np.asarray(columns["item_id"])
  if items.min() < 0 or items.max() >= config["num_items"]:
    raise ValueError(f"examples['item_id'] must lie in [0, "
                     f"{config['num_items']}), got [{items.min()}, "
                     f"{items.max()}]")
  tokenizer = Tokenizer.from_config(config["tokenizer"])
  rows = dict(columns, query=np.asarray(columns["query"]).astype(str))
  ds = tf.data.Dataset.from_tensor_slices(rows)
  ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
  ds = ds.shuffle(min(n, 100_000), seed=seed)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(per_replica, drop_remainder=True)

  def tokenize(batch):
    batch = dict(batch)
    batch["query_tokens"] = tokenizer(batch.pop("query"))
    return batch

  return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
