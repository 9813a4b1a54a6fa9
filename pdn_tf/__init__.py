"""PDN (Li et al., SIGIR'21): Path-based Deep Network for candidate item
matching: TrigNet x SimNet 2-hop paths plus a Direct Net, trained on Eq. 12-13,
served by greedy path retrieval (Eq. 14) over a SimNet item-to-item index.

From Python:

    split = retrieval_tf.datasets.registry.leave_one_out(dataset)
    cooc = retrieval_tf.cooccurrence.cooccurrence_counts(
        split.dataset.interactions, split.dataset.num_items,
        vocabulary=split.dataset.items)
    model = pdn_tf.build_pdn_model(split.dataset, cooc, num_negatives=4)
    model.compile(optimizer=keras.optimizers.Adam(0.002))
    model.fit(pdn_tf.training_dataset(split.dataset, batch_size=256,
                                      num_negatives=4), epochs=2)
    pdn_tf.evaluate(model, split)           # {"hr@10": ..., "ndcg@10": ...}
    path = pdn_tf.export_pdn(model, "exports/pdn", split.dataset)

`import pdn_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported.
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from pdn_tf.data import training_dataset
from pdn_tf.evaluation import evaluate
from pdn_tf.i2i_index import I2IIndex, build_i2i_index
from pdn_tf.layers import (BiasNet, DirectNet, SimilarityNet, TriggerNet,
                           click_probability, path_weight, pdn_cross_entropy,
                           relevance)
from pdn_tf.model import PDNModel, build_pdn_model
from pdn_tf.retrieval import PDNRetriever, build_retriever
from pdn_tf.servable import export_pdn

__all__ = ["BiasNet", "DirectNet", "I2IIndex", "PDNModel", "PDNRetriever",
           "SimilarityNet", "TriggerNet", "build_i2i_index", "build_pdn_model",
           "build_retriever", "click_probability", "evaluate", "export_pdn",
           "path_weight", "pdn_cross_entropy", "relevance",
           "training_dataset"]
