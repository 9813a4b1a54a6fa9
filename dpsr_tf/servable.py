"""DPSR's one servable (Sec. 5.2.1) and its sharded export (Sec. 5.2.2).

One SavedModel holds the tokenizer, the query tower and an item embedding
index, so raw query text goes in and item ids come out in one call:

* `serving_default(query [B] string, k [B] int32, user_<f> [B] string
  (DPSR-p/-h), history [B, L] string item ids, "" = padding (DPSR-h))
  -> {item_ids [B, k] string, scores [B, k] float32, model_fingerprint
  [B] string, shard [B] int32, num_shards [B] int32}`;
* `tokenize(query [B]) -> {token_ids [B, T] int64 (-1 padded), num_tokens
  [B] int32}`: the tokenizer's ids, for consistency checks;
* `query_embedding(... no k) -> {query_heads [B, m, d]}`.

Retrieval as the paper describes it (Sec. 4.3): each of the m heads
retrieves k items from the index; the union is scored by each candidate's
largest exact inner product with a head, de-duplicated and cut to k. With
the default exact index (`BruteForceIndex`) the result is exactly the top-k
of all items by max_i e_i^T g (an item in that top-k is in the top-k of its
best head), so top-k lists of disjoint item shards merge into the unsharded
answer; this is what `retrieval_tf.serving.fanout` relies on.

`index="ivfpq"` serves from an approximate `IVFPQIndex` instead (the paper
serves from an ANN index, Sec. 5.2.2), built by
`retrieval_tf.index.build_index` with its `num_lists`, `num_subspaces`,
`nprobe` and `rerank`. The union is still cut by exact inner products: the
index's stored vectors (with `rerank` > 0, looked up through the inverse of
its list order) or else a separate non-trainable copy of the item vectors.
With nprobe = num_lists and rerank >= the shard's items, the IVF-PQ
servable gives the exact answer.

`k` follows the k rule of every servable (docs/serving.md, "k"): equal
across a request's rows and in 1..max_k, max_k = min(the export's max_k,
the items of this servable: the catalogue, or the shard's items), written
to the model card; any other k is refused with a message naming it. An
answer has exactly k columns: when the probed lists of an IVF-PQ index hold
fewer than k items, the tail of a row is item id "" with score -inf.

`export_dpsr(..., num_shards=N)` splits the items into N contiguous ranges
and writes N servables that share the query tower (`export_dir/
shard-i-of-N/<version>`); every one outputs the same `model_fingerprint` (a
hash of all model weights), which the fan-out client checks; the client
asks each shard for at most the shard's max_k.

Unknown user profile values and history ids map to -1 (a zero vector); an
empty, whitespace-only or punctuation-only query has no tokens and is served
from the towers' biases; an empty batch fails inside the graph with a
message.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from retrieval_tf import export as export_lib
from retrieval_tf.compat import keras, tf
from retrieval_tf.index import (RERANK, BruteForceIndex, IVFPQIndex,
                                build_index, check_build_options,
                                index_parameters)
from retrieval_tf.serving.assets import (index_table, k_card, k_range,
                                         non_empty, request_k,
                                         write_vocabulary)

from dpsr_tf.model import DPSRModel, all_item_embeddings

PAPER = ("Zhang et al., Towards Personalized and Semantic Retrieval: An "
         "End-to-End Solution for E-commerce Search via Embedding Learning "
         "(DPSR), SIGIR'20")


def model_fingerprint(model: DPSRModel) -> str:
  """sha256 of the model's configuration and weights (16 hex digits)."""
  digest = hashlib.sha256(repr(sorted(model.get_config().items())).encode())
  for weight in model.weights:
    digest.update(weight.name.encode())
    digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
  return digest.hexdigest()[:16]


