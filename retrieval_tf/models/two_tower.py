"""The YouTube-DNN style two-tower baseline (Covington et al., RecSys'16).

User tower: `[E(user id); E(profile fields); mean E(history items)] -> MLP`.
Item tower: `[E(item id); mean E(item fields)] -> MLP`. History items share
the item-id embedding table with the item tower, as in YouTube DNN. Training
is the in-batch sampled softmax of `tfrs.tasks.Retrieval`, with the logQ
correction (Yi et al., RecSys'19) when the batch carries `item_log_q`, and
accidental hits (the positive item appearing as another row's positive)
removed.

Feature names follow `retrieval_tf.data.pipeline`: `user_id`, `history`,
`history_mask`, `user_<field>`; `item_id`, `item_<field>`, `item_log_q`.
Negative ids mean "unknown / padding" in the user tower: an unknown user id
or profile value contributes a zero vector, unknown history items are masked.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional, Sequence

import tensorflow_recommenders as tfrs

from retrieval_tf.compat import keras, tf
from retrieval_tf.files import write_json_atomic
from retrieval_tf.layers import MLP, MaskedMeanEmbedding, masked_mean
from retrieval_tf.saving import SavableModel


@keras.utils.register_keras_serializable(package="retrieval_tf")
class TwoTowerModel(SavableModel, tfrs.Model):
  """Two-tower retrieval model on `tfrs.tasks.Retrieval`.

  Inputs: a dict of feature batches named as in `retrieval_tf.data.pipeline`
  (`training_dataset` builds them): `user_id [B]`, `history` / `history_mask`
  `[B, L]`, `user_<field> [B]` for the user tower; `item_id [B]`,
  `item_<field> [B]` or `[B, G]` for the item tower; optional `item_log_q
  [B]` (logQ correction of the in-batch softmax). Outputs: `model(features)`
  and `user_embedding(features)` give `[B, output_dim]` L2-normalised user
  vectors, `item_embedding(features)` the item vectors; score = <u, v>.
  `fit` minimises the in-batch softmax; `fit` and `evaluate` report
  `in_batch_hr@k`: the share of rows whose positive ranks in the top
  `in_batch_k` of the batch's items by <u, v> (other rows with the same
  positive excluded; 1.0 whenever the batch holds no more than k items).

      model = TwoTowerModel(num_users=1000, num_items=500)
      model.compile(optimizer=keras.optimizers.Adagrad(0.1))
      model.fit(retrieval_tf.training_dataset(log, batch_size=256,
                                              history_length=20), epochs=3)
      users = model({"user_id": ids, "history": h, "history_mask": h >= 0})

  Args:
    num_users: user vocabulary size (ignored when `use_user_id` is False,
      e.g. for held-out users in the DR protocol).
    num_items: item vocabulary size.
    user_features: `{field: vocabulary size}` of categorical user fields.
    item_features: `{field: vocabulary size}` of categorical item fields.
    embedding_dim: size of every id/field embedding.
    hidden_units: ReLU layers of both towers' MLPs.
    output_dim: size of the user and item embeddings.
    temperature: softmax temperature over cosine similarities.
    use_user_id: embed the user id (off for held-out-user protocols).
    use_history: pool the behaviour history (needs `history`).
    l2: L2 regularisation of the embedding tables.
    in_batch_k: the k of the `in_batch_hr@k` metric.

  Raises:
    ValueError: num_items < 2, num_users < 1 with use_user_id, temperature
      <= 0 or in_batch_k < 1.
  """

  def __init__(self, num_users: int, num_items: int,
               user_features: Optional[Mapping[str, int]] = None,
               item_features: Optional[Mapping[str, int]] = None,
               embedding_dim: int = 64,
               hidden_units: Sequence[int] = (128,),
               output_dim: int = 64,
               temperature: float = 0.05,
               use_user_id: bool = True,
               use_history: bool = True,
               l2: float = 0.0,
               in_batch_k: int = 10,
               **kwargs):
    super().__init__(**kwargs)
    if num_items < 2:
      raise ValueError(f"TwoTowerModel needs num_items >= 2, got {num_items}")
    if use_user_id and num_users < 1:
      raise ValueError("use_user_id=True needs num_users >= 1")
    if temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {temperature}")
    if in_batch_k < 1:
      raise ValueError(f"in_batch_k must be >= 1, got {in_batch_k}")
    self.num_users = int(num_users)
    self.num_items = int(num_items)
    self.user_features = dict(user_features or {})
    self.item_features = dict(item_features or {})
    self.embedding_dim = int(embedding_dim)
    self.hidden_units = [int(u) for u in hidden_units]
    self.output_dim = int(output_dim)
    self.temperature = float(temperature)
    self.use_user_id = bool(use_user_id)
    self.use_history = bool(use_history)
    self.l2 = float(l2)
    self.in_batch_k = int(in_batch_k)
    regularizer = keras.regularizers.l2(l2) if l2 else None

    self.item_id_embedding = keras.layers.Embedding(
        self.num_items, self.embedding_dim,
        embeddings_regularizer=regularizer, name="item_id_embedding")
    # Negative user ids (unknown users at serving) embed to zeros.
    self.user_id_embedding = (
        MaskedMeanEmbedding(self.num_users, self.embedding_dim,
                            embeddings_regularizer=regularizer,
                            name="user_id_embedding")
        if self.use_user_id else None)
    self.user_field_embeddings = {
        name: MaskedMeanEmbedding(size, self.embedding_dim,
                                  embeddings_regularizer=regularizer,
                                  name=f"user_{name}_embedding")
        for name, size in sorted(self.user_features.items())}
    self.item_field_embeddings = {
        name: MaskedMeanEmbedding(size, self.embedding_dim,
                                  embeddings_regularizer=regularizer,
                                  name=f"item_{name}_embedding")
        for name, size in sorted(self.item_features.items())}
    self.user_mlp = MLP(self.hidden_units, self.output_dim, normalize=True,
                        name="user_mlp")
    self.item_mlp = MLP(self.hidden_units, self.output_dim, normalize=True,
                        name="item_mlp")
    self.task = tfrs.tasks.Retrieval(temperature=self.temperature,
                                     remove_accidental_hits=True)
    self.in_batch_hr = keras.metrics.TopKCategoricalAccuracy(
        self.in_batch_k, name=f"in_batch_hr@{self.in_batch_k}")

  def user_embedding(self, features: Dict[str, tf.Tensor],
                     training: bool = False) -> tf.Tensor:
    """The user tower: `[batch, output_dim]`, L2-normalised."""
    parts = []
    if self.use_user_id:
      parts.append(self.user_id_embedding(features["user_id"]))
    for name, layer in self.user_field_embeddings.items():
      parts.append(layer(features[f"user_{name}"]))
    if self.use_history:
      history = features["history"]
      mask = tf.logical_and(tf.cast(features["history_mask"], tf.bool),
                            history >= 0)
      vectors = self.item_id_embedding(tf.maximum(history, 0))
      parts.append(masked_mean(vectors, mask))
    if not parts:
      raise ValueError("the user tower has no input: enable use_user_id, "
                       "use_history or give user_features")
    return self.user_mlp(tf.concat(parts, axis=-1), training=training)

  def item_embedding(self, features: Dict[str, tf.Tensor],
                     training: bool = False) -> tf.Tensor:
    """The item tower: `[batch, output_dim]`, L2-normalised."""
    parts = [self.item_id_embedding(features["item_id"])]
    for name, layer in self.item_field_embeddings.items():
      parts.append(layer(features[f"item_{name}"]))
    return self.item_mlp(tf.concat(parts, axis=-1), training=training)

  def call(self, features, training=False):
    return self.user_embedding(features, training=training)

  def example_features(self) -> Dict[str, tf.Tensor]:
    """Two rows of id 0 in every feature the towers read."""
    zeros = tf.zeros([2], tf.int32)
    features = {"user_id": zeros, "item_id": zeros,
                "history": tf.zeros([2, 1], tf.int32),
                "history_mask": tf.ones([2, 1], tf.bool)}
    for name in self.user_features:
      features[f"user_{name}"] = zeros
    for name in self.item_features:
      features[f"item_{name}"] = zeros
    return features

  def create_weights(self, features) -> None:
    """Runs both towers and the task (every sub-layer built)."""
    users = self.user_embedding(features)
    items = self.item_embedding(features)
    self.task(users, items, candidate_ids=features["item_id"],
              compute_metrics=False)

  def compute_loss(self, features, training=False) -> tf.Tensor:
    users = self.user_embedding(features, training=training)
    items = self.item_embedding(features, training=training)
    log_q = features.get("item_log_q")
    self.update_in_batch_hr(users, items, features["item_id"])
    return self.task(
        users, items,
        candidate_sampling_probability=(None if log_q is None
                                        else tf.exp(log_q)),
        candidate_ids=features["item_id"],
        compute_metrics=not training)

  def update_in_batch_hr(self, users, items, item_ids) -> None:
    """Updates `in_batch_hr@k` from user and item vectors `[B, d]` and the
    positives' ids `[B]`: raw scores <u, v> over the batch's items (one
    B x B matmul), another row holding the same positive is no competitor.
    A subclass with its own `compute_loss` calls it to keep the metric.
    Skipped in a strategy's cross-replica context (a build pass outside
    `fit`), where Keras metrics cannot be updated."""
    if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
      return
    scores = tf.matmul(users, items, transpose_b=True)
    item_ids = tf.reshape(item_ids, [-1])
    labels = tf.eye(tf.shape(scores)[0], dtype=scores.dtype)
    duplicate = tf.logical_and(
        tf.equal(item_ids[:, tf.newaxis], item_ids[tf.newaxis, :]),
        labels < 0.5)
    scores = tf.where(duplicate, tf.constant(-1e9, scores.dtype), scores)
    self.in_batch_hr.update_state(labels, scores)

  def get_config(self):
    return {
        "num_users": self.num_users,
        "num_items": self.num_items,
        "user_features": self.user_features,
        "item_features": self.item_features,
        "embedding_dim": self.embedding_dim,
        "hidden_units": self.hidden_units,
        "output_dim": self.output_dim,
        "temperature": self.temperature,
        "use_user_id": self.use_user_id,
        "use_history": self.use_history,
        "l2": self.l2,
        "in_batch_k": self.in_batch_k,
    }

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def save_model(model: TwoTowerModel, folder: str) -> None:
  """Saves `config.json` and TF-format weights; see `load_model`."""
  model.save_weights(os.path.join(folder, "weights"))
  write_json_atomic(os.path.join(folder, "config.json"), model.get_config())


def load_model(folder: str, example_user, example_item) -> TwoTowerModel:
  """Rebuilds a saved `TwoTowerModel` (built on one example batch each)."""
  with open(os.path.join(folder, "config.json")) as f:
    model = TwoTowerModel.from_config(json.load(f))
  model.user_embedding(example_user)
  model.item_embedding(example_item)
  model.load_weights(os.path.join(folder, "weights")).expect_partial()
  return model
