"""Poeem's evaluation (Sec. 3.1): precision@k and recall@k of the learned
index on held-out users, the CLI's `metrics.json` keys.

The held-out-user protocol (`retrieval_tf.datasets.held_out_split`): the
first half of each test user's history is the input, the second half the
truth; input items are never recommended.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np

from retrieval_tf.baselines import MostPopular
from retrieval_tf.compat import tf
from retrieval_tf.datasets.splits import DRSplit
from retrieval_tf.datasets.types import RecDataset
from retrieval_tf.evaluation import HeldOutProtocol, top_k_items
from retrieval_tf.index import IVFPQIndex

from poeem_tf import callbacks
from poeem_tf.model import PoeemModel
from poeem_tf import servable

KS = (10, 100)


def user_queries(model: PoeemModel, protocol: HeldOutProtocol,
                 num_users: int, history_length: int,
                 batch_size: int = 4096) -> np.ndarray:
  """The test users' vectors u `[n, d]`, in the order of `protocol.users`."""
  embed = tf.function(lambda b: model.user_embedding(b, training=False))
  return np.concatenate([
      embed(b).numpy() for b in protocol.user_dataset(
          num_users, history_length, batch_size=batch_size)])


def evaluate(model: PoeemModel, split: DRSplit, dataset: RecDataset,
             history_length: int, *, ks: Sequence[int] = KS,
             nprobe: int = 0, rerank: int = 0, codes: str = "stored",
             nprobe_sweep: bool = False,
             index: Optional[IVFPQIndex] = None,
             item_vectors: Optional[np.ndarray] = None
             ) -> Dict[str, float]:
  """The paper's metrics of a trained Poeem model on held-out users.

  Args:
    model: a trained `PoeemModel`.
    split: the held-out-user split (`datasets.held_out_split`).
    dataset: the `RecDataset` the split came from.
    history_length: L, the user tower's history window.
    ks: the cut-offs k.
    nprobe: lists the served index probes (0: J / 4).
    rerank, codes: as in `servable.index_from_codes`.
    nprobe_sweep: also `nprobe{n}_recall@{max k}` and `nprobe{n}_scanned`
      for n = 1, 2, 4, ..., J.
    index, item_vectors: an index already built by `index_from_codes` on
      `item_vectors` (default: built here).

  Returns:
    Flat metrics, as in the CLI's `metrics.json`: `precision@k`, `recall@k`,
    `f@k` of the served index; `adc_` (every list probed), `exact_` (brute
    force over the unquantized x), `popular_` (most popular items) and,
    with stored codes, `fresh_` (codes of the final quantizers) variants;
    `scanned` (items scored per query); `coarse_used`, `codewords_used`,
    `coarse_entropy`; with stored codes the staleness
    (`codes_never_stored`, `coarse_codes_changed`, `pq_codes_changed`).
    A collapsed or untrained index, stale stored codes, or users served
    fewer than k items, are logged and warned about (`callbacks.warn`).

  Raises:
    ValueError: an empty or bad `ks`, or nprobe outside 0..J.

  Example:

      metrics = poeem_tf.evaluate(model, split, dataset, history_length=20)
      metrics["recall@100"], metrics["precision@100"]
  """
  ks = sorted(int(k) for k in ks)
  if not ks or ks[0] < 1:
    raise ValueError(f"ks must be non-empty and >= 1, got {ks}")
  num_lists = model.index_layer.coarse.num_centroids
  if not 0 <= nprobe <= num_lists:
    raise ValueError(f"nprobe must be in 0..num_centroids={num_lists}, "
                     f"got {nprobe}")
  nprobe = nprobe or max(1, num_lists // 4)
  top_k = ks[-1]
  if index is None:
    item_vectors = model.catalogue_embeddings()
    index, _ = servable.index_from_codes(model, item_vectors, nprobe, rerank,
                                         max_k=top_k, codes=codes)
  elif item_vectors is None:
    raise ValueError("evaluate: with index, give item_vectors too")
  protocol = HeldOutProtocol.from_held_out(split.test, dataset.num_items)
  queries = user_queries(model, protocol, dataset.num_users, history_length)
  ban = protocol.banned
  served = index(queries, top_k, nprobe=nprobe, exclude=ban)[1].numpy()
  rankings = {
      "": served,
      "adc_": index(queries, top_k, nprobe=index.num_lists,
                    exclude=ban)[1].numpy(),
      "exact_": top_k_items(queries, item_vectors, top_k, protocol.exclude),
      "popular_": MostPopular().fit(split.train, dataset.num_items).top_k(
          protocol.exclude, top_k, exclude_history=True)}
  metrics: Dict[str, float] = {"scanned": float(np.mean(
      index.candidates_scanned(queries, nprobe).numpy()))}
  if nprobe_sweep:
    probes = sorted({min(2 ** i, index.num_lists) for i in range(
        int(math.log2(index.num_lists)) + 2)})
    for n in probes:
      report = protocol.report(
          index(queries, top_k, nprobe=n, exclude=ban)[1].numpy(), (top_k,))
      metrics[f"nprobe{n}_recall@{top_k}"] = report[f"recall@{top_k}"]
      metrics[f"nprobe{n}_scanned"] = float(np.mean(
          index.candidates_scanned(queries, n).numpy()))
  if codes == "stored":
    fresh, _ = servable.index_from_codes(model, item_vectors, nprobe, rerank,
                                         max_k=top_k, codes="fresh")
    rankings["fresh_"] = fresh(queries, top_k, nprobe=nprobe,
                               exclude=ban)[1].numpy()
    metrics.update(servable.code_staleness(model.index_layer, item_vectors))
  for prefix, top in rankings.items():
    metrics.update(protocol.report(top, ks, prefix))
  usage = servable.index_utilisation(index)
  metrics.update(usage)
  problems = callbacks.index_health(model.index_layer, usage)
  if metrics.get("coarse_codes_changed", 0.0) > callbacks.MAX_STALE_CODES:
    problems.append(
        f"stale codes: {metrics['coarse_codes_changed']:.0%} of the coarse "
        "codes remembered in training differ from the final quantizers' "
        "(export with codes=\"fresh\")")
  short = float(np.mean((served < 0).any(axis=1)))
  if short > 0:
    problems.append(
        f"{short:.0%} of the users got fewer than {top_k} items from "
        f"nprobe={nprobe} lists (rows padded with -inf scores): probe more "
        "lists or fix the index's utilisation")
  callbacks.warn(problems)
  return metrics