class DPSRServable(tf.Module):
  """The query side of `model` + an index over `item_vectors` (the items
  `item_indices` of the catalogue, one shard or all): by default an exact
  `BruteForceIndex`, or the given filled `index` layer over the same
  vectors in the same order (e.g. `build_index(..., kind="ivfpq")`)."""

  def __init__(self, model: DPSRModel, item_vectors: np.ndarray,
               item_indices: np.ndarray, items_asset: str,
               user_vocabularies: Mapping[str, str], max_k: int,
               fingerprint: str, shard: int = 0, num_shards: int = 1,
               chunk_size: Optional[int] = None,
               index: Optional[keras.layers.Layer] = None):
    super().__init__()
    self.model = model
    count = len(item_indices)
    if index is not None:
      max_k = min(max_k, index.max_k)
    self.k_range = k_range(max_k, count, "the catalogue" if num_shards == 1
                           else "this shard")
    self.max_k = self.k_range.max_k
    if index is None:
      index = BruteForceIndex(
          count, item_vectors.shape[1], max_k=self.max_k,
          chunk_size=chunk_size or (262_144 if count > 262_144 else None))
      index.set_embeddings(item_vectors)
    elif (index.num_items, index.dim) != (count, item_vectors.shape[1]):
      raise ValueError(f"the index holds {index.num_items} x {index.dim} "
                       f"vectors, the servable {count} x "
                       f"{item_vectors.shape[1]}")
    if getattr(index, "metric", "dot") != "dot":
      raise ValueError("DPSR scores by inner product: the index metric must "
                       f"be 'dot', got {index.metric!r}")
    self.index = index
    # Exact item vectors in item order, for the cut of the heads' union.
    self.position = None
    if isinstance(index, BruteForceIndex):
      self.exact_vectors = index.embeddings
    elif isinstance(index, IVFPQIndex) and index.store_vectors:
      # The index stores them in list order: item i is at position[i].
      self.exact_vectors = index.vectors
      self.position = tf.Variable(
          np.argsort(index.list_items.numpy()).astype(np.int32),
          trainable=False, name="item_position")
    else:
      self.exact_vectors = tf.Variable(
          np.asarray(item_vectors, np.float32), trainable=False,
          name="item_vectors")
    self.global_index = tf.Variable(np.asarray(item_indices, np.int64),
                                    trainable=False, name="global_index")
    self.items_asset = tf.saved_model.Asset(items_asset)
    self.item_ids = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            self.items_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
    self.personalization = model.personalization
    self.fields = sorted(model.user_feature_sizes)
    self.user_assets = {f: tf.saved_model.Asset(p)
                        for f, p in user_vocabularies.items()}
    self.to_index = {f: index_table(a)
                     for f, a in self.user_assets.items()}
    if self.personalization == "history":
      self.item_index = index_table(self.items_asset)
    self.fingerprint = str(fingerprint)
    self.shard, self.num_shards = int(shard), int(num_shards)
    spec = {"query": tf.TensorSpec([None], tf.string, "query")}
    spec.update({f"user_{f}": tf.TensorSpec([None], tf.string, f"user_{f}")
                 for f in self.fields})
    if self.personalization == "history":
      spec["history"] = tf.TensorSpec([None, None], tf.string, "history")
    self.input_spec = spec
    self.serve = tf.function(self._serve, input_signature=[
        spec, tf.TensorSpec([None], tf.int32, "k")])
    self.embed = tf.function(self._embed, input_signature=[spec])
    self.tokenize = tf.function(self._tokenize, input_signature=[
        tf.TensorSpec([None], tf.string, "query")])

  def _features(self, request):
    request = non_empty(request, key="query")
    features = {"query": request["query"]}
    for f in self.fields:
      features[f"user_{f}"] = tf.cast(
          self.to_index[f].lookup(request[f"user_{f}"]), tf.int32)
    if self.personalization == "history":
      features["history"] = tf.cast(
          self.item_index.lookup(request["history"]), tf.int32)
    return features

  def _embed(self, request):
    return {"query_heads": self.model.query_heads(self._features(request))}

  def _tokenize(self, query):
    tokens = self.model.tokenizer(query)
    return {"token_ids": tokens.to_tensor(default_value=-1),
            "num_tokens": tf.cast(tokens.row_lengths(), tf.int32)}

  def _serve(self, request, k):
    # Every input, k included, waits for the check that there are rows.
    request = non_empty(dict(request, k=k), key="query")
    k = request.pop("k")
    heads = self.model.query_heads(self._features(request))  # [B, m, d]
    batch, m = tf.shape(heads)[0], self.model.num_heads
    k0 = request_k(k, batch, self.k_range)
    # Each head retrieves k; the union is scored by the best head.
    _, found = self.index(tf.reshape(heads, [-1, self.model.output_dim]),
                          k0)
    found = tf.reshape(found, [batch, m * k0])
    scores = tf.reduce_max(
        tf.einsum("bmd,bcd->bcm", heads, self._vectors(found)), -1)
    if not isinstance(self.index, BruteForceIndex):
      # An approximate index pads short rows with -1: never returned.
      scores = tf.where(found >= 0, scores,
                        tf.constant(-np.inf, scores.dtype))
    # De-duplicate: sort by item, drop repeats of the previous entry.
    order = tf.argsort(found, axis=1, stable=True)
    found = tf.gather(found, order, batch_dims=1)
    scores = tf.gather(scores, order, batch_dims=1)
    repeat = tf.concat([tf.zeros([batch, 1], tf.bool),
                        found[:, 1:] == found[:, :-1]], axis=1)
    scores = tf.where(repeat, tf.constant(-np.inf, scores.dtype), scores)
    top_scores, top = tf.math.top_k(scores, k=k0)
    local = tf.gather(found, top, batch_dims=1)
    global_index = tf.gather(self.global_index, tf.maximum(local, 0))
    if not isinstance(self.index, BruteForceIndex):
      # Padding (-inf) maps to -1, which the id table answers with "".
      global_index = tf.where(tf.math.is_finite(top_scores), global_index,
                              tf.constant(-1, tf.int64))
    item_ids = self.item_ids.lookup(global_index)
    ones = tf.ones([batch], tf.int32)
    return {"item_ids": item_ids, "scores": top_scores,
            "model_fingerprint": tf.fill([batch], self.fingerprint),
            "shard": self.shard * ones, "num_shards": self.num_shards * ones}

  def _vectors(self, found):
    """Exact vectors `[B, C, d]` of the local item indices `found` (-1,
    padding of an approximate index, reads item 0 and is masked later)."""
    found = tf.maximum(found, 0)
    if self.position is not None:
      found = tf.gather(self.position, found)
    return tf.gather(self.exact_vectors, found)


