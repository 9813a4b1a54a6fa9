"""PDN's one servable: raw request -> greedy path retrieval (Eq. 14) ->
original item ids.

`serving_default(user_id [B] string, user_<field> [B] string,
history [B, H] string, history_rating [B, H] float32 (models that read
ratings only), k [B] int32) -> {item_ids [B, k] string, scores [B, k]}`.

`history` is the user's interactions, newest LAST, padded on the left with
"" (as `raw_requests` builds it); `history_rating` is aligned with it (0:
unknown). Ids map to indices through vocabulary assets; unknown user ids,
profile values and history items map to -1 (zero embeddings / masked out),
and the retrieval's fallback pool answers users with nothing usable (see
`pdn_tf.retrieval`): never an error. `k` follows the k rule of every
servable (docs/serving.md, "k"): equal across a request's rows, within
`1..max_k`, where max_k is the size of the fallback pool (`pool_size`,
capped at the catalogue; in the model card), which every request can fill;
any other k is refused with a message naming it. An answer has exactly k
columns: slots beyond the eligible items (the request's own history items
are never answered) hold item id "" with score -inf. An empty batch is an
error raised inside the graph.

The servable holds TrigNet with its embedding fields, the Direct Net user
tower, the static item vectors q_i and the I2I index tensors; SimNet (whose
scores are in the index), the Bias Net (removed at serving, Sec. 4.5) and
the training tables are not part of it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from retrieval_tf import export as export_lib
from retrieval_tf.compat import tf
from retrieval_tf.data.history import HistoryIndex
from retrieval_tf.datasets.types import Interactions, RecDataset
from retrieval_tf.serving.assets import (id_table, index_table, k_card,
                                         k_range, non_empty, request_k,
                                         write_vocabulary)

from pdn_tf.model import PDNModel
from pdn_tf.retrieval import PDNRetriever, build_retriever, history_ratings

PAPER = ("Li et al., Path-based Deep Network for Candidate Item Matching in "
         "Recommenders (PDN), SIGIR'21")


class PDNServable(tf.Module):
  """Vocabulary assets around a `PDNRetriever`."""

  def __init__(self, retriever: PDNRetriever,
               vocabularies: Mapping[str, str],
               extra_assets: Sequence[str] = ()):
    super().__init__()
    self.retriever = retriever
    self.k_range = k_range(retriever.max_k, retriever.max_k,
                           "the candidate pool (pool_size)")
    self.max_k = self.k_range.max_k
    self.fields = list(retriever.user_feature_names)
    self.assets = {name: tf.saved_model.Asset(path)
                   for name, path in vocabularies.items()}
    self.to_index = {name: index_table(asset)
                     for name, asset in self.assets.items()}
    self.extra_assets = [tf.saved_model.Asset(p) for p in extra_assets]
    self.item_ids = id_table(self.assets["items"])
    spec = {"history": tf.TensorSpec([None, None], tf.string, "history"),
            "user_id": tf.TensorSpec([None], tf.string, "user_id")}
    if retriever.use_rating:
      spec["history_rating"] = tf.TensorSpec([None, None], tf.float32,
                                             "history_rating")
    spec.update({f"user_{f}": tf.TensorSpec([None], tf.string, f"user_{f}")
                 for f in self.fields})
    self.input_spec = spec
    self.serve = tf.function(
        self._serve, input_signature=[spec, tf.TensorSpec([None], tf.int32,
                                                          "k")])

  def _lookup(self, name: str, values: tf.Tensor) -> tf.Tensor:
    return tf.cast(self.to_index[name].lookup(values), tf.int32)

  def _serve(self, request, k):
    request = non_empty(dict(request, k=k))
    k = request.pop("k")
    batch = tf.shape(request["history"])[0]
    checks = []
    if "history_rating" in request:
      checks.append(tf.debugging.assert_equal(
          tf.shape(request["history_rating"]), tf.shape(request["history"]),
          message="history_rating must have the shape of history"))
    with tf.control_dependencies(checks):
      k0 = request_k(k, batch, self.k_range)
    features = {"user_id": self._lookup("users", request["user_id"]),
                "history": self._lookup("items", request["history"])}
    for f in self.fields:
      features[f"user_{f}"] = self._lookup(f, request[f"user_{f}"])
    if "history_rating" in request:
      features["history_rating"] = request["history_rating"]
    out = self.retriever.retrieve(features, k0)
    return {"item_ids": self.item_ids.lookup(tf.cast(out["ids"], tf.int64)),
            "scores": out["scores"]}


def raw_requests(dataset: RecDataset, users: Sequence[int],
                 history_length: int, with_rating: bool = True
                 ) -> Dict[str, list]:
  """The `serving_default` request (without `k`) of these user indices:
  original ids, each user's last `history_length` training interactions
  (newest last, padded with "" on the left), their ratings, the profile."""
  users = np.asarray(users, np.int64)
  log: Interactions = dataset.interactions
  index = HistoryIndex.from_interactions(log, dataset.num_users)
  ratings = history_ratings(log)
  starts, ends = index.user_history(users)
  starts = np.maximum(starts, ends - history_length)
  width = int(max(1, (ends - starts).max(initial=0)))
  history, history_rating = [], []
  for start, end in zip(starts, ends):
    pad = width - (end - start)
    history.append([""] * pad + [str(dataset.items.ids[i])
                                 for i in index.items[start:end]])
    history_rating.append([0.0] * pad + [float(r)
                                         for r in ratings[start:end]])
  request = {"history": history,
             "user_id": [str(dataset.users.ids[u]) for u in users]}
  if with_rating:
    request["history_rating"] = history_rating
  for field, values in dataset.user_features.items():
    if field in dataset.feature_vocabularies:
      vocab = dataset.feature_vocabularies[field]
      request[f"user_{field}"] = [str(vocab.ids[v]) for v in values[users]]
  return request


def export_pdn(model: Union[PDNModel, PDNRetriever], export_dir: str,
               dataset: RecDataset,
               model_card: Optional[Mapping[str, Any]] = None,
               **retriever_args) -> str:
  """Exports the servable (raw request -> greedy path retrieval -> item
  ids) as the next version of `export_dir` (atomic, `retrieval_tf.export`).

      path = pdn_tf.export_pdn(model, "exports/pdn", split.dataset)
      served = tf.saved_model.load(path).signatures["serving_default"]
      served(user_id=tf.constant(["1"]), history=tf.constant([["5", "9"]]),
             k=tf.constant([10]), ...)["item_ids"]  # [1, 10] item ids

  Args:
    model: a trained `PDNModel` (its retriever is built with
      `build_retriever(model, dataset, **retriever_args)`) or a
      `PDNRetriever`.
    export_dir: the servable's base folder (versions 1, 2, ... inside).
    dataset: the training `RecDataset` (vocabularies: user and item ids,
      profile values; the example requests).
    model_card: extra entries of the exported model card.
    **retriever_args: `build_retriever`'s keyword arguments (a model only).

  Returns:
    The exported version folder.
  """
  if isinstance(model, PDNModel):
    retriever = build_retriever(model, dataset, **retriever_args)
  elif isinstance(model, PDNRetriever):
    if retriever_args:
      raise ValueError(f"export_pdn: {sorted(retriever_args)} only apply "
                       "to a PDNModel, the retriever is already built")
    retriever = model
  else:
    raise TypeError(f"export_pdn: model must be a PDNModel or a "
                    f"PDNRetriever, got {type(model).__name__}")
  if dataset.num_items != retriever.num_items:
    raise ValueError(f"dataset has {dataset.num_items} items, the retriever "
                     f"{retriever.num_items}")
  folder = tempfile.mkdtemp(prefix="pdn_vocab_")
  vocabularies = {
      "users": write_vocabulary(folder, "users", dataset.users.ids),
      "items": write_vocabulary(folder, "items", dataset.items.ids)}
  for field in retriever.user_feature_names:
    vocabularies[field] = write_vocabulary(
        folder, field, dataset.feature_vocabularies[field].ids)
  extra = []
  if dataset.item_titles is not None:
    extra.append(write_vocabulary(
        folder, "item_titles",
        [" ".join(str(t).split()) for t in dataset.item_titles]))
  servable = PDNServable(retriever, vocabularies, extra_assets=extra)
  example = raw_requests(dataset, [0, 1], min(retriever.history_length, 5),
                         with_rating=retriever.use_rating)
  example_k = [min(10, servable.max_k)] * 2
  card = {"model": "pdn", "paper": PAPER,
          "retrieval": dict(retriever.parameters(), max_k=servable.max_k),
          "cold_start": ("unknown ids embed to zeros; the pool of the "
                         f"{servable.max_k} most popular items is always a "
                         "candidate set, ranked by the Direct Net when no "
                         "path reaches them"),
          "vocabulary_assets": sorted(os.path.basename(p) for p in
                                      list(vocabularies.values()) + extra),
          "example_requests": {"serving_default": dict(example, k=example_k)}}
  card.update(k_card(servable.k_range))
  card.update(model_card or {})
  return export_lib.export_servable(
      export_dir, servable,
      {"serving_default": servable.serve.get_concrete_function()}, card)
