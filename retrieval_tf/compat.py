"""Keras 2 for TensorFlow Recommenders: the one place that checks it.

TensorFlow 2.20 binds `tf.keras` lazily, on first access, to Keras 3 unless
`TF_USE_LEGACY_KERAS=1` is set then. `import retrieval_tf` sets it; this module
verifies that it took effect and exports `tf` and `keras` (the tf-keras module).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tensorflow as tf  # pylint: disable=g-import-not-at-top

KERAS3_MESSAGE = (
    "retrieval_tf needs Keras 2 (the tf-keras package) because TensorFlow "
    "Recommenders does, but TensorFlow was imported and tf.keras was already "
    "bound to Keras 3 ({name}). Import retrieval_tf (or any of its paper "
    "packages) before touching tf.keras, or set the environment variable "
    "TF_USE_LEGACY_KERAS=1 before starting Python.")


def check_legacy_keras():
  """Returns the tf-keras module behind `tf.keras`; ImportError on Keras 3."""
  module = tf.keras
  name = getattr(module, "__name__", "")
  if not name.startswith("tf_keras"):
    raise ImportError(KERAS3_MESSAGE.format(name=name))
  return module


keras = check_legacy_keras()

__all__ = ["tf", "keras", "check_legacy_keras"]
