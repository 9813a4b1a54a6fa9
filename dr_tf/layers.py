"""Deep Retrieval's building blocks (Gao et al., CIKM'21, Sec. 2-3).

* `BehaviorEncoder`: the user encoder of Sec. 4.1, a GRU over the behaviour
  sequence (truncated / padded to a fixed length, 69 in the paper), masked,
  without the user id (train, validation and test users are disjoint).
* `StructureModel`: D layers of K nodes (Sec. 2.1). Layer d is an MLP and a
  K-way softmax over CAT(emb(x), emb(c_1), ..., emb(c_{d-1})), giving
  p(c_d | x, c_1..c_{d-1}); `path_log_prob` is log p(c | x) (Eq. 1),
  `multi_path_log_likelihood` the multi-path objective of Sec. 2.1
  (log sum_j p(pi_j(y) | x)).
* `beam_search`: Algorithm 1 (Sec. 2.2) in batched TF ops and
  log-probabilities.
* `PathAssignment`: the item-to-path mapping pi (V x J, non-trainable) and
  its inverse, the path -> items inverted index in CSR form.
* `PathScoreEstimator`: the streaming top-S estimate of
  s[v, c] = sum_{i: y_i = v} p(c | x_i) (Sec. 3, "Remark on estimating
  s[v, c] with streaming training", decay eta).
* `SoftmaxReranker`: the softmax model of Sec. 2.3 that reranks the items
  of the retrieved paths, trained by sampled or in-batch softmax.

A path c = (c_1, ..., c_D), c_d in [0, K), is also written as one integer id
sum_d c_d K^(D-d) (`path_ids` / `path_codes`); K^D must fit in int32.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from retrieval_tf.compat import keras, tf
from retrieval_tf.layers import masked_lookup

import tensorflow_recommenders as tfrs  # pylint: disable=g-bad-import-order

_PACKAGE = "dr_tf"
_INT32_MAX = np.iinfo(np.int32).max
# The score given to padding (no candidate) in rankings; a finite float so
# that JSON / REST answers stay valid (never -inf or NaN).
NO_SCORE = float(np.finfo(np.float32).min)


def check_structure(num_nodes: int, depth: int, num_paths: int = 1,
                    beam_size: int = 1) -> int:
  """Validates K, D, J and B; returns the number of paths K^D.

  Raises:
    ValueError: K < 2, D < 1, K^D beyond int32, J or B outside 1..K^D.
  """
  if num_nodes < 2:
    raise ValueError(f"K (nodes per layer) must be >= 2, got {num_nodes}")
  if depth < 1:
    raise ValueError(f"D (layers) must be >= 1, got {depth}")
  total = int(num_nodes) ** int(depth)
  if total > _INT32_MAX:
    raise ValueError(f"K^D = {num_nodes}^{depth} = {total} paths do not fit "
                     "in int32 path ids; lower K or D")
  if not 1 <= num_paths <= total:
    raise ValueError(f"J (paths per item) must be in 1..K^D = {total}, got "
                     f"{num_paths}")
  if not 1 <= beam_size <= total:
    raise ValueError(f"B (beam size) must be in 1..K^D = {total}, got "
                     f"{beam_size}")
  return total


def path_ids(codes, num_nodes: int):
  """`[..., D]` codes -> `[...]` int32 ids sum_d c_d K^(D-d) (TF or NumPy)."""
  depth = codes.shape[-1]
  weights = np.asarray([num_nodes ** (depth - 1 - d) for d in range(depth)],
                       np.int32)
  if isinstance(codes, np.ndarray):
    return (codes.astype(np.int64) @ weights).astype(np.int32)
  return tf.reduce_sum(tf.cast(codes, tf.int32) * weights, axis=-1)


def path_codes(ids, num_nodes: int, depth: int):
  """`[...]` int ids -> `[..., D]` int32 codes (TF or NumPy)."""
  weights = [num_nodes ** (depth - 1 - d) for d in range(depth)]
  if isinstance(ids, np.ndarray):
    ids = ids.astype(np.int64)
    return np.stack([(ids // w) % num_nodes for w in weights],
                    axis=-1).astype(np.int32)
  ids = tf.cast(ids, tf.int32)
  return tf.stack([(ids // w) % num_nodes for w in weights], axis=-1)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class BehaviorEncoder(keras.layers.Layer):
  """emb(x): a masked GRU over the behaviour sequence (Sec. 4.1).

  Input `history [N, L]` int item ids (negative = padding) and an optional
  `mask [N, L]`; output the GRU's last state `[N, units]`. Masked steps keep
  the state, so padding on either side is ignored. An empty history (all
  padding) gives the zero state: the heads above then answer from their
  biases alone, the same defined "no-history" user for every such request.
  """

  def __init__(self, num_items: int, embedding_dim: int = 64,
               units: int = 64, **kwargs):
    super().__init__(**kwargs)
    if num_items < 1 or embedding_dim < 1 or units < 1:
      raise ValueError("BehaviorEncoder needs num_items, embedding_dim and "
                       f"units >= 1, got {num_items}, {embedding_dim}, "
                       f"{units}")
    self.num_items = int(num_items)
    self.embedding_dim = int(embedding_dim)
    self.units = int(units)
    self.embedding = keras.layers.Embedding(self.num_items,
                                            self.embedding_dim,
                                            name="item_embedding")
    self.gru = keras.layers.GRU(self.units, name="gru")

  def call(self, history, mask=None):
    vectors, valid = masked_lookup(self.embedding, history, self.num_items,
                                   mask, what="history id")
    return self.gru(vectors, mask=valid)

  def get_config(self):
    config = super().get_config()
    config.update({"num_items": self.num_items,
                   "embedding_dim": self.embedding_dim, "units": self.units})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class StructureModel(keras.layers.Layer):
  """The K x D structure model p(c | x) (Sec. 2.1, Fig. 1b).

  Layer d (0-based) reads CAT(emb(x), E_1[c_1], ..., E_d[c_d]) — the user
  embedding and the embeddings of the codes chosen in the layers before it —
  through an MLP (`hidden_units` ReLU layers) to K logits; its K-way softmax
  is p(c_{d+1} | x, c_1..c_d). E_d are K x `code_dim` tables (the "path
  embeddings"), one per layer but the last.

  Args:
    num_nodes: K (>= 2); depth: D (>= 1).
    code_dim: size of a code embedding (default: the user embedding's).
    hidden_units: the ReLU layers of each layer's MLP.
  """

  def __init__(self, num_nodes: int, depth: int,
               code_dim: Optional[int] = None,
               hidden_units: Sequence[int] = (128,), **kwargs):
    super().__init__(**kwargs)
    self.num_paths_total = check_structure(num_nodes, depth)
    self.num_nodes = int(num_nodes)
    self.depth = int(depth)
    self.code_dim = None if code_dim is None else int(code_dim)
    self.hidden_units = [int(u) for u in hidden_units]
    # One flat list (nested lists of layers escape Keras' `.keras` saving);
    # layer d's MLP is `mlp(d)`.
    self.mlp_layers = []
    for d in range(self.depth):
      self.mlp_layers += [keras.layers.Dense(u, activation="relu",
                                             name=f"layer{d}_hidden{i}")
                          for i, u in enumerate(self.hidden_units)]
      self.mlp_layers.append(keras.layers.Dense(self.num_nodes,
                                                name=f"layer{d}_logits"))

  def mlp(self, d: int):
    """The Dense layers of structure layer `d` (0-based), input first."""
    size = len(self.hidden_units) + 1
    return self.mlp_layers[d * size:(d + 1) * size]

  def build(self, input_shape):
    user_dim = int(input_shape[-1])
    dim = self.code_dim or user_dim
    self.code_embeddings = [
        self.add_weight(name=f"code_embedding_{d}",
                        shape=(self.num_nodes, dim),
                        initializer=keras.initializers.RandomNormal(
                            stddev=0.1))
        for d in range(self.depth - 1)]
    for d in range(self.depth):
      blocks = self.mlp(d)
      width = user_dim + d * dim
      for block in blocks:
        block.build(tf.TensorShape([None, width]))
        width = block.units
    super().build(input_shape)

  def call(self, user):
    """log p(c_1 | x): `[N, K]` (builds the layer)."""
    return self.layer_log_probs(user, tf.zeros([tf.shape(user)[0], 0],
                                               tf.int32))

  def layer_log_probs(self, user, prefix):
    """log p(c_{d+1} | x, prefix) for `prefix [..., d]` codes and `user`
    `[N, e]` with `prefix` `[N, d]` or `[N, P, d]`; returns `[..., K]`."""
    if not self.built:
      self.build(user.shape)
    d = prefix.shape[-1]
    parts = [user if prefix.shape.rank == 2 else tf.broadcast_to(
        user[:, tf.newaxis, :],
        tf.concat([tf.shape(prefix)[:2], tf.shape(user)[-1:]], 0))]
    for level in range(d):
      parts.append(tf.gather(self.code_embeddings[level], prefix[..., level]))
    x = tf.concat(parts, axis=-1) if d else parts[0]
    for block in self.mlp(d):
      x = block(x)
    return tf.nn.log_softmax(x, axis=-1)

  def path_log_prob(self, user, paths):
    """log p(c | x) = sum_d log p(c_d | x, c_<d) (Eq. 1) for `paths`
    `[N, P, D]` codes; returns `[N, P]`."""
    paths = tf.cast(paths, tf.int32)
    total = 0.0
    for d in range(self.depth):
      log_probs = self.layer_log_probs(user, paths[:, :, :d])
      total += tf.gather(log_probs, paths[:, :, d], batch_dims=2)
    return total

  def multi_path_log_likelihood(self, user, paths):
    """log sum_j p(pi_j(y) | x) (the multi-path Q_str of Sec. 2.1) for the
    item's J paths `[N, J, D]`; returns `[N]`."""
    return tf.reduce_logsumexp(self.path_log_prob(user, paths), axis=-1)

  def beam_search(self, user, beam_size: int):
    """See `beam_search`."""
    return beam_search(self, user, beam_size)

  def get_config(self):
    config = super().get_config()
    config.update({"num_nodes": self.num_nodes, "depth": self.depth,
                   "code_dim": self.code_dim,
                   "hidden_units": self.hidden_units})
    return config


def beam_search(structure: StructureModel, user, beam_size: int
                ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Algorithm 1 (Sec. 2.2): the B most probable paths by beam search.

  C_1 = the top-B nodes of p(c_1 | x); for d = 2..D, C_d = the top-B of
  { log p(c_1..c_{d-1} | x) + log p(c_d | x, c_1..c_{d-1}) : prefix in
  C_{d-1}, c_d in [K] }; the answer is C_D. The beam holds min(B, K^d)
  prefixes at layer d (fewer exist before). B = 1 is greedy search. Batched
  over users, TF ops only (usable in `tf.function` and SavedModels).

  Args:
    structure: the `StructureModel`.
    user: `[N, e]` user embeddings.
    beam_size: B, a Python int in 1..K^D.

  Returns:
    `paths [N, B, D]` int32 codes and `log_probs [N, B]` (log p(c | x)),
    best first.
  """
  check_structure(structure.num_nodes, structure.depth,
                  beam_size=int(beam_size))
  k = structure.num_nodes
  log_probs = structure.layer_log_probs(
      user, tf.zeros([tf.shape(user)[0], 0], tf.int32))       # [N, K]
  beam = min(beam_size, k)
  scores, first = tf.math.top_k(log_probs, k=beam)
  paths = first[:, :, tf.newaxis]                              # [N, b, 1]
  for _ in range(1, structure.depth):
    width = paths.shape[1]
    step = structure.layer_log_probs(user, paths)              # [N, b, K]
    total = tf.reshape(scores[:, :, tf.newaxis] + step, [-1, width * k])
    beam = min(beam_size, width * k)
    scores, flat = tf.math.top_k(total, k=beam)
    parents = tf.gather(paths, flat // k, batch_dims=1)
    paths = tf.concat([parents, (flat % k)[:, :, tf.newaxis]], axis=-1)
  return paths, scores


def random_assignment(num_items: int, num_paths: int, total_paths: int,
                      seed: int = 0) -> np.ndarray:
  """A random pi: `[V, J]` int32 path ids, distinct within each row
  (the EM's start, Sec. 3)."""
  rng = np.random.default_rng(seed)
  out = rng.integers(0, total_paths, size=(num_items, num_paths))
  for j in range(1, num_paths):
    while True:
      clash = (out[:, j:j + 1] == out[:, :j]).any(axis=1)
      if not clash.any():
        break
      out[clash, j] = rng.integers(0, total_paths, size=int(clash.sum()))
  return out.astype(np.int32)


def inverted_index(item_paths: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The path -> items index of pi in CSR form.

  Returns `(keys, offsets, items)`: `keys [P]` the used path ids, ascending;
  the items of path `keys[r]` are `items[offsets[r]:offsets[r + 1]]`
  (ascending). Sized V*J (padded: keys with int32 max, offsets with V*J) so
  that its variables keep one shape across M-steps.
  """
  num_items, num_paths = item_paths.shape
  flat = item_paths.astype(np.int64).ravel()
  owners = np.repeat(np.arange(num_items, dtype=np.int64), num_paths)
  order = np.lexsort((owners, flat))
  flat, owners = flat[order], owners[order]
  keys, starts = np.unique(flat, return_index=True)
  size = num_items * num_paths
  padded_keys = np.full(size, _INT32_MAX, np.int32)
  padded_keys[:len(keys)] = keys
  offsets = np.full(size + 1, size, np.int32)
  offsets[:len(keys)] = starts
  return padded_keys, offsets, owners.astype(np.int32)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class PathAssignment(keras.layers.Layer):
  """pi (V x J path ids) and its inverted index, as non-trainable variables
  saved with the model and exported with the servable.

  `assign(item_paths)` replaces both (after an M-step); `paths_of(items)`
  is pi(y) as codes `[N, J, D]`; `items_of(path_ids)` gathers the items of
  retrieved paths through the CSR index.
  """

  def __init__(self, num_items: int, num_paths: int, num_nodes: int,
               depth: int, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.total_paths = check_structure(num_nodes, depth, num_paths)
    if num_items < 1:
      raise ValueError(f"num_items must be >= 1, got {num_items}")
    self.num_items, self.num_paths = int(num_items), int(num_paths)
    self.num_nodes, self.depth, self.seed = int(num_nodes), int(depth), seed
    initial = random_assignment(self.num_items, self.num_paths,
                                self.total_paths, seed)
    keys, offsets, items = inverted_index(initial)
    self.item_paths = self._state("item_paths", initial)
    self.index_keys = self._state("index_keys", keys)
    self.index_offsets = self._state("index_offsets", offsets)
    self.index_items = self._state("index_items", items)
    self.built = True     # every weight exists, whatever `call` sees

  def _state(self, name: str, value: np.ndarray):
    return self.add_weight(
        name=name, shape=value.shape, dtype=tf.int32, trainable=False,
        initializer=keras.initializers.Constant(value),
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def assign(self, item_paths: np.ndarray) -> None:
    """Sets pi to `item_paths [V, J]` and rebuilds the inverted index.

    Raises:
      ValueError: wrong shape, ids outside 0..K^D-1, or a row that repeats
        a path.
    """
    item_paths = np.asarray(item_paths)
    if item_paths.shape != (self.num_items, self.num_paths):
      raise ValueError(f"pi must have shape {(self.num_items, self.num_paths)}"
                       f", got {item_paths.shape}")
    if item_paths.min() < 0 or item_paths.max() >= self.total_paths:
      raise ValueError(f"path ids must be in 0..{self.total_paths - 1}")
    ordered = np.sort(item_paths, axis=1)
    if (ordered[:, 1:] == ordered[:, :-1]).any():
      bad = int(np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(1))[0])
      raise ValueError(f"item {bad} is assigned the same path twice: "
                       f"{item_paths[bad].tolist()}")
    keys, offsets, items = inverted_index(item_paths)
    self.item_paths.assign(item_paths.astype(np.int32))
    self.index_keys.assign(keys)
    self.index_offsets.assign(offsets)
    self.index_items.assign(items)

  def call(self, items):
    return self.paths_of(items)

  def paths_of(self, items):
    """pi(y): `[N]` items -> `[N, J, D]` int32 codes."""
    return path_codes(tf.gather(self.item_paths, items), self.num_nodes,
                      self.depth)

  def items_of(self, ids):
    """The items of paths `ids [N, B]` (int32 path ids), in path order:
    `[N, M]` int32, padded with -1 (M = the largest row)."""
    ids = tf.cast(ids, tf.int32)
    shape = tf.shape(ids)
    flat = tf.reshape(ids, [1, -1])
    pos = tf.reshape(tf.searchsorted(self.index_keys[tf.newaxis, :], flat,
                                     side="left", out_type=tf.int32), [-1])
    pos = tf.minimum(pos, tf.size(self.index_keys) - 1)
    found = tf.equal(tf.gather(self.index_keys, pos), tf.reshape(ids, [-1]))
    starts = tf.gather(self.index_offsets, pos)
    ends = tf.where(found, tf.gather(self.index_offsets, pos + 1), starts)
    ranges = tf.ragged.range(starts, ends)                      # [N*B, (n)]
    per_row = tf.reduce_sum(tf.reshape(ends - starts, shape), axis=1)
    positions = tf.RaggedTensor.from_row_lengths(ranges.flat_values,
                                                 per_row)
    return tf.gather(self.index_items,
                     positions).to_tensor(default_value=-1)

  def get_config(self):
    config = super().get_config()
    config.update({"num_items": self.num_items, "num_paths": self.num_paths,
                   "num_nodes": self.num_nodes, "depth": self.depth,
                   "seed": self.seed})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class PathScoreEstimator(keras.layers.Layer):
  """Streaming top-S estimates of s[v, c] (Sec. 3, after Metwally et al.).

  State: `paths [V, S]` int32 path ids (-1: empty slot, score 0) and
  `scores [V, S]`. For a training instance of item v whose beam search gave
  the new list s'[v, c'_1..S], `update`:
  (1) min_score = min_i s[v, c_i] (an empty slot counts 0);
  (2) A = c_1..S U c'_1..S;
  (3) c in both: eta s[v, c] + s'[v, c]; only in the new list:
      eta min_score + s'[v, c]; only in the recorded list: eta s[v, c];
  (4) keep the S largest.
  Instances of the same item within a batch are applied one after another
  (in batch order), so the result equals the one-instance-at-a-time rule.
  """

  def __init__(self, num_items: int, top_s: int, decay: float = 0.999,
               **kwargs):
    super().__init__(**kwargs)
    if top_s < 1 or num_items < 1:
      raise ValueError(f"PathScoreEstimator needs S >= 1 and num_items >= 1,"
                       f" got {top_s} and {num_items}")
    if not 0.0 < decay <= 1.0:
      raise ValueError(f"the decay eta must be in (0, 1], got {decay}")
    self.num_items, self.top_s, self.decay = (int(num_items), int(top_s),
                                              float(decay))
    agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.paths = self.add_weight(
        name="paths", shape=(self.num_items, self.top_s), dtype=tf.int32,
        trainable=False, initializer=keras.initializers.Constant(-1),
        aggregation=agg)
    self.scores = self.add_weight(
        name="scores", shape=(self.num_items, self.top_s), dtype=tf.float32,
        trainable=False, initializer="zeros", aggregation=agg)
    self.built = True     # every weight exists, whatever `call` sees

  def reset(self) -> None:
    self.paths.assign(tf.fill(tf.shape(self.paths), -1))
    self.scores.assign(tf.zeros_like(self.scores))

  def update(self, items, new_paths, new_scores):
    """Streams `items [N]` with their new lists `new_paths [N, S']` (distinct
    path ids per row) and `new_scores [N, S']` (p(c | x_i), S' <= S)."""
    items = tf.cast(items, tf.int32)
    new_paths = tf.cast(new_paths, tf.int32)
    new_scores = tf.cast(new_scores, tf.float32)
    # Occurrence number of each row among the batch's rows of its item.
    n = tf.shape(items)[0]
    order = tf.argsort(items, stable=True)
    sorted_items = tf.gather(items, order)
    first = tf.concat([[True], sorted_items[1:] != sorted_items[:-1]], 0)
    run_start = tf.math.cumsum(tf.cast(first, tf.int32)) - 1
    starts = tf.gather(tf.boolean_mask(tf.range(n), first), run_start)
    rank = tf.scatter_nd(order[:, tf.newaxis], tf.range(n) - starts, [n])
    rounds = tf.reduce_max(rank) + 1

    def body(r):
      rows = tf.reshape(tf.where(tf.equal(rank, r)), [-1])
      updates = self._merge(tf.gather(items, rows),
                            tf.gather(new_paths, rows),
                            tf.gather(new_scores, rows))
      with tf.control_dependencies(updates):
        return [r + 1]

    tf.while_loop(lambda r: r < rounds, body, [tf.constant(0)])

  def _merge(self, items, new_paths, new_scores):
    eta = self.decay
    old_paths = tf.gather(self.paths, items)                   # [n, S]
    old_scores = tf.gather(self.scores, items)
    min_score = tf.reduce_min(old_scores, axis=1, keepdims=True)
    match = tf.logical_and(
        tf.equal(new_paths[:, :, tf.newaxis], old_paths[:, tf.newaxis, :]),
        (old_paths >= 0)[:, tf.newaxis, :])                    # [n, S', S]
    matched = tf.reduce_any(match, axis=2)
    old_of_new = tf.reduce_sum(
        tf.where(match, old_scores[:, tf.newaxis, :], 0.0), axis=2)
    merged_new = new_scores + eta * tf.where(matched, old_of_new, min_score)
    keep_old = tf.logical_and(old_paths >= 0,
                              tf.logical_not(tf.reduce_any(match, axis=1)))
    all_paths = tf.concat([new_paths, old_paths], axis=1)
    all_scores = tf.concat(
        [merged_new, tf.where(keep_old, eta * old_scores, -np.inf)], axis=1)
    top, where = tf.math.top_k(all_scores, k=self.top_s)
    kept = tf.math.is_finite(top)
    paths = tf.where(kept, tf.gather(all_paths, where, batch_dims=1), -1)
    return [self.paths.scatter_nd_update(items[:, tf.newaxis], paths),
            self.scores.scatter_nd_update(items[:, tf.newaxis],
                                          tf.where(kept, top, 0.0))]

  def get_config(self):
    config = super().get_config()
    config.update({"num_items": self.num_items, "top_s": self.top_s,
                   "decay": self.decay})
    return config


@keras.utils.register_keras_serializable(package=_PACKAGE)
class SoftmaxReranker(keras.layers.Layer):
  """The softmax model p_softmax(y | x) over V items (Sec. 2.3); its logit
  u . w_y + b_y reranks the retrieved items and is what brute force ranks
  all items by.

  Two estimators of the full softmax, both corrected by log Q (the
  probability of drawing an item as a negative) and with accidental hits
  removed:

  * `sampled_loss(query, labels, log_q, num_sampled)`: the paper's sampled
    softmax, `num_sampled` negatives drawn (with replacement) from
    `exp(log_q)` through `tf.nn.sampled_softmax_loss`;
  * `in_batch_loss(query, labels, log_q)`: the other positives of the batch
    are the negatives (Yi et al., RecSys'19), through
    `tfrs.tasks.Retrieval`; `log_q` is then the items' unigram frequency.
  """

  def __init__(self, num_items: int, dim: int, **kwargs):
    super().__init__(**kwargs)
    if num_items < 2 or dim < 1:
      raise ValueError(f"SoftmaxReranker needs num_items >= 2 and dim >= 1, "
                       f"got {num_items} and {dim}")
    self.num_items, self.dim = int(num_items), int(dim)
    self.item_weights = self.add_weight(
        name="item_weights", shape=(self.num_items, self.dim),
        initializer=keras.initializers.RandomNormal(stddev=0.05))
    self.item_bias = self.add_weight(name="item_bias",
                                     shape=(self.num_items,),
                                     initializer="zeros")
    # Per-example losses (reduction NONE): the mean is taken here, so the
    # loss has the scale of `sampled_loss` under any distribution strategy.
    self._in_batch_task = tfrs.tasks.Retrieval(
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.NONE),
        remove_accidental_hits=True)

  def call(self, query, items):
    """Logits of `items [N, M]` (ids >= 0) for `query [N, dim]`."""
    weights = tf.gather(self.item_weights, items)
    return (tf.einsum("nd,nmd->nm", query, weights) +
            tf.gather(self.item_bias, items))

  def all_logits(self, query):
    """`[N, V]` logits of every item (brute force)."""
    return tf.matmul(query, self.item_weights,
                     transpose_b=True) + self.item_bias

  def sampled_loss(self, query, labels, log_q, num_sampled: int):
    """Mean sampled-softmax loss of `labels [N]` for `query [N, dim]`."""
    labels = tf.cast(tf.reshape(labels, [-1, 1]), tf.int64)
    sampled = tf.random.categorical(log_q[tf.newaxis, :], num_sampled,
                                    dtype=tf.int64)[0]
    q = tf.exp(log_q)
    expected_true = num_sampled * tf.gather(q, labels)
    expected_sampled = num_sampled * tf.gather(q, sampled)
    return tf.reduce_mean(tf.nn.sampled_softmax_loss(
        self.item_weights, self.item_bias, labels, query, num_sampled,
        self.num_items, num_true=1,
        sampled_values=(sampled, expected_true, expected_sampled),
        remove_accidental_hits=True))

  def in_batch_loss(self, query, labels, log_q):
    """Mean in-batch softmax loss of `labels [N]` for `query [N, dim]`:
    row i's logits are u_i . w_{y_j} + b_{y_j} - log Q(y_j) over the batch's
    items y_j; an item equal to y_i elsewhere in the batch is not a
    negative. The bias rides in the dot product as a constant-1 column."""
    labels = tf.reshape(labels, [-1])
    candidates = tf.concat(
        [tf.gather(self.item_weights, labels),
         tf.gather(self.item_bias, labels)[:, tf.newaxis]], axis=1)
    query = tf.concat([query, tf.ones_like(query[:, :1])], axis=1)
    return tf.reduce_mean(self._in_batch_task(
        query, candidates,
        candidate_sampling_probability=tf.exp(tf.gather(log_q, labels)),
        candidate_ids=labels, compute_metrics=False))

  def get_config(self):
    config = super().get_config()
    config.update({"num_items": self.num_items, "dim": self.dim})
    return config
