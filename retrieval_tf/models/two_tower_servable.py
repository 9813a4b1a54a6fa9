"""What goes into the two-tower baseline's one servable.

`TwoTowerServable` takes raw request features (original string ids, as a
client knows them), maps them to indices with vocabulary tables read from the
export's asset files, runs the user tower and searches the item index:

* `serving_default(user_id [B] string, history [B, L] string, user_<field>
  [B] string, k [B] int32) -> {item_ids [B, k] string, scores [B, k]}`;
* `query_embedding(... same features, no k) -> {query_embedding [B, d]}`.

A model without a user-id embedding (`use_user_id=False`, e.g. for held-out
users, or Poeem's towers) takes no `user_id` input.

Out-of-vocabulary path: an unknown user id or profile value maps to -1 and
contributes a zero vector to the user tower; unknown or empty ("") history
entries are masked out. A user with nothing known is served from the tower's
bias alone (a popularity-like answer), never an error. `k` is per row (TF
Serving's row format batches every input) and follows the k rule of every
servable (docs/serving.md, "k"): equal across a request's rows and within
`1..max_k`, where `max_k` = min(the export's max_k, num_items) is in the
model card; any other k is refused with a message naming it. An answer has
exactly k columns; an approximate index whose probed lists hold fewer than k
items pads the row with item id "" and score -inf. An empty batch is an
error raised inside the graph.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from retrieval_tf import export as export_lib
from retrieval_tf.compat import keras, tf
from retrieval_tf.data.history import HistoryIndex
from retrieval_tf.datasets.types import RecDataset, Vocabulary
from retrieval_tf.evaluation import item_tower_vectors
from retrieval_tf.index import build_index, index_parameters
from retrieval_tf.models.two_tower import TwoTowerModel
from retrieval_tf.saving import SavableModel
from retrieval_tf.serving.assets import (id_table, index_table, k_card,
                                         k_range, non_empty, request_k,
                                         write_vocabulary)


class TwoTowerServable(tf.Module):
  """The user tower + an index layer over the item tower's embeddings."""

  def __init__(self, model: TwoTowerModel, index: keras.layers.Layer,
               vocabularies: Mapping[str, str], history_length: int,
               max_k: int, extra_assets: Sequence[str] = ()):
    super().__init__()
    self.model = model
    self.index = index
    self.history_length = int(history_length)
    self.k_range = k_range(max_k, index.num_items)
    self.max_k = self.k_range.max_k
    self.fields = sorted(model.user_features)
    self.assets = {name: tf.saved_model.Asset(path)
                   for name, path in vocabularies.items()}
    self.to_index = {name: index_table(asset)
                     for name, asset in self.assets.items()}
    # Files shipped with the export for tools (e.g. titles for the query
    # CLI), not read by the graph.
    self.extra_assets = [tf.saved_model.Asset(p) for p in extra_assets]
    self.item_ids = id_table(self.assets["items"])
    self.with_user_id = bool(model.use_user_id)
    spec = {"history": tf.TensorSpec([None, None], tf.string, "history")}
    if self.with_user_id:
      spec["user_id"] = tf.TensorSpec([None], tf.string, "user_id")
    spec.update({f"user_{f}": tf.TensorSpec([None], tf.string, f"user_{f}")
                 for f in self.fields})
    self.input_spec = spec
    self.serve = tf.function(
        self._serve, input_signature=[spec, tf.TensorSpec([None], tf.int32,
                                                          "k")])
    self.embed = tf.function(self._embed, input_signature=[spec])

  def _lookup(self, name: str, values: tf.Tensor) -> tf.Tensor:
    return tf.cast(self.to_index[name].lookup(values), tf.int32)

  def _user_vector(self, request: Dict[str, tf.Tensor]) -> tf.Tensor:
    history = request["history"][:, -self.history_length:]
    history_ids = self._lookup("items", history)
    features = {"history": history_ids, "history_mask": history_ids >= 0}
    if self.with_user_id:
      features["user_id"] = self._lookup("users", request["user_id"])
    for f in self.fields:
      features[f"user_{f}"] = self._lookup(f, request[f"user_{f}"])
    return self.model.user_embedding(features, training=False)

  def _embed(self, request):
    request = non_empty(request)
    return {"query_embedding": self._user_vector(request)}

  def _serve(self, request, k):
    request = non_empty(dict(request, k=k))
    k = request.pop("k")
    vectors = self._user_vector(request)
    k0 = request_k(k, tf.shape(vectors)[0], self.k_range)
    scores, indices = self.index(vectors, k0)
    return {"item_ids": self.item_ids.lookup(tf.cast(indices, tf.int64)),
            "scores": scores}