def example_request(fields: Sequence[str], personalization: str,
                    user_values: Mapping[str, Sequence[str]],
                    item_ids: Sequence[str]) -> Dict[str, list]:
  """A two-row `serving_default` request (without k) for the model card."""
  request = {"query": ["red wireless mouse", ""]}
  for f in fields:
    request[f"user_{f}"] = [str(user_values[f][0])] * 2
  if personalization == "history":
    request["history"] = [[str(item_ids[0]), ""], ["", ""]]
  return request


def export_dpsr(model: DPSRModel, export_dir: str,
                item_ids: Optional[Sequence[str]] = None,
                item_vectors: Optional[np.ndarray] = None,
                user_vocabularies: Optional[Mapping[str, Sequence[str]]] = None,
                num_shards: int = 1, max_k: int = 1000,
                model_card: Optional[Mapping] = None,
                only_shards: Optional[Sequence[int]] = None,
                index: str = "brute_force", num_lists: Optional[int] = None,
                num_subspaces: Optional[int] = None,
                nprobe: Optional[int] = None, rerank: int = RERANK,
                seed: int = 0, scan_dtype: str = "float32") -> List[str]:
  """Exports the one servable (raw query -> top-k item ids, Sec. 5.2.1).

  `num_shards` = 1 writes `export_dir/<version>`; N > 1 writes N servables
  over contiguous item ranges, `export_dir/shard-i-of-N/<version>`
  (Sec. 5.2.2), which `retrieval_tf.serving.fanout` merges.

  Args:
    model: the trained `DPSRModel`.
    export_dir: where the version folder(s) go.
    item_ids: the N original item ids (strings without line breaks) that
      the servable answers with; default "0".."N-1".
    item_vectors: S(s) of every item `[N, d]`; default
      `all_item_embeddings(model)`.
    user_vocabularies: profile field -> its values (index order), for
      DPSR-p/-h: requests send these strings as `user_<field>`.
    num_shards: item shards; max_k: the largest k a request may ask (each
      servable's is capped at its items: the catalogue, or the shard's).
    model_card: extra entries of the model card.
    only_shards: write only these shard numbers (e.g. the one a machine
      serves); all by default.
    index: "brute_force" (exact, the default), "ivf_flat" or "ivfpq"; an
      inverted file is trained on each shard's own items by
      `retrieval_tf.index.build_index` with `num_lists`, `num_subspaces`
      (IVF-PQ), `nprobe` (None: its defaults from the shard's size),
      `rerank` (IVF-PQ candidates re-scored exactly), `scan_dtype`
      (IVF-Flat) and `seed`.

  Returns:
    The written version folders, one per shard (one for `num_shards=1`).
    Each loads with `tf.saved_model.load`; its `serving_default` takes
    `query [B]` string, `k [B]` int32 in 1..max_k (+ `user_<field> [B]`
    string, `history [B, L]` string item ids) and returns `item_ids [B,
    k]`, `scores [B, k]`; its model card holds its max_k.

  Raises:
    ValueError: item ids / vectors / model of different sizes, a bad
      `num_shards`, missing user vocabularies or bad index options.

      path = export_dpsr(model, "/tmp/dpsr_export")[0]
      serve = tf.saved_model.load(path).signatures["serving_default"]
      serve(query=tf.constant(["red shoes"]), k=tf.constant([10]))
  """
  if item_vectors is None:
    item_vectors = all_item_embeddings(model)
  if item_ids is None:
    item_ids = [str(i) for i in range(model.num_items)]
  item_vectors = np.asarray(item_vectors, np.float32)
  check_build_options(index, item_vectors.shape[1]
                      if item_vectors.ndim == 2 else 0,
                      num_lists, num_subspaces, nprobe, rerank,
                      scan_dtype=scan_dtype)
  if len(item_ids) != len(item_vectors) or len(item_ids) != model.num_items:
    raise ValueError(f"{len(item_ids)} item ids, {len(item_vectors)} "
                     f"vectors and a model of {model.num_items} items differ")
  if not 1 <= num_shards <= len(item_ids):
    raise ValueError(f"num_shards must be in 1..{len(item_ids)}, got "
                     f"{num_shards}")
  smallest = len(item_ids) // num_shards
  if index != "brute_force" and num_lists is not None and \
      num_lists > smallest:
    raise ValueError(f"num_lists={num_lists} exceeds the {smallest} items "
                     f"of the smallest of {num_shards} shard(s)")
  user_vocabularies = dict(user_vocabularies or {})
  missing = set(model.user_feature_sizes) - set(user_vocabularies)
  if missing:
    raise ValueError(f"user vocabularies missing for {sorted(missing)}")
  folder = tempfile.mkdtemp(prefix="dpsr_vocab_")
  items_asset = write_vocabulary(folder, "items", [str(i) for i in item_ids])
  user_assets = {f: write_vocabulary(folder, f"user_{f}",
                                      [str(v) for v in user_vocabularies[f]])
                 for f in model.user_feature_sizes}
  fingerprint = model_fingerprint(model)
  example = example_request(sorted(model.user_feature_sizes),
                            model.personalization, user_vocabularies,
                            item_ids)
  paths = []
  for shard, indices in enumerate(np.array_split(np.arange(len(item_ids)),
                                                 num_shards)):
    if only_shards is not None and shard not in only_shards:
      continue
    layer = None
    if index != "brute_force":
      # rerank > the shard's items means all of them.
      layer = build_index(item_vectors[indices], index,
                          max_k=min(max_k, len(indices)),
                          num_lists=num_lists, num_subspaces=num_subspaces,
                          nprobe=nprobe, rerank=min(rerank, len(indices)),
                          seed=seed, scan_dtype=scan_dtype)
    servable = DPSRServable(model, item_vectors[indices], indices,
                            items_asset, user_assets, max_k, fingerprint,
                            shard, num_shards, index=layer)
    example_k = [min(10, servable.max_k)] * 2
    card = {"model": "dpsr", "paper": PAPER,
            "config": model.get_config(),
            "model_fingerprint": fingerprint,
            "shard": shard, "num_shards": num_shards,
            "shard_items": [int(indices[0]), int(indices[-1]) + 1],
            "index": index_parameters(servable.index),
            **k_card(servable.k_range),
            "example_requests": {
                "serving_default": dict(example, k=example_k),
                "query_embedding": example,
                "tokenize": {"query": example["query"]}}}
    card.update(model_card or {})
    target = (export_dir if num_shards == 1 else
              os.path.join(export_dir, f"shard-{shard}-of-{num_shards}"))
    paths.append(export_lib.export_servable(
        target, servable,
        {"serving_default": servable.serve.get_concrete_function(),
         "query_embedding": servable.embed.get_concrete_function(),
         "tokenize": servable.tokenize.get_concrete_function()}, card))
  return paths
