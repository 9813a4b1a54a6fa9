"""`DeepRetrievalModel`: the DR structure model trained jointly with a
softmax reranker (Sec. 2.3), retrieval by beam search + rerank.

    h = GRU(behaviour sequence)                      (Sec. 4.1)
    emb(x) = W_s h      -> StructureModel, p(c | x)  (Sec. 2.1)
    q(x)   = W_r h      -> SoftmaxReranker, u . w_y + b_y   (Sec. 2.3)

Training objective (maximised): Q = Q_pen + Q_softmax; Q_pen's penalty term
does not depend on theta, so the gradient step minimises
-mean log sum_j p(pi_j(y) | x) + softmax_weight * softmax loss, the softmax
loss estimated by the paper's sampled softmax or by in-batch negatives.
Each step also streams the examples' top-S beam-search paths into the
score estimator used by the M-step (`dr_tf.em`).

`retrieve` is the inference path that the servable exports: beam search
(B paths) -> the paths' items through the inverted index -> duplicates and
excluded items dropped -> top-k by the reranker (or, without reranking, in
path order).

`fit` runs the EM of Sec. 3 by itself: unless the callbacks already hold
one, it adds a `dr_tf.em.EMCallback` (M-step at epoch ends, from the config's
`alpha`, `m_step_sweeps`, `m_step_start_epoch`, N_v from `set_item_counts`)
and, with `freeze_epoch` set, a `dr_tf.em.FreezeReranker`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from retrieval_tf.compat import keras, tf

from retrieval_tf.saving import SavableModel

from dr_tf import em
from dr_tf import layers as dr_layers
from dr_tf.layers import NO_SCORE

SOFTMAX_ESTIMATORS = ("sampled", "in_batch")


@keras.utils.register_keras_serializable(package="dr_tf")
class DeepRetrievalModel(SavableModel, keras.Model):
  """Deep Retrieval with the softmax reranker (Sec. 2-3).

  Inputs (feature dicts, as `dr_tf.training_dataset` yields them):
  `history` int32 `[N, L]` item ids (-1 = padding, most recent last),
  `history_mask` bool `[N, L]` (optional), and for training `item_id` int32
  `[N]`, the positive. `call` returns emb(x) `[N, user_dim]`; `retrieve`
  gives the top-k items; `model.evaluate` reports the losses, `hr@{eval_k}`
  (the positive in the top `eval_k` of `retrieve`, over the whole catalogue)
  and `beam_recall` (the positive among the items of the B beam paths).

  All state lives in variables whose shapes follow from the config (pi and
  its inverted index, the score estimates, N_v, log Q), so `.keras` files,
  SavedModels and `load_weights` restore every answer of `retrieve`.

  Example:

      model = dr_tf.DeepRetrievalModel(num_items, num_nodes=16, depth=2)
      model.set_item_counts(np.bincount(train.item, minlength=num_items))
      model.compile(optimizer=keras.optimizers.Adam(0.005))
      model.fit(dr_tf.training_dataset(train, batch_size=256,
                                       history_length=20), epochs=4)
      items, scores, _ = model.retrieve(history, k=10)

  Args:
    num_items: V.
    num_nodes, depth, num_paths: K, D, J.
    beam_size: B of retrieval (Algorithm 1), 1..K^D.
    score_paths: S, candidate paths per item kept for the M-step (>= J;
      0: no score collection and no EM, e.g. a model used only for serving).
    score_decay: eta of the streaming estimate (0.999).
    embedding_dim: item embedding size of the encoder; gru_units: its state.
    user_dim: size of emb(x); code_dim: of a code embedding.
    hidden_units: each structure layer's MLP.
    rerank_dim: size of the reranker's vectors.
    softmax: how Q_softmax is estimated: "sampled" (the paper's sampled
      softmax over `num_sampled` negatives drawn from the sampling
      distribution) or "in_batch" (the batch's other items are the
      negatives); both logQ-corrected.
    num_sampled: sampled-softmax negatives; softmax_weight: weight of
      Q_softmax in Q.
    seed: seed of the random initial pi.
    alpha, m_step_sweeps, m_step_start_epoch: the M-step that `fit` runs
      by default (Algorithm 2's penalty factor and T; the first epoch,
      0-based, that ends with an M-step).
    freeze_epoch: epoch (0-based) from which `fit` freezes the reranker's
      item embeddings (Sec. 4.1); None: never.
    eval_k: the k of the `hr@k` metric of `model.evaluate`.

  Raises:
    ValueError: a structure outside check_structure's bounds, S outside
      0 or J..K^D, an unknown `softmax`, `num_sampled` outside 1..V-1, or
      negative EM settings.
  """

  def __init__(self, num_items: int, num_nodes: int = 30, depth: int = 3,
               num_paths: int = 3, beam_size: int = 20,
               score_paths: int = 20, score_decay: float = 0.999,
               embedding_dim: int = 64, gru_units: int = 64,
               user_dim: int = 64, code_dim: Optional[int] = None,
               hidden_units: Sequence[int] = (128,), rerank_dim: int = 64,
               softmax: str = "in_batch", num_sampled: int = 200,
               softmax_weight: float = 1.0, seed: int = 0,
               alpha: float = 1.0, m_step_sweeps: int = 3,
               m_step_start_epoch: int = 0,
               freeze_epoch: Optional[int] = None, eval_k: int = 10,
               **kwargs):
    super().__init__(**kwargs)
    dr_layers.check_structure(num_nodes, depth, num_paths, beam_size)
    if score_paths and not num_paths <= score_paths <= num_nodes ** depth:
      raise ValueError(f"S (score paths) must be 0 or in J..K^D = "
                       f"{num_paths}..{num_nodes ** depth}, got "
                       f"{score_paths}")
    if softmax not in SOFTMAX_ESTIMATORS:
      raise ValueError(f"softmax must be one of {SOFTMAX_ESTIMATORS}, got "
                       f"{softmax!r}")
    if num_sampled < 1 or num_sampled >= num_items:
      raise ValueError(f"num_sampled must be in 1..V-1 = {num_items - 1}, "
                       f"got {num_sampled}")
    if alpha < 0 or m_step_sweeps < 1 or m_step_start_epoch < 0:
      raise ValueError(f"need alpha >= 0, m_step_sweeps >= 1 and "
                       f"m_step_start_epoch >= 0, got {alpha}, "
                       f"{m_step_sweeps}, {m_step_start_epoch}")
    if freeze_epoch is not None and freeze_epoch < 0:
      raise ValueError(f"freeze_epoch must be None or >= 0, got "
                       f"{freeze_epoch}")
    if eval_k < 1:
      raise ValueError(f"eval_k must be >= 1, got {eval_k}")
    self.config_ = dict(
        num_items=int(num_items), num_nodes=int(num_nodes), depth=int(depth),
        num_paths=int(num_paths), beam_size=int(beam_size),
        score_paths=int(score_paths), score_decay=float(score_decay),
        embedding_dim=int(embedding_dim), gru_units=int(gru_units),
        user_dim=int(user_dim), code_dim=code_dim,
        hidden_units=[int(u) for u in hidden_units],
        rerank_dim=int(rerank_dim), softmax=softmax,
        num_sampled=int(num_sampled),
        softmax_weight=float(softmax_weight), seed=int(seed),
        alpha=float(alpha), m_step_sweeps=int(m_step_sweeps),
        m_step_start_epoch=int(m_step_start_epoch),
        freeze_epoch=None if freeze_epoch is None else int(freeze_epoch),
        eval_k=int(eval_k))
    self.num_items, self.beam_size = int(num_items), int(beam_size)
    self.num_nodes, self.depth = int(num_nodes), int(depth)
    self.softmax, self.num_sampled = softmax, num_sampled
    self.softmax_weight = softmax_weight
    self.eval_k = int(eval_k)
    self.encoder = dr_layers.BehaviorEncoder(num_items, embedding_dim,
                                             gru_units, name="encoder")
    self.user_projection = keras.layers.Dense(user_dim,
                                              name="user_projection")
    self.query_projection = keras.layers.Dense(rerank_dim,
                                               name="query_projection")
    self.structure = dr_layers.StructureModel(
        num_nodes, depth, code_dim, hidden_units, name="structure")
    self.assignment = dr_layers.PathAssignment(
        num_items, num_paths, num_nodes, depth, seed=seed, name="assignment")
    self.reranker = dr_layers.SoftmaxReranker(num_items, rerank_dim,
                                              name="reranker")
    self.score_estimator = (dr_layers.PathScoreEstimator(
        num_items, score_paths, score_decay, name="score_estimator")
                            if score_paths else None)
    # N_v of the M-step (zeros until `set_item_counts`) and log Q of the
    # softmax negatives (uniform until set).
    self.item_counts = self.add_weight(
        name="item_counts", shape=(num_items,), trainable=False,
        initializer="zeros")
    self.sampling_log_q = self.add_weight(
        name="sampling_log_q", shape=(num_items,), trainable=False,
        initializer=keras.initializers.Constant(-np.log(num_items)))
    self.reranker_frozen = False
    # `model.evaluate`'s report: the losses and retrieval metrics averaged
    # over the evaluated batches.
    self.eval_losses = {name: keras.metrics.Mean(name=name) for name in
                        ("loss", "structure_nll", "softmax_loss")}
    self.hit_rate = keras.metrics.Mean(name=f"hr@{self.eval_k}")
    self.beam_recall = keras.metrics.Mean(name="beam_recall")

  def set_item_counts(self, counts: np.ndarray, power: float = 1.0) -> None:
    """Sets N_v, the training occurrences of each item, which the M-step
    weighs the paths by (Algorithm 2), and log Q ~ (counts + 1)^power
    (normalised), the distribution the sampled softmax draws its negatives
    from; for the in-batch softmax it should be the training examples' item
    frequency (power 1).

    Args:
      counts: `[V]` non-negative counts, e.g.
        `np.bincount(train.item, minlength=V)`.
      power: exponent of the sampling distribution.

    Raises:
      ValueError: counts of another length, or negative or non-finite.
    """
    counts = np.asarray(counts, np.float64)
    if counts.shape != (self.num_items,):
      raise ValueError(f"counts must have shape ({self.num_items},) (one "
                       f"count per item), got {counts.shape}")
    if not np.isfinite(counts).all() or (counts < 0).any():
      raise ValueError("counts must be finite and >= 0")
    self.item_counts.assign(counts.astype(np.float32))
    weights = (counts + 1.0) ** power
    self.sampling_log_q.assign(np.log(weights / weights.sum()))

  def default_callbacks(self, callbacks: Sequence[keras.callbacks.Callback]
                        ) -> List[keras.callbacks.Callback]:
    """The callbacks `fit` adds to `callbacks`: an `EMCallback` from the
    config (when the model collects scores and none is given) and a
    `FreezeReranker` (when `freeze_epoch` is set and none is given)."""
    config, added = self.config_, []
    if self.score_estimator is not None and not any(
        isinstance(c, em.EMCallback) for c in callbacks):
      added.append(em.EMCallback(
          None, config["alpha"], sweeps=config["m_step_sweeps"],
          start_epoch=config["m_step_start_epoch"], verbose=False))
    if config["freeze_epoch"] is not None and not any(
        isinstance(c, em.FreezeReranker) for c in callbacks):
      added.append(em.FreezeReranker(config["freeze_epoch"]))
    return added

  def fit(self, *args, callbacks=None, **kwargs):
    """`keras.Model.fit` with the EM of Sec. 3: `default_callbacks` are
    added, and the EM callbacks (`EMCallback`, `FreezeReranker`) run before
    the others, so that a checkpoint written at an epoch's end holds that
    epoch's M-step."""
    callbacks = list(callbacks or [])
    callbacks += self.default_callbacks(callbacks)
    first = [c for c in callbacks
             if isinstance(c, (em.EMCallback, em.FreezeReranker))]
    return super().fit(*args, callbacks=first + [
        c for c in callbacks if c not in first], **kwargs)

  # -- towers -------------------------------------------------------------

  def encode(self, features, training=False):
    """`(emb(x) [N, user_dim], q(x) [N, rerank_dim])`."""
    h = self.encoder(features["history"], features.get("history_mask"),
                     training=training)
    return self.user_projection(h), self.query_projection(h)

  def call(self, features, training=False):
    """emb(x) `[N, user_dim]` of `features` (`history`, optional
    `history_mask`); also runs the structure model and, when `item_id` is
    given, the reranker on it."""
    user, query = self.encode(features, training=training)
    self.structure(user)
    if "item_id" in features:
      self.reranker(query, features["item_id"][:, tf.newaxis])
    return user

  def example_features(self) -> Dict[str, tf.Tensor]:
    """Two rows reading item 0 and predicting item 0 (builds every
    tower)."""
    return {"history": tf.zeros([2, 1], tf.int32),
            "history_mask": tf.ones([2, 1], tf.bool),
            "item_id": tf.zeros([2], tf.int32)}

  # -- training -----------------------------------------------------------

  def losses_of(self, features, training=False) -> Dict[str, tf.Tensor]:
    """The negated objectives: `structure_nll` = -mean Q_str per example,
    `softmax_loss` = the (sampled or in-batch) softmax loss, `user` =
    emb(x)."""
    user, query = self.encode(features, training=training)
    items = features["item_id"]
    paths = self.assignment.paths_of(items)
    structure_nll = -tf.reduce_mean(
        self.structure.multi_path_log_likelihood(user, paths))
    if self.softmax == "in_batch":
      softmax_loss = self.reranker.in_batch_loss(query, items,
                                                 self.sampling_log_q)
    else:
      softmax_loss = self.reranker.sampled_loss(
          query, items, self.sampling_log_q, self.num_sampled)
    return {"structure_nll": structure_nll, "softmax_loss": softmax_loss,
            "user": user}

  def train_step(self, data):
    self._remember_input_spec(data)
    features = data[0] if isinstance(data, tuple) else data
    with tf.GradientTape() as tape:
      parts = self.losses_of(features, training=True)
      loss = (parts["structure_nll"] +
              self.softmax_weight * parts["softmax_loss"])
    frozen = ({id(self.reranker.item_weights), id(self.reranker.item_bias)}
              if self.reranker_frozen else set())
    variables = [v for v in self.trainable_variables if id(v) not in frozen]
    gradients = tape.gradient(loss, variables)
    self.optimizer.apply_gradients(zip(gradients, variables))
    if self.score_estimator is not None:     # the E-step's s[v, c] stream
      paths, log_probs = dr_layers.beam_search(
          self.structure, tf.stop_gradient(parts["user"]),
          self.score_estimator.top_s)
      self.score_estimator.update(
          features["item_id"], dr_layers.path_ids(paths, self.num_nodes),
          tf.exp(log_probs))
    return {"loss": loss, "structure_nll": parts["structure_nll"],
            "softmax_loss": parts["softmax_loss"]}

  def test_step(self, data):
    """The losses of `losses_of`, `hr@{eval_k}` (the positive among the
    top `eval_k` items of `retrieve`, history not excluded) and
    `beam_recall` (one of the positive's J paths among the B beam
    paths)."""
    self._remember_input_spec(data)
    features = data[0] if isinstance(data, tuple) else data
    parts = self.losses_of(features)
    items = tf.reshape(tf.cast(features["item_id"], tf.int32), [-1])
    top, _, _ = self.retrieve(features["history"],
                              features.get("history_mask"), k=self.eval_k)
    self.hit_rate.update_state(tf.cast(tf.reduce_any(
        tf.equal(top, items[:, tf.newaxis]), axis=1), tf.float32))
    paths, _ = dr_layers.beam_search(self.structure, parts["user"],
                                     self.beam_size)
    beam = dr_layers.path_ids(paths, self.num_nodes)            # [N, B]
    own = tf.gather(self.assignment.item_paths, items)          # [N, J]
    self.beam_recall.update_state(tf.cast(tf.reduce_any(
        tf.equal(beam[:, :, tf.newaxis], own[:, tf.newaxis, :]),
        axis=[1, 2]), tf.float32))
    values = {"loss": parts["structure_nll"] + self.softmax_weight *
                      parts["softmax_loss"],
              "structure_nll": parts["structure_nll"],
              "softmax_loss": parts["softmax_loss"]}
    for name, value in values.items():
      self.eval_losses[name].update_state(value)
    return {name: metric.result() for name, metric in
            [*self.eval_losses.items(), (self.hit_rate.name, self.hit_rate),
             ("beam_recall", self.beam_recall)]}

  # -- inference ----------------------------------------------------------

  def retrieve(self, history, history_mask=None, exclude=None,
               k: int = 10, beam_size: Optional[int] = None,
               rerank: bool = True):
    """Top-k items by beam search + rerank (the servable's computation).

    Args:
      history: `[N, L]` item ids (negative = padding); history_mask: bool.
      exclude: `[N, E]` item ids never returned (negative = padding), e.g.
        the user's history; None: nothing excluded.
      k: results per row (tensor or int >= 1).
      beam_size: B (default: the model's).
      rerank: order the retrieved items by the reranker's logit; False:
        in path order (best path first), as DR alone ranks them.

    Returns:
      `(items [N, k] int32, scores [N, k] float32, num_candidates [N])`.
      When fewer than k distinct candidates exist, the rest of the row is
      item -1 with score `NO_SCORE` (the lowest float32).
    """
    beam = int(beam_size or self.beam_size)
    user, query = self.encode({"history": history,
                               "history_mask": history_mask})
    paths, _ = dr_layers.beam_search(self.structure, user, beam)
    candidates = self.assignment.items_of(
        dr_layers.path_ids(paths, self.num_nodes))             # [N, M]
    k = tf.convert_to_tensor(k, tf.int32)
    width = tf.maximum(tf.shape(candidates)[1], k)
    candidates = tf.pad(candidates,
                        [[0, 0], [0, width - tf.shape(candidates)[1]]],
                        constant_values=-1)
    # Sort each row by id (stable), so a duplicate follows its first
    # occurrence; keep the first.
    order = tf.argsort(candidates, axis=1, stable=True)
    ids = tf.gather(candidates, order, batch_dims=1)
    repeat = tf.concat([tf.zeros_like(ids[:, :1], tf.bool),
                        tf.equal(ids[:, 1:], ids[:, :-1])], axis=1)
    valid = tf.logical_and(ids >= 0, tf.logical_not(repeat))
    if exclude is not None:
      exclude = tf.cast(exclude, tf.int32)
      banned = tf.reduce_any(tf.logical_and(
          tf.equal(ids[:, :, tf.newaxis], exclude[:, tf.newaxis, :]),
          (exclude >= 0)[:, tf.newaxis, :]), axis=2)
      valid = tf.logical_and(valid, tf.logical_not(banned))
    if rerank:
      scores = self.reranker(query, tf.maximum(ids, 0))
    else:   # earlier position (better path) first
      scores = -tf.cast(order, tf.float32)
    scores = tf.where(valid, scores, NO_SCORE)
    top, where = tf.math.top_k(scores, k=k)
    items = tf.gather(ids, where, batch_dims=1)
    kept = tf.gather(valid, where, batch_dims=1)
    return (tf.where(kept, items, -1), tf.where(kept, top, NO_SCORE),
            tf.reduce_sum(tf.cast(valid, tf.int32), axis=1))

  def brute_force(self, history, history_mask=None, k: int = 10):
    """Top-k of the reranker's logit over ALL items (the brute-force
    baseline over the same softmax embeddings)."""
    _, query = self.encode({"history": history,
                            "history_mask": history_mask})
    return tf.math.top_k(self.reranker.all_logits(query), k=k)

  def get_config(self):
    return dict(self.config_)

  @classmethod
  def from_config(cls, config):
    return cls(**config)
