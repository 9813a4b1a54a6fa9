"""MGDSPR's one servable: raw query + behaviour -> user tower -> ANN ->
relevance control -> top-k (Sec. 4, Figure 4's online serving).

`serving_default(query [B] string, history_query [B] string, real_time
[B, R] / short_term [B, S] / long_term [B, L] string item ids (oldest first,
"" = padding), relevance_control [B] int32 (1: on), k [B] int32)` ->

* `item_ids [B, k] string`, `scores [B, k] float32`: the ANN's top-k after
  relevance control, survivors first in score order, then item id "" with
  score -inf;
* `num_results [B] int32`: survivors; `removed [B] int32`: items the
  control removed; `fallback [B] int32`: 1 when the control would have
  removed every item and the row was served unfiltered; `num_intents [B]
  int32`: recognised intent terms.

`user_embedding(... without k, relevance_control) -> {user_vector [B, d]}`.

Rules for bad input: unknown item ids map to -1 (masked like padding); a
sequence longer than the model's maximum keeps its last (most recent)
entries; empty histories and queries are valid (the zero vector / empty
granularities give a defined vector); an empty batch fails in the graph
with a message. `k` follows the k rule of every servable (docs/serving.md,
"k"): equal across a request's rows and in 1..max_k, max_k = min(the
export's max_k, the catalogue) (in the model card); any other k is refused
with a message naming it.
"""

from __future__ import annotations

import tempfile
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from retrieval_tf import export as export_lib
from retrieval_tf.compat import tf
from retrieval_tf.index import BruteForceIndex, index_parameters
from retrieval_tf.serving.assets import (index_table, k_card, k_range,
                                         non_empty, request_k,
                                         write_vocabulary)

from mgdspr_tf.model import SEQUENCES, MGDSPRModel
from mgdspr_tf.relevance import RelevanceControl, compact

PAPER = ("Li et al., Embedding-based Product Retrieval in Taobao Search "
         "(MGDSPR), KDD'21")


class MGDSPRServable(tf.Module):
  """`model`'s user tower + a `BruteForceIndex` of its item vectors +
  `RelevanceControl` (None: no control, the flag is ignored)."""

  def __init__(self, model: MGDSPRModel, item_vectors: np.ndarray,
               items_asset: str, control: Optional[RelevanceControl],
               max_k: int = 1000, chunk_size: Optional[int] = None):
    super().__init__()
    # The model's variables are tracked, not the Keras objects: saving and
    # loading then skip tracing every layer's call (minutes -> seconds).
    object.__setattr__(self, "model", model)
    model.build_weights()  # creates every variable before they are listed
    self.model_variables = list(model.variables)
    self.control = control
    self.k_range = k_range(max_k, model.num_items)
    self.max_k = self.k_range.max_k
    self.index = BruteForceIndex(model.num_items, item_vectors.shape[1],
                                 max_k=self.max_k, chunk_size=chunk_size)
    self.index.set_embeddings(item_vectors)
    self.items_asset = tf.saved_model.Asset(items_asset)
    self.item_index = index_table(self.items_asset)
    self.item_ids = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            self.items_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
    spec = {"query": tf.TensorSpec([None], tf.string, "query"),
            "history_query": tf.TensorSpec([None], tf.string,
                                           "history_query")}
    spec.update({s: tf.TensorSpec([None, None], tf.string, s)
                 for s in SEQUENCES})
    self.serve = tf.function(self._serve, input_signature=[
        spec, tf.TensorSpec([None], tf.int32, "relevance_control"),
        tf.TensorSpec([None], tf.int32, "k")])
    self.embed = tf.function(self._embed, input_signature=[spec])

  def features(self, request) -> Dict[str, tf.Tensor]:
    """Raw request -> the model's features (item ids -> indices)."""
    request = non_empty(request, key="query")
    out = {"query": request["query"],
           "history_query": request["history_query"]}
    for name in SEQUENCES:
      # The model keeps the last max_lengths[name] ids (most recent).
      out[name] = tf.cast(self.item_index.lookup(request[name]), tf.int32)
    return out

  def _embed(self, request):
    return {"user_vector": self.model.user_vector(self.features(request))}

  def _serve(self, request, relevance_control, k):
    # Every input waits for the check that there are rows.
    request = non_empty(dict(request, relevance_control=relevance_control,
                             k=k), key="query")
    relevance_control, k = request.pop("relevance_control"), request.pop("k")
    user = self.model.user_vector(self.features(request))
    batch = tf.shape(user)[0]
    k0 = request_k(k, batch, self.k_range)
    scores, found = self.index(user, k0)
    if self.control is None:
      keep = tf.ones_like(found, tf.bool)
      fallback = tf.zeros([batch], tf.bool)
      intents = tf.zeros([batch], tf.int32)
    else:
      keep, fallback, intents = self.control(
          request["query"], found, relevance_control > 0)
    count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    ids = self.item_ids.lookup(tf.cast(found, tf.int64))
    return {"item_ids": compact(keep, ids, ""),
            "scores": compact(keep, scores, -np.inf),
            "num_results": count,
            "removed": tf.shape(found)[1] - count,
            "fallback": tf.cast(fallback, tf.int32),
            "num_intents": intents}