def raw_requests(dataset: RecDataset, users: Sequence[int],
                 history_length: int, with_user_id: bool = True,
                 with_profile: bool = True) -> Dict[str, list]:
  """The `serving_default` request (without `k`) a client would send for
  these user indices: original ids, the last `history_length` items of each
  user's interactions (right-aligned, padded with ""), profile values."""
  users = np.asarray(users, np.int64)
  history = HistoryIndex.from_interactions(dataset.interactions,
                                           dataset.num_users)
  starts, ends = history.user_history(users)
  starts = np.maximum(starts, ends - history_length)
  width = int(max(1, (ends - starts).max(initial=0)))
  rows = []
  for start, end in zip(starts, ends):
    ids = [dataset.items.ids[i] for i in history.items[start:end]]
    rows.append([""] * (width - len(ids)) + [str(i) for i in ids])
  request = {"history": rows}
  if with_user_id:
    request["user_id"] = [str(dataset.users.ids[u]) for u in users]
  for field, values in dataset.user_features.items():
    if with_profile and field in dataset.feature_vocabularies:
      vocab = dataset.feature_vocabularies[field]
      request[f"user_{field}"] = [str(vocab.ids[v]) for v in values[users]]
  return request


def export_two_tower(model: TwoTowerModel, export_dir: str,
                     dataset: RecDataset,
                     item_vectors: Optional[np.ndarray] = None,
                     history_length: Optional[int] = None,
                     max_k: int = 1000,
                     model_card: Optional[Mapping] = None,
                     index: Optional[keras.layers.Layer] = None) -> str:
  """Exports the two-tower servable as the next version of `export_dir`.

  The servable maps a raw request (original string ids, see the module
  docstring) through vocabulary assets and the user tower to the top-k item
  ids of an index over the item vectors.

      path = export_two_tower(model, "/tmp/exports", dataset,
                              history_length=20)
      serve = tf.saved_model.load(path).signatures["serving_default"]
      serve(user_id=tf.constant(["7"]), history=tf.constant([["3", "9"]]),
            k=tf.constant([10]))   # -> {"item_ids": [1, 10], "scores": ...}

  Args:
    model: a `TwoTowerModel` (or a model with its `user_embedding`,
      `item_embedding`, `user_features`, `item_features`, `use_user_id`).
    export_dir: the folder of versions; the export is `export_dir/<n + 1>`.
    dataset: the `RecDataset` the model was trained on (vocabularies, user
      and item fields, titles).
    item_vectors: `[num_items, d]` item vectors to index; None: the model's
      item tower over every item of `dataset`.
    history_length: the history window the model was trained with (the
      last `history_length` request items are read); required when the
      model pools a history.
    max_k: the largest k a request may ask for (capped at the number of
      items; the servable's max_k is in the model card).
    model_card: extra entries of the export's model card.
    index: a filled index layer over `item_vectors` (e.g. from
      `retrieval_tf.build_index(item_vectors, "ivfpq")`); None: an exact
      `BruteForceIndex`.

  Returns:
    The path of the exported version folder.

  Raises:
    ValueError: no `history_length` for a history model, or an index whose
      size is not the number of items.

  The older argument order `(model, dataset, item_vectors, export_dir,
  history_length)` is still accepted.
  """
  if isinstance(export_dir, RecDataset):  # the older argument order
    export_dir, dataset, item_vectors = item_vectors, export_dir, dataset
  if isinstance(model, SavableModel):
    model.prepare_to_save()
  if history_length is None:
    if getattr(model, "use_history", True):
      raise ValueError("export_two_tower needs history_length: the history "
                       "window the model was trained with")
    history_length = 1
  if item_vectors is None:
    item_vectors = item_tower_vectors(model, dataset)
  vocab_dir = tempfile.mkdtemp(prefix="two_tower_vocab_")
  vocabularies = {
      "users": write_vocabulary(vocab_dir, "users", dataset.users.ids),
      "items": write_vocabulary(vocab_dir, "items", dataset.items.ids)}
  for field in model.user_features:
    vocab: Vocabulary = dataset.feature_vocabularies[field]
    vocabularies[field] = write_vocabulary(vocab_dir, field, vocab.ids)
  extra = []
  if dataset.item_titles is not None:
    extra.append(write_vocabulary(
        vocab_dir, "item_titles",
        [" ".join(str(t).split()) for t in dataset.item_titles]))
  if index is None:
    index = build_index(item_vectors, "brute_force", max_k=max_k)
  if index.num_items != len(item_vectors):
    raise ValueError(f"the index holds {index.num_items} items, the dataset "
                     f"has {len(item_vectors)}")
  servable = TwoTowerServable(model, index, vocabularies, history_length,
                              max_k, extra_assets=extra)
  example = raw_requests(dataset, [0, 1], min(history_length, 5),
                         with_user_id=servable.with_user_id,
                         with_profile=bool(servable.fields))
  example_k = [min(10, servable.max_k)] * 2
  card = {"model": "two_tower", "paper": "Covington et al., RecSys'16 "
          "(YouTube DNN) as a two-tower retrieval model"}
  card.update(model_card or {})
  card.update(k_card(servable.k_range))
  card.update({
      "index": dict(index_parameters(index), max_k=servable.max_k),
      "history_length": history_length,
      "vocabulary_assets": sorted(os.path.basename(p) for p in
                                  list(vocabularies.values()) + extra),
      "example_requests": {
          "serving_default": dict(example, k=example_k),
          "query_embedding": example}})
  return export_lib.export_servable(
      export_dir, servable,
      {"serving_default": servable.serve.get_concrete_function(),
       "query_embedding": servable.embed.get_concrete_function()}, card)
