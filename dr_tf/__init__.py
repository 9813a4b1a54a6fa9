"""Deep Retrieval (Gao et al., CIKM'21): a learnable K x D path structure
with beam search, learned item-to-path assignment by EM with a penalised
M-step, a jointly trained softmax reranker, served as one stock-TF
SavedModel.

`import dr_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported. The public API:

    import numpy as np
    import dr_tf
    from retrieval_tf import datasets
    dataset = datasets.generate(datasets.SyntheticConfig(
        num_items=500)).to_rec_dataset()
    split = datasets.held_out_split(dataset, num_test_users=100, seed=0)
    model = dr_tf.DeepRetrievalModel(dataset.num_items, num_nodes=16,
                                     depth=2)
    model.set_item_counts(np.bincount(split.train.item,
                                      minlength=dataset.num_items))
    model.compile(optimizer="adam")
    model.fit(dr_tf.training_dataset(split.train, batch_size=256,
                                     history_length=20), epochs=4)
    dr_tf.evaluate(model, split, dataset, history_length=20)  # recall@10..
    dr_tf.export_dr(model, "/tmp/dr_export", dataset, history_length=20)

* `DeepRetrievalModel`: the model; `fit` runs the EM (Sec. 3) by itself.
* `training_dataset`: the `tf.data` batches for `model.fit`.
* `evaluate`: the held-out-user protocol's precision / recall / F@k.
* `export_dr`: the servable (raw history -> top-k item ids).
* `EMCallback`, `FreezeReranker`: the M-step schedule and the reranker
  freeze, to pass to `fit` for another schedule or logging.
* `penalized_assignment` (Algorithm 2), `beam_search` (Algorithm 1) and the
  layers `BehaviorEncoder`, `StructureModel`, `PathAssignment`,
  `PathScoreEstimator`, `SoftmaxReranker`.
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from dr_tf.data import training_dataset
from dr_tf.em import EMCallback, FreezeReranker, penalized_assignment
from dr_tf.evaluation import evaluate
from dr_tf.layers import (BehaviorEncoder, PathAssignment,
                          PathScoreEstimator, SoftmaxReranker,
                          StructureModel, beam_search)
from dr_tf.model import DeepRetrievalModel
from dr_tf.servable import export_dr

__all__ = ["BehaviorEncoder", "DeepRetrievalModel", "EMCallback",
           "FreezeReranker", "PathAssignment", "PathScoreEstimator",
           "SoftmaxReranker", "StructureModel", "beam_search", "evaluate",
           "export_dr", "penalized_assignment", "training_dataset"]
