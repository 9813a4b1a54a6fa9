"""A fan-out / merge client over item-sharded servables (DPSR Sec. 5.2.2).

When one machine cannot hold the item index, the items are split into N
shards and each shard is its own servable holding the same query model. This
client sends one request to every shard (in parallel threads), checks that
the answers belong together, and merges them into the top-k the unsharded
servable would return.

The shard contract (what `dpsr_tf.servable` exports): `serving_default`
takes the request plus `k [B] int32` in 1..its max_k (the k rule of every
servable, docs/serving.md, "k") and returns `item_ids [B, k]`, `scores [B,
k]` (the shard's exact top-k of its items), `model_fingerprint [B]` (equal
for shards of one model), `shard [B]` and `num_shards [B]`. The merge is a
stable sort of the concatenated answers by descending score, so shards
listed in item order keep the unsharded order of ties.

A shard's max_k is min(the export's max_k, its items), from its model card.
The client asks shard i for k_i = min(k, max_k_i) and accepts k in
1..max_k, where max_k is the number of items of all shards, or less when
some shard's max_k was cut below its items at export (the smallest such
max_k): within that range the merge is the exact top-k of all items.

Shards are reached either in process (`InProcessShard`: a loaded SavedModel)
or over TF Serving's REST API (`RestShard`: `POST <url>:predict` with an
`{"inputs": ...}` body).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

Answer = Dict[str, np.ndarray]


class MergeError(ValueError):
  """Shard answers that cannot be merged (different models, missing or
  repeated shards, malformed outputs)."""


def card_limits(card: Optional[Mapping[str, Any]]
                ) -> Optional[Dict[str, int]]:
  """`{"max_k", "num_items"}` of a shard's model card; None when the card
  does not hold them."""
  if not card or "max_k" not in card or "num_items" not in card:
    return None
  return {"max_k": int(card["max_k"]), "num_items": int(card["num_items"])}


class InProcessShard:
  """A shard served by this process: `path` is a model base folder (its
  latest version is loaded) or a version folder. `limits`: its max_k and
  items, from its model card."""

  def __init__(self, path: str, signature: str = "serving_default"):
    # pylint: disable=g-import-not-at-top  (TensorFlow only when used)
    from retrieval_tf.compat import tf
    from retrieval_tf.export import MODEL_CARD, latest_version_dir
    self.path = latest_version_dir(path)
    card = None
    if os.path.exists(os.path.join(self.path, MODEL_CARD)):
      with open(os.path.join(self.path, MODEL_CARD), encoding="utf-8") as f:
        card = json.load(f)
    self.limits = card_limits(card)
    self.loaded = tf.saved_model.load(self.path)
    self._fn = self.loaded.signatures[signature]
    self._specs = self._fn.structured_input_signature[1]
    self._tf = tf

  def __call__(self, request: Mapping[str, Any]) -> Answer:
    inputs = {name: self._tf.constant(
        np.asarray(request[name], dtype=object if spec.dtype ==
                   self._tf.string else spec.dtype.as_numpy_dtype),
        dtype=spec.dtype) for name, spec in self._specs.items()}
    return {k: v.numpy() for k, v in self._fn(**inputs).items()}

  def __repr__(self):
    return f"InProcessShard({self.path!r})"


class RestShard:
  """A shard behind TF Serving's REST API, e.g.
  `RestShard("http://host:8501/v1/models/dpsr_shard0")`. `model_card`: the
  shard's model card (`assets.extra/model_card.json` of its export), whose
  max_k lets the client ask a small shard for fewer items; without it every
  shard is asked for the request's k."""

  def __init__(self, url: str, signature: str = "serving_default",
               timeout: float = 10.0,
               model_card: Optional[Mapping[str, Any]] = None):
    self.url = url.rstrip("/")
    self.signature, self.timeout = signature, timeout
    self.limits = card_limits(model_card)

  def __call__(self, request: Mapping[str, Any]) -> Answer:
    body = json.dumps({"signature_name": self.signature,
                       "inputs": {k: np.asarray(v).tolist() if isinstance(
                           v, np.ndarray) else v
                                  for k, v in request.items()}}).encode()
    post = urllib.request.Request(f"{self.url}:predict", data=body,
                                  headers={"Content-Type":
                                           "application/json"})
    with urllib.request.urlopen(post, timeout=self.timeout) as response:
      outputs = json.loads(response.read())["outputs"]
    return {k: np.asarray(v, dtype=object if k in ("item_ids",
                                                   "model_fingerprint")
                          else None) for k, v in outputs.items()}

  def __repr__(self):
    return f"RestShard({self.url!r})"


