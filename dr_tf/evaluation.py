"""Deep Retrieval's evaluation protocol (Sec. 4.1) for any trained model.

Held-out users (`retrieval_tf.datasets.held_out_split`): the first half of
each test user's chronological history is the input (its last
`history_length` items feed the GRU) and is excluded from every ranking;
the second half is the truth. Per user precision@k, recall@k and F@k
(`retrieval_tf.evaluation.HeldOutProtocol`), averaged over users, of

* DR: beam search (B) + softmax rerank (`precision@k`, `recall@k`, `f@k`);
* DR alone, the retrieved items in path order (`norerank_*`);
* DR at other beam sizes (`b<B>_*`, with `b<B>_mean_candidates`);
* brute force over the same softmax embeddings, all items (`brute_*`);
* the most popular training items (`popular_*`);

and `mean_candidates`, the distinct items the beam retrieved per user (the
paper sizes B so that this is 5-10x the final k).
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from retrieval_tf.baselines import MostPopular
from retrieval_tf.compat import tf
from retrieval_tf.datasets.splits import DRSplit
from retrieval_tf.datasets.types import RecDataset
from retrieval_tf.evaluation import HeldOutProtocol, top_k_items

from dr_tf.layers import check_structure
from dr_tf.model import DeepRetrievalModel


def evaluate(model: DeepRetrievalModel, split: DRSplit, dataset: RecDataset,
             *, history_length: int, ks: Sequence[int] = (10, 50),
             beam_sizes: Sequence[int] = (), batch_size: int = 256
             ) -> Dict[str, float]:
  """The DR protocol's metrics of `model` on `split.test` (see the module).

  Args:
    model: a trained `DeepRetrievalModel` over `dataset`'s items.
    split: the held-out-user split (`retrieval_tf.datasets.held_out_split`)
      the model was trained on (`split.train`; it also gives the
      most-popular baseline's counts).
    dataset: the `RecDataset` the split was made from.
    history_length: the behaviour-sequence length the model was trained
      with.
    ks: the cut-offs k; beam_sizes: extra beam sizes B to evaluate DR at.
    batch_size: test users per batch.

  Returns:
    Flat `{name: float}`, the keys of `python -m dr_tf.train`'s
    metrics.json: `precision@k`, `recall@k`, `f@k`, `norerank_*`,
    `brute_*`, `popular_*`, `b<B>_*`, `mean_candidates`,
    `b<B>_mean_candidates`.

  Raises:
    ValueError: another number of items than the model's, a split that is
      not a DRSplit, ks or history_length < 1, beam sizes outside 1..K^D.

  Example:

      split = datasets.held_out_split(dataset, num_test_users=500, seed=0)
      metrics = dr_tf.evaluate(model, split, dataset, history_length=20,
                               ks=[10])
      metrics["recall@10"], metrics["brute_recall@10"]
  """
  if not isinstance(split, DRSplit):
    raise ValueError(f"split must be a DRSplit (retrieval_tf.datasets."
                     f"held_out_split), got {type(split).__name__}")
  if dataset.num_items != model.num_items:
    raise ValueError(f"the dataset has {dataset.num_items} items, the model "
                     f"{model.num_items}")
  ks = sorted(int(k) for k in ks)
  if not ks or ks[0] < 1 or history_length < 1 or batch_size < 1:
    raise ValueError(f"need ks >= 1, history_length >= 1 and batch_size >= "
                     f"1, got {ks}, {history_length}, {batch_size}")
  for beam in beam_sizes:
    check_structure(model.num_nodes, model.depth, beam_size=int(beam))
  counts = np.bincount(split.train.item, minlength=dataset.num_items)
  protocol = HeldOutProtocol.from_held_out(split.test, dataset.num_items)
  k = max(ks)
  users = protocol.user_dataset(dataset.num_users, history_length,
                                batch_size=batch_size)
  retrieve = tf.function(
      lambda h, m, e, rerank, beam: model.retrieve(
          h, m, e, k=k, rerank=rerank, beam_size=beam),
      reduce_retracing=True)
  encode = tf.function(lambda b: model.encode(b)[1])
  runs = [("", True, model.beam_size), ("norerank_", False, model.beam_size)]
  runs += [(f"b{int(b)}_", True, int(b)) for b in beam_sizes]
  ranked = {prefix: [] for prefix, _, _ in runs}
  candidates = {prefix: [] for prefix, _, _ in runs}
  queries = []
  for start, batch in zip(range(0, len(protocol.users), batch_size), users):
    ban = tf.constant(protocol.banned[start:start + batch_size], tf.int32)
    for prefix, rerank, beam in runs:
      items, _, count = retrieve(batch["history"], batch["history_mask"],
                                 ban, rerank, beam)
      ranked[prefix].append(items.numpy())
      candidates[prefix].append(count.numpy())
    queries.append(encode(batch).numpy())
  queries = np.concatenate(queries)
  reranker = model.reranker
  augmented_items = np.concatenate(
      [reranker.item_weights.numpy(), reranker.item_bias.numpy()[:, None]],
      axis=1)
  augmented_queries = np.concatenate(
      [queries, np.ones((len(queries), 1), np.float32)], axis=1)
  rankings = {prefix: np.concatenate(rows) for prefix, rows in ranked.items()}
  rankings["brute_"] = top_k_items(augmented_queries, augmented_items, k,
                                   protocol.exclude)
  popular = MostPopular()
  popular.counts = counts.astype(np.float32)
  rankings["popular_"] = popular.top_k(protocol.exclude, k,
                                       exclude_history=True)
  out: Dict[str, float] = {
      f"{prefix}mean_candidates": float(np.concatenate(rows).mean())
      for prefix, rows in candidates.items() if prefix != "norerank_"}
  for prefix, top in rankings.items():
    out.update(protocol.report(top, ks, prefix))
  return out