def example_request(item_ids: Sequence[str]) -> Dict[str, list]:
  """A two-row request (without k and relevance_control)."""
  first = str(item_ids[0])
  return {"query": ["red wireless mouse", ""],
          "history_query": ["mouse pad", ""],
          "real_time": [[first, ""], ["", ""]],
          "short_term": [[first], [""]],
          "long_term": [[first, first, ""], ["", "", ""]]}


def export_mgdspr(model: MGDSPRModel, export_dir: str,
                  item_ids: Optional[Sequence[str]] = None,
                  intent_fields: Optional[Mapping[str, Sequence[str]]] = None,
                  item_fields: Optional[np.ndarray] = None,
                  max_k: int = 1000, model_card: Optional[Mapping] = None
                  ) -> str:
  """Exports MGDSPR's one servable (Sec. 4) as the next version of
  `export_dir`.

  Args:
    model: a trained `MGDSPRModel` (its catalogue set).
    export_dir: the folder of versions; the servable goes to the next one.
    item_ids: the catalogue's item ids in index order (`MGDSPRData.item_ids`);
      None: the indices "0", "1", ... The behaviour inputs of a request and
      the answers use them.
    intent_fields, item_fields: `MGDSPRData.intent_fields` /
      `.item_fields` (see `relevance.intent_vocabulary`): enable relevance
      control; without them the request's `relevance_control` is ignored.
    max_k: the largest k a request may ask for (capped at the catalogue).
    model_card: extra entries of the version's model card.

  Returns:
    The exported version folder. `tf.saved_model.load(path).signatures`
    holds `serving_default(query, history_query, real_time, short_term,
    long_term, relevance_control, k) -> item_ids, scores, num_results,
    removed, fallback, num_intents` and `user_embedding(...) ->
    user_vector` (the module docstring gives the shapes).

  Raises:
    ValueError: `item_ids` of another length than the catalogue.

      path = export_mgdspr(model, "/tmp/mgdspr", data.item_ids,
                           data.intent_fields, data.item_fields)
      serve = tf.saved_model.load(path).signatures["serving_default"]
      serve(query=tf.constant(["red dress"]), history_query=tf.constant([""]),
            real_time=tf.constant([[""]]), short_term=tf.constant([[""]]),
            long_term=tf.constant([[""]]),
            relevance_control=tf.constant([1]), k=tf.constant([10]))
  """
  from mgdspr_tf.relevance import intent_vocabulary  # pylint: disable=g-import-not-at-top
  if item_ids is None:
    item_ids = [str(i) for i in range(model.num_items)]
  if len(item_ids) != model.num_items:
    raise ValueError(f"{len(item_ids)} item ids for a model of "
                     f"{model.num_items} items")
  control = None
  if intent_fields and item_fields is not None:
    terms, meanings = intent_vocabulary(intent_fields)
    control = RelevanceControl(terms, meanings, item_fields)
  folder = tempfile.mkdtemp(prefix="mgdspr_vocab_")
  asset = write_vocabulary(folder, "items", [str(i) for i in item_ids])
  servable = MGDSPRServable(model, model.all_item_vectors(), asset, control,
                            max_k)
  example = example_request(item_ids)
  example_k = [min(10, servable.max_k)] * 2
  card = {"model": "mgdspr", "paper": PAPER, "config": model.get_config(),
          "index": index_parameters(servable.index),
          "relevance_control": control is not None,
          "intent_terms": 0 if control is None else len(control.terms),
          "example_requests": {
              "serving_default": dict(example, relevance_control=[1, 0],
                                      k=example_k),
              "user_embedding": example}}
  card.update(k_card(servable.k_range))
  card.update(model_card or {})
  return export_lib.export_servable(
      export_dir, servable,
      {"serving_default": servable.serve.get_concrete_function(),
       "user_embedding": servable.embed.get_concrete_function()}, card)
