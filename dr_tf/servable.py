"""Deep Retrieval's one servable: raw history in, top-k item ids out.

    serving_default(history [N, L] string, k [N] int32)
        -> {item_ids [N, k] string, scores [N, k] float32,
            num_candidates [N] int32}

inside, with stock TF ops only: the item-id vocabulary (an asset) maps the
history to indices (unknown ids and "" are padding) -> the GRU encoder ->
beam search over the structure model (B fixed at export) -> the items of
the B paths through the exported inverted index (pi's CSR) -> duplicates
and the request's own history items dropped -> top-k by the softmax
reranker's logit. `num_candidates` is the number of distinct items the
beam retrieved (what the reranker saw).

Defined answers: an empty history (all "" or unknown ids) is served as the
"no-history" user (the encoder's zero state; the same popularity-like
answer for every such request). `k` follows the k rule of every servable
(docs/serving.md, "k"): equal on every row of a request and in 1..max_k,
max_k = min(the export's max_k, V) (in the model card); any other k is
refused with a message naming it. An answer has exactly k columns: when the
beam retrieves fewer than k items, the rest of the row is item id "" with
score -inf, never NaN. An empty batch is an error.
"""

from __future__ import annotations

import tempfile
from typing import Any, Mapping, Optional

import numpy as np

from retrieval_tf import export as export_lib
from retrieval_tf.compat import tf
from retrieval_tf.datasets.types import RecDataset
# The shared servable helpers (vocabulary assets, empty-batch check).
from retrieval_tf.models.two_tower_servable import raw_requests
from retrieval_tf.serving.assets import (index_table, k_card, k_range,
                                         non_empty, request_k,
                                         write_vocabulary)

from dr_tf.em import path_size_stats
from dr_tf.model import DeepRetrievalModel

PAPER = ("Gao et al., Deep Retrieval: Learning A Retrievable Structure for "
         "Large-Scale Recommendations, CIKM'21")


class DRServable(tf.Module):
  """The model's `retrieve` behind string ids (see the module docstring)."""

  def __init__(self, model: DeepRetrievalModel, items_vocabulary: str,
               history_length: int, beam_size: int, max_k: int,
               exclude_history: bool = True):
    super().__init__()
    self.model = model
    self.history_length = int(history_length)
    self.beam_size = int(beam_size)
    self.k_range = k_range(max_k, model.num_items)
    self.max_k = self.k_range.max_k
    self.exclude_history = bool(exclude_history)
    self.items_asset = tf.saved_model.Asset(items_vocabulary)
    self.to_index = index_table(self.items_asset)
    self.item_ids = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            self.items_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
    self.serve = tf.function(self._serve, input_signature=[
        tf.TensorSpec([None, None], tf.string, "history"),
        tf.TensorSpec([None], tf.int32, "k")])

  def _serve(self, history, k):
    request = non_empty({"history": history, "k": k})
    history, k = request["history"], request["k"]
    k0 = request_k(k, tf.shape(history)[0], self.k_range)
    ids = tf.cast(self.to_index.lookup(
        history[:, -self.history_length:]), tf.int32)
    items, scores, count = self.model.retrieve(
        ids, ids >= 0, exclude=ids if self.exclude_history else None,
        k=k0, beam_size=self.beam_size)
    # The model pads short rows with item -1 (id "") and the lowest
    # float32; the servable's padding score is -inf, as in every servable.
    scores = tf.where(items >= 0, scores, tf.constant(-np.inf, tf.float32))
    return {"item_ids": self.item_ids.lookup(tf.cast(items, tf.int64)),
            "scores": scores, "num_candidates": count}


def export_dr(model: DeepRetrievalModel, export_dir: str,
              dataset: RecDataset, history_length: int,
              beam_size: Optional[int] = None, max_k: int = 1000,
              exclude_history: bool = True,
              model_card: Optional[Mapping[str, Any]] = None) -> str:
  """Exports the servable as the next version of `export_dir`.

  The version folder is written atomically (`retrieval_tf.export`) with a
  model card (structure, path sizes, example requests); the servable's
  `serving_default(history [N, L] string, k [N] int32)` returns
  `item_ids [N, k]` string, `scores [N, k]` and `num_candidates [N]` (see
  the module docstring).

  Args:
    model: the trained `DeepRetrievalModel`.
    export_dir: the folder of versions (created when missing).
    dataset: the `RecDataset` whose item ids the model indexes.
    history_length: L, the last L request items read (as in training).
    beam_size: B at serving (default: the model's).
    max_k: the largest k a request may ask (capped at V; in the model
      card).
    exclude_history: never return the request's own history items.
    model_card: extra entries of the model card.

  Returns:
    The path of the exported version folder.

  Raises:
    ValueError: a dataset with another number of items than the model.

  Example:

      path = dr_tf.export_dr(model, "/tmp/dr", dataset, history_length=20)
      serve = tf.saved_model.load(path).signatures["serving_default"]
      serve(history=tf.constant([["12", "7"]]), k=tf.constant([10]))
  """
  if len(dataset.items.ids) != model.num_items:
    raise ValueError(f"the dataset has {len(dataset.items.ids)} items, the "
                     f"model {model.num_items}")
  model.prepare_to_save()   # every weight built, the model fully saved
  folder = tempfile.mkdtemp(prefix="dr_vocab_")
  vocabulary = write_vocabulary(folder, "items",
                                 [str(i) for i in dataset.items.ids])
  beam = int(beam_size or model.beam_size)
  servable = DRServable(model, vocabulary, history_length, beam, max_k,
                        exclude_history)
  example = raw_requests(dataset, [0, 1], min(history_length, 5),
                         with_user_id=False, with_profile=False)
  assignment = model.assignment
  example_k = [min(10, servable.max_k)] * 2
  card = {"model": "deep_retrieval", "paper": PAPER,
          "structure": {"K": model.num_nodes, "D": model.depth,
                        "J": assignment.num_paths, "B": beam},
          "paths": path_size_stats(assignment.item_paths.numpy(),
                                   assignment.total_paths),
          "history_length": history_length,
          "exclude_history": exclude_history,
          "empty_history": "served as the no-history user (encoder zero "
                           "state)",
          "example_requests": {"serving_default": dict(example, k=example_k)}}
  card.update(k_card(servable.k_range))
  card.update(model_card or {})
  return export_lib.export_servable(
      export_dir, servable,
      {"serving_default": servable.serve.get_concrete_function()}, card)
