"""Poeem (Zhang et al., SIGIR'21): a product-quantization embedding index
trained jointly with a two-tower retrieval model, served as a stock-TF
IVF-PQ index.

`import poeem_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported. The public API:

    import poeem_tf
    from retrieval_tf import datasets
    from retrieval_tf.compat import keras
    dataset = datasets.generate(datasets.SyntheticConfig(
        num_items=1000)).to_rec_dataset()
    split = datasets.held_out_split(dataset, num_test_users=150, seed=0)
    model = poeem_tf.PoeemModel(dataset.num_items, num_centroids=16,
                                num_subspaces=8, num_codewords=16)
    model.compile(optimizer=keras.optimizers.Adagrad(0.05))
    model.fit(poeem_tf.training_dataset(split.train, batch_size=256,
                                        history_length=20,
                                        num_items=dataset.num_items),
              epochs=3)               # warm start + health check inside fit
    poeem_tf.evaluate(model, split, dataset, history_length=20)
    poeem_tf.export_poeem(model, "/tmp/poeem", dataset, history_length=20)

* `PoeemModel`: the two-tower + the indexing layer (Sec. 2).
* `training_dataset`: the `tf.data` batches for `model.fit`.
* `evaluate`: precision@k / recall@k of the learned index on held-out users.
* `export_poeem`: the servable (raw history -> IVF-PQ of the codes -> ids).
* `WarmStart`, `IndexHealth`, `UtilisationLogger`: callbacks (`fit` adds the
  first two by itself).
* The layers `EmbeddingIndexLayer`, `GivensRotation`, `CoarseQuantizer`,
  `ProductQuantizer`.
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from poeem_tf.callbacks import IndexHealth, UtilisationLogger, WarmStart
from poeem_tf.data import training_dataset
from poeem_tf.evaluation import evaluate
from poeem_tf.layers import (CoarseQuantizer, EmbeddingIndexLayer,
                             GivensRotation, ProductQuantizer)
from poeem_tf.model import PoeemModel
from poeem_tf.servable import export_poeem

__all__ = ["CoarseQuantizer", "EmbeddingIndexLayer", "GivensRotation",
           "IndexHealth", "PoeemModel", "ProductQuantizer",
           "UtilisationLogger", "WarmStart", "evaluate", "export_poeem",
           "training_dataset"]
