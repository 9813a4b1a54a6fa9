"""Table 2's BM25 baselines (BM2.5 and BM2.5-u&b) with the maintained
`rank_bm25` library (Okapi BM25, k1 = 1.5, b = 0.75).

Terms come from the same in-graph tokenizer as DPSR (`retrieval_tf.text.
token_strings`): unigrams, or unigrams + bigrams, of the normalised text.
`BM25Scorer` is a scorer and a retriever in the sense of
`dpsr_tf.evaluation`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from retrieval_tf.text import token_strings


def terms(texts: Sequence[str], bigrams: bool, batch_size: int = 4096
          ) -> list:
  """Each text's BM25 terms (lists of str)."""
  kinds = ("unigram", "bigram") if bigrams else ("unigram",)
  texts = np.asarray(list(texts), dtype=object).astype(str)
  out = []
  for s in range(0, len(texts), batch_size):
    tokens = token_strings(texts[s:s + batch_size], kinds=kinds).to_list()
    out.extend([[t.decode("utf-8") for t in row] for row in tokens])
  return out


class BM25Scorer:
  """Okapi BM25 over the item texts."""

  def __init__(self, item_text: Sequence[str], bigrams: bool = False):
    try:
      from rank_bm25 import BM25Okapi  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("the BM25 baselines need rank_bm25 "
                        "(pip install rank_bm25)") from e
    self.bigrams = bigrams
    # rank_bm25 divides by the mean length: an empty corpus entry is fine,
    # an empty corpus is not.
    self.index = BM25Okapi([t or ["<empty>"] for t in terms(item_text,
                                                            bigrams)])

  def __call__(self, rows: Mapping[str, np.ndarray], items: np.ndarray
               ) -> np.ndarray:
    out = np.zeros(items.shape, np.float64)
    for r, query in enumerate(terms(rows["query"], self.bigrams)):
      out[r] = self.index.get_batch_scores(query, items[r].tolist())
    return out

  def retrieve(self, rows: Mapping[str, np.ndarray], k: int) -> np.ndarray:
    out = []
    for query in terms(rows["query"], self.bigrams):
      scores = self.index.get_scores(query)
      top = np.argpartition(-scores, k - 1)[:k]
      out.append(top[np.argsort(-scores[top], kind="stable")])
    return np.asarray(out)
