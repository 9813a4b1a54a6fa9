"""retrieval_tf: the shared foundation of the five retrieval packages.

Importing this package makes `TF_USE_LEGACY_KERAS=1` take effect (TFRS needs
Keras 2, shipped as `tf-keras`) before TensorFlow binds `tf.keras`. Modules that
need Keras get it from `retrieval_tf.compat`, which fails with a clear message
when TensorFlow already bound Keras 3.

The public API (loaded on first use, so that `import retrieval_tf` itself
imports no TensorFlow):

    import retrieval_tf                # before TensorFlow
    from retrieval_tf import datasets
    import tensorflow as tf
    split = datasets.leave_one_out(datasets.generate(
        datasets.SyntheticConfig(num_items=500)).to_rec_dataset())
    train = retrieval_tf.training_dataset(split.dataset.interactions,
                                          batch_size=256, history_length=20)
    model = retrieval_tf.TwoTowerModel(split.dataset.num_users,
                                       split.dataset.num_items)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.3))
    model.fit(train, epochs=3)
    retrieval_tf.evaluate(model, split, history_length=20)   # {"hr@10": ...}
    retrieval_tf.export_two_tower(model, "/tmp/exports", split.dataset,
                                  history_length=20)

* `TwoTowerModel`: the YouTube-DNN style two-tower (`models.two_tower`).
* `training_dataset`: the `tf.data` builder of feature dicts for `fit`.
* `evaluate`: leave-one-out or held-out-user metrics of a two-tower.
* `export_two_tower`: the servable (raw ids -> top-k ids) as a SavedModel.
* `BruteForceIndex`, `IVFPQIndex`, `IVFFlatIndex`, `build_index`: the index
  layers.
"""

import importlib as _importlib
import os as _os
import sys as _sys

_os.environ["TF_USE_LEGACY_KERAS"] = "1"
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "tensorflow" in _sys.modules:
  from retrieval_tf import compat as _compat  # pylint: disable=g-import-not-at-top
  _compat.check_legacy_keras()

__version__ = "0.1.0"

# name -> (module, attribute): imported on first access (PEP 562).
_LAZY = {
    "TwoTowerModel": ("retrieval_tf.models.two_tower", "TwoTowerModel"),
    "training_dataset": ("retrieval_tf.data.pipeline", "training_dataset"),
    "evaluate": ("retrieval_tf.evaluation", "evaluate_two_tower"),
    "export_two_tower": ("retrieval_tf.models.two_tower_servable",
                         "export_two_tower"),
    "BruteForceIndex": ("retrieval_tf.index", "BruteForceIndex"),
    "IVFPQIndex": ("retrieval_tf.index", "IVFPQIndex"),
    "IVFFlatIndex": ("retrieval_tf.index", "IVFFlatIndex"),
    "build_index": ("retrieval_tf.index", "build_index"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module 'retrieval_tf' has no attribute {name!r}")
  module, attribute = _LAZY[name]
  value = getattr(_importlib.import_module(module), attribute)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
