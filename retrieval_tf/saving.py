"""Keras saving for the library's subclassed models.

Keras creates a subclassed model's weights on its first call, and the towers
of a retrieval model are run by `train_step`, not only by `call`: a model
rebuilt from its config has no weights to load into, and a model trained
with `fit` has no input signature for `model.save(dir)`. `SavableModel`
closes both gaps, so that every model of the library supports

    model.save("m.keras"); keras.models.load_model("m.keras")
    model.save("m_dir")                     # SavedModel, right after fit
    keras.callbacks.ModelCheckpoint(path, save_weights_only=False)
    fresh = Model.from_config(model.get_config()); fresh.load_weights(path)

A model mixes it in first (`class TwoTowerModel(SavableModel, tfrs.Model)`)
and implements `example_features()`: a small batch, made from the config
alone, on which `create_weights` runs every sub-network once (override
`create_weights` when `call` does not reach every tower). Keras' own
`load_model` then calls `build_from_config`, and `load_weights` builds a fresh
model first and raises if the file does not restore every weight.
"""

from __future__ import annotations

from typing import Dict

from retrieval_tf.compat import tf

Features = Dict[str, tf.Tensor]


class SavableModel:
  """Mixin for `keras.Model` subclasses whose weights follow from the config.

  Subclasses implement `example_features()` (a batch of a few valid rows,
  built from the config alone) and may override `create_weights(features)`
  (default: `self(features, training=False)`).
  """

  def example_features(self) -> Features:
    """A small batch of valid features, made from the config alone."""
    raise NotImplementedError(
        f"{type(self).__name__} must implement example_features()")

  def create_weights(self, features: Features) -> None:
    """Runs every sub-network once on `features` (creates every weight)."""
    self(features, training=False)

  def build_weights(self) -> None:
    """Creates every weight of the model from its config (idempotent)."""
    if not getattr(self, "_weights_from_config", False):
      self.create_weights(self.example_features())
      self._weights_from_config = True
      self.built = True

  # Keras' `.keras` format: a non-empty build config makes `load_model` call
  # `build_from_config` before it loads the weights.
  def get_build_config(self):
    return {"build_weights": True}

  def build_from_config(self, config):
    del config
    self.build_weights()

  def train_step(self, data):
    self._remember_input_spec(data)
    return super().train_step(data)

  def test_step(self, data):
    self._remember_input_spec(data)
    return super().test_step(data)

  def _remember_input_spec(self, data) -> None:
    """Keeps the first batch's signature for `model.save(dir)`: Keras sets it
    on the first `__call__`, which `fit` may never make."""
    if self._get_save_spec() is None:
      features = data[0] if isinstance(data, tuple) else data
      self._set_save_spec(features)

  def prepare_to_save(self) -> None:
    """Creates every weight and, when neither a call nor `fit` has set one,
    gives the model the input signature of `example_features()`: a SavedModel
    holding the model (its own, or a servable's that tracks it) then
    serializes it fully instead of warning "Skipping full serialization of
    TF-Keras layer ... because it is not built"."""
    self.build_weights()
    if self._get_save_spec() is None:
      self._set_save_spec(self.example_features())

  def save(self, filepath, *args, **kwargs):
    """`keras.Model.save` after `prepare_to_save()`."""
    self.prepare_to_save()
    return super().save(filepath, *args, **kwargs)

  def load_weights(self, filepath, *args, **kwargs):
    """`keras.Model.load_weights` into a model whose weights are created
    first; raises ValueError when the file leaves a weight unrestored."""
    self.build_weights()
    status = super().load_weights(filepath, *args, **kwargs)
    if status is not None and hasattr(status, "assert_existing_objects_matched"):
      # The optimizer's slots in a training checkpoint are not the model's.
      status.expect_partial()
      try:
        status.assert_existing_objects_matched()
      except AssertionError as e:
        raise ValueError(
            f"{filepath} does not hold every weight of this "
            f"{type(self).__name__} (was it saved from a model with another "
            f"config?): {str(e).splitlines()[0]}") from None
    return status
