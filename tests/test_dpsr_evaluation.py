"""DPSR evaluation: the Figure 6 polysemy metrics equal a plain NumPy count
of the retrieved items' meanings, of the meanings the heads cover, and of
relevance."""

import numpy as np
import pytest

from retrieval_tf.datasets import synthetic

from dpsr_tf import evaluation


@pytest.fixture(scope="module")
def world():
  return synthetic.generate(synthetic.SyntheticConfig.scaled(
      600, num_users=300, seed=3))


class _FixedScorer:
  """Retrieves a fixed list per query string, and per head."""

  def __init__(self, lists, head_lists):
    self.lists, self.head_lists = lists, head_lists

  def retrieve(self, rows, k):
    return np.stack([self.lists[q][:k] for q in rows["query"]])

  def head_retrieve(self, rows, k):
    return np.stack([[h[:k] for h in self.head_lists[q]]
                     for q in rows["query"]])


def _meaning_items(world, word, roots):
  """Each meaning's items (those of the word's root), ordered."""
  root_ids = [int(np.flatnonzero(world.root_names == r)[0]) for r in roots]
  return [np.flatnonzero(world.item_root == r) for r in root_ids]


def test_polysemy_metrics_equal_a_numpy_count(world):
  words = world.polysemous_words()
  assert words, "the default world has polysemous words"
  queries = {q: i for i, q in enumerate(world.query_strings)}
  k = 20
  lists, heads, expected_least, expected_recall = {}, {}, [], []
  items = np.arange(world.num_items)
  for word, roots in words.items():
    first, second = _meaning_items(world, word, roots)[:2]
    # 15 items of the first meaning, 5 of the second: shares 0.75 / 0.25.
    top = np.concatenate([first[:15], second[:5]])
    lists[word] = top
    heads[word] = [first[:k], np.concatenate([second[:10], first[15:25]])]
    if word not in queries:
      continue
    shares = [np.mean(world.item_root[top] == world.item_root[m[0]])
              for m in _meaning_items(world, word, roots)]
    expected_least.append(min(shares))
    relevant = world.relevance(queries[word], items) >= 2
    expected_recall.append(relevant[top].sum() / relevant.sum())
  out = evaluation.polysemy_metrics(_FixedScorer(lists, heads), world, k=k)
  assert out["polysemy_min_share@20"] == pytest.approx(
      np.mean(expected_least))
  assert out["polysemy_recall@20"] == pytest.approx(np.mean(expected_recall))
  # Head 0 is pure (1.0), head 1 half and half (0.5).
  assert out["polysemy_head_purity@20"] == pytest.approx(0.75)
  word, roots = next(iter(sorted(words.items())))
  for head, root, share in ((0, 0, 1.0), (1, 0, 0.5), (1, 1, 0.5)):
    assert out[f"polysemy_{word}_head{head}_{roots[root]}@20"] == (
        pytest.approx(share))
  # Only head 0 holds a majority of one meaning: one meaning per word.
  covered = [1 / len(roots) for word, roots in words.items()
             if word in queries]
  assert out["polysemy_meanings_covered@20"] == pytest.approx(
      np.mean(covered))
  # A second head that takes the second meaning covers two.
  for word, roots in words.items():
    heads[word][1] = _meaning_items(world, word, roots)[1][:k]
  out = evaluation.polysemy_metrics(_FixedScorer(lists, heads), world, k=k)
  assert out["polysemy_meanings_covered@20"] == pytest.approx(
      np.mean([2 * c for c in covered]))
  word, roots = next(iter(sorted(words.items())))
  assert out[f"polysemy_{word}_{roots[0]}@20"] == pytest.approx(
      np.mean(world.item_root[lists[word]] ==
              world.item_root[_meaning_items(world, word, roots)[0][0]]))


def test_polysemy_recall_is_one_when_every_relevant_item_is_retrieved(world):
  queries = {q: i for i, q in enumerate(world.query_strings)}
  items = np.arange(world.num_items)
  lists, heads = {}, {}
  for word in world.polysemous_words():
    if word not in queries:
      continue
    grade = world.relevance(queries[word], items)
    ranked = np.argsort(-grade, kind="stable")
    lists[word] = ranked
    heads[word] = [ranked]
  k = max(int((world.relevance(queries[w], items) >= 2).sum())
          for w in lists)
  out = evaluation.polysemy_metrics(_FixedScorer(lists, heads), world, k=k)
  assert out[f"polysemy_recall@{k}"] == pytest.approx(1.0)


def _rank_scorer(rank_of_positive):
  """Scores the first candidate (the positive) so that exactly
  `rank_of_positive[query]` random items beat it."""
  def score(rows, items):
    scores = np.zeros(items.shape)
    for r, q in enumerate(rows["query"]):
      scores[r, 0] = 0.5
      scores[r, 1:1 + rank_of_positive[q]] = 1.0
    return scores
  return score


def test_polysemous_top_k_counts_only_the_polysemous_rows():
  test = {"query": np.asarray(["apple", "red shoe", "apple", "bass"],
                              object),
          "item_id": np.asarray([1, 2, 3, 4])}
  score = _rank_scorer({"apple": 0, "bass": 5, "red shoe": 50})
  out = evaluation.polysemous_top_k_metrics(score, test, ["apple", "bass"],
                                            num_items=100, num_random=64)
  assert out["num_polysemous_rows"] == 3
  assert out["polysemous_top1"] == pytest.approx(2 / 3)
  assert out["polysemous_top10"] == pytest.approx(1.0)
  assert out["polysemous_mrr"] == pytest.approx((1 + 1 + 1 / 6) / 3)
  assert evaluation.polysemous_top_k_metrics(score, test, ["jaguar"],
                                             num_items=100) == {}


def test_public_evaluate_gives_table_2_metrics_of_a_model():
  import dpsr_tf  # pylint: disable=g-import-not-at-top
  from retrieval_tf.text import Tokenizer, padded_ids  # pylint: disable=g-import-not-at-top
  task = dpsr_tf.load_task("synthetic", synthetic_config=(
      synthetic.SyntheticConfig.scaled(200, num_users=60, seed=1)))
  tok = Tokenizer(num_buckets=1024)
  titles = padded_ids(tok, task.item_text, max_tokens=16)
  model = dpsr_tf.DPSRModel(task.num_items, titles.shape[1],
                            task.item_feature_sizes,
                            tokenizer=tok.get_config(), token_dim=8,
                            output_dim=8, hidden_units=(8,),
                            num_negatives=7)
  model.set_item_tables(titles, task.item_columns)
  got = dpsr_tf.evaluate(model, task, num_random_items=64, seed=2)
  for key in ("top1", "top10", "mrr", "auc", "p_good@100", "recall@100",
              "popularity@100", "token_table_top10", "head_win_share_1",
              "polysemy_min_share@100"):
    assert key in got, key
  scorer = evaluation.ModelScorer(model, dpsr_tf.all_item_embeddings(model))
  want = evaluation.top_k_metrics(scorer, task.test, task.num_items, 64,
                                  seed=2)
  want.update(evaluation.auc_metric(scorer, task.judged))
  for key, value in want.items():
    assert got[key] == pytest.approx(value), key
  with pytest.raises(ValueError, match="num_random_items"):
    dpsr_tf.evaluate(model, task, num_random_items=0)
  other = dpsr_tf.DPSRModel(task.num_items + 1, titles.shape[1],
                            task.item_feature_sizes, num_negatives=7)
  with pytest.raises(ValueError, match="items"):
    dpsr_tf.evaluate(other, task)
