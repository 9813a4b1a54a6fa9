"""PDN's evaluation (Sec. 6.1, Table 2): the NCF leave-one-out protocol and
the servable's full-corpus recall.

`evaluate(model, split)` ranks each test user's target against the split's
sampled negatives (NCF: 99) with

* the personalised score, Eq. 12 without the Bias Net (Table 2
  "Personalise"): `hr@10`, `ndcg@10`, `mrr`;
* SimNet alone, Σ_j softplus(s_ji) over the history (Table 2 "Item to
  Item"): `i2i_hr@10`, `i2i_ndcg@10`, `i2i_mrr`;

and, given a `PDNRetriever`, the greedy path retrieval (Eq. 14) over the
whole corpus, the user's training items excluded: `recall@50`,
`recall@300`. The keys are those `python -m pdn_tf.train` writes to
metrics.json.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from retrieval_tf import data as pipeline
from retrieval_tf import evaluation
from retrieval_tf import metrics as metrics_lib
from retrieval_tf.compat import tf
from retrieval_tf.data.history import HistoryIndex
from retrieval_tf.datasets.registry import LeaveOneOut

from pdn_tf.data import user_features
from pdn_tf.model import PDNModel
from pdn_tf.retrieval import PDNRetriever, retrieve_users

SAMPLED_KS = (10,)
FULL_KS = (50, 300)


def sampled_scores(model: PDNModel, split: LeaveOneOut, history_length: int,
                   batch_size: int = 256):
  """Personalised (Eq. 12, no bias) and item-to-item scores `[U, 1 + n]` of
  each test user's target (column 0) and negatives."""
  data = split
  candidates = np.concatenate([data.test.item[:, None], data.negatives], 1)
  users = pipeline.user_eval_dataset(
      data.test.user, HistoryIndex.from_interactions(
          data.dataset.interactions, data.dataset.num_users),
      history_length, user_features(data.dataset), batch_size=batch_size)

  @tf.function(reduce_retracing=True)
  def both(features, items):
    out = model.score(features, items, training=False)
    return out["relevance"], PDNModel.item_to_item_scores(out)

  personal, i2i = [], []
  start = 0
  for batch in users:
    n = int(batch["user_id"].shape[0])
    p, s = both(batch, tf.constant(candidates[start:start + n], tf.int32))
    personal.append(p.numpy())
    i2i.append(s.numpy())
    start += n
  return np.concatenate(personal), np.concatenate(i2i)


def evaluate(model: PDNModel, split: LeaveOneOut, *,
             history_length: int = 20,
             retriever: Optional[PDNRetriever] = None,
             batch_size: int = 256, full_ks: Sequence[int] = FULL_KS,
             outputs: Optional[Dict[str, np.ndarray]] = None
             ) -> Dict[str, float]:
  """Table 2's metrics of a trained `PDNModel` on a leave-one-out split.

      split = retrieval_tf.datasets.registry.leave_one_out(dataset)
      ...  # build_pdn_model(split.dataset, ...), fit
      pdn_tf.evaluate(model, split, history_length=20)
      # {"hr@10": 0.61, "ndcg@10": 0.35, "mrr": ..., "i2i_hr@10": ...,
      #  "i2i_ndcg@10": ..., "i2i_mrr": ...}

  Args:
    model: a trained `PDNModel` whose tables hold `split.dataset`.
    split: `retrieval_tf.datasets.registry.leave_one_out(...)`: training
      log, one target per test user, its sampled negatives.
    history_length: the TrigNet window (as in training).
    retriever: a `PDNRetriever` of the model; adds `recall@k` of its
      full-corpus top-k for each k in `full_ks` up to `retriever.max_k`
      (its pool size; larger k are left out).
    batch_size: users per scoring batch.
    full_ks: the recall cut-offs.
    outputs: a dict that, when given, receives the arrays behind the
      metrics: `personal`, `i2i` `[U, 1 + n]` and `top` `[U, max k]`.

  Returns:
    `{metric: value}` with the flat keys of the CLI's metrics.json.

  Raises:
    ValueError: arguments that do not fit the model or the split.
  """
  if model.num_items != split.dataset.num_items:
    raise ValueError(f"the model has {model.num_items} items, the split's "
                     f"dataset {split.dataset.num_items}: build the model "
                     "from split.dataset")
  if history_length < 1 or batch_size < 1:
    raise ValueError(f"history_length and batch_size must be >= 1, got "
                     f"{history_length} and {batch_size}")
  personal, i2i = sampled_scores(model, split, history_length, batch_size)
  rows = np.arange(len(split.test))
  metrics: Dict[str, float] = {}
  metrics.update(evaluation.evaluate_sampled(
      lambda r, c: personal[r], rows, split.test.item, split.negatives,
      ks=SAMPLED_KS))
  metrics.update({f"i2i_{k}": v for k, v in evaluation.evaluate_sampled(
      lambda r, c: i2i[r], rows, split.test.item, split.negatives,
      ks=SAMPLED_KS).items()})
  if outputs is not None:
    outputs.update(personal=personal, i2i=i2i)
  if retriever is not None:
    if not full_ks or min(full_ks) < 1:
      raise ValueError(f"full_ks must be positive cut-offs, got "
                       f"{list(full_ks)}")
    top = retrieve_users(retriever, split.dataset, split.test.user,
                         min(max(full_ks), retriever.max_k),
                         batch_size=batch_size)
    ks = [k for k in full_ks if k <= top.shape[1]]
    full = metrics_lib.ranking_report(topk=top,
                                      truth=split.test.item[:, None], ks=ks)
    metrics.update({k: v for k, v in full.items() if k.startswith("recall")})
    if outputs is not None:
      outputs["top"] = top
  return metrics