def merge_answers(answers: Sequence[Answer], k: int) -> Answer:
  """The top-k of the shards' answers (see the module docstring); raises
  `MergeError` when they do not belong together."""
  if not answers:
    raise MergeError("no shard answered")
  for n, a in enumerate(answers):
    for key in ("item_ids", "scores", "model_fingerprint", "shard",
                "num_shards"):
      if key not in a:
        raise MergeError(f"shard answer #{n} has no {key!r} output")
  prints = {str(_text(x)) for a in answers
            for x in np.ravel(a["model_fingerprint"])}
  if len(prints) != 1:
    raise MergeError(f"shards come from different models (fingerprints "
                     f"{sorted(prints)}); refusing to merge")
  totals = sorted({int(x) for a in answers for x in np.ravel(a["num_shards"])})
  shards = [int(np.ravel(a["shard"])[0]) for a in answers]
  if len(totals) != 1 or sorted(shards) != list(range(totals[0])):
    raise MergeError(f"expected each of shards 0..N-1 exactly once, got "
                     f"shards {sorted(shards)} with num_shards {totals}")
  order = np.argsort(shards, kind="stable")
  ids = np.concatenate([np.asarray(answers[i]["item_ids"], object)
                        for i in order], axis=1)
  scores = np.concatenate([np.asarray(answers[i]["scores"], np.float32)
                           for i in order], axis=1)
  top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return {"item_ids": np.vectorize(_text, otypes=[object])(
              np.take_along_axis(ids, top, axis=1)),
          "scores": np.take_along_axis(scores, top, axis=1),
          "model_fingerprint": np.asarray(
              [prints.pop()] * len(scores), object)}


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class FanoutClient:
  """Sends a request to every shard in parallel and merges the answers.

  Args:
    shards: callables `request -> answer` (`InProcessShard`, `RestShard`),
      one per shard, in any order; a shard's `limits` (its max_k and items,
      from its model card) let the client ask it for min(k, its max_k).

  Attributes:
    max_k: the largest k the client answers (module docstring); None when
      a shard's limits are unknown (each shard then checks k alone).
  """

  def __init__(self, shards: Sequence[Callable[[Mapping], Answer]],
               max_workers: int = 0):
    if not shards:
      raise ValueError("FanoutClient needs at least one shard")
    self.shards = list(shards)
    self._pool = concurrent.futures.ThreadPoolExecutor(
        max_workers or len(self.shards))
    limits = [getattr(shard, "limits", None) for shard in self.shards]
    self.max_k, self._reason = None, ""
    if all(limits):
      total = sum(l["num_items"] for l in limits)
      cut = [l["max_k"] for l in limits if l["max_k"] < l["num_items"]]
      self.max_k = min([total] + cut)
      self._reason = (f"the {len(limits)} shards hold {total} items"
                      if self.max_k == total else
                      f"a shard's max_k was set to {self.max_k} at export")
    self._shard_max_k = [l["max_k"] if l else None for l in limits]

  def __call__(self, request: Mapping[str, Any]) -> Answer:
    """`request` holds `k` (one value per row, as for one servable).

    Raises:
      ValueError: no rows, or (with every shard's limits known) k outside
        1..max_k.
    """
    k = np.ravel(request["k"])
    if not len(k):
      raise ValueError("the request has no rows")
    first = int(k[0])
    if self.max_k is not None and not 1 <= first <= self.max_k:
      rule = ("k must be >= 1" if first < 1 else
              f"k must be <= {self.max_k} because {self._reason}")
      raise ValueError(f"k={first} is outside 1..{self.max_k}: {rule}")
    futures = [self._pool.submit(shard, request if limit is None else
                                 dict(request, k=np.minimum(k, limit)))
               for shard, limit in zip(self.shards, self._shard_max_k)]
    answers: List[Answer] = [f.result() for f in futures]
    return merge_answers(answers, int(k[0]))

  def close(self):
    self._pool.shutdown()
