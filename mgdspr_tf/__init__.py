"""MGDSPR (Li et al., KDD'21, "Embedding-based Product Retrieval in Taobao
Search"): multi-granular query semantics, query-attentive behaviour
sequences, temperature softmax with mixed hard negatives, and relevance
control after the ANN, as one servable.

`import mgdspr_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported. The public API:

    import mgdspr_tf
    from retrieval_tf.datasets import synthetic
    data = mgdspr_tf.from_synthetic(synthetic.generate(
        synthetic.SyntheticConfig.scaled(500)), lengths=(8, 16, 16))
    model = mgdspr_tf.MGDSPRModel(data.num_items, data.attribute_sizes,
                                  dim=32, max_real=8, max_short=16,
                                  max_long=16)
    model.set_catalogue(data.attributes, data.titles)
    model.compile(optimizer=mgdspr_tf.paper_optimizer())
    model.fit(mgdspr_tf.training_dataset(data.train, 64),
              epochs=2, steps_per_epoch=50)
    mgdspr_tf.evaluate(model, data)       # {"recall@10": ..., ...}
    mgdspr_tf.export_mgdspr(model, "/tmp/mgdspr", data.item_ids,
                            data.intent_fields, data.item_fields)

* `MGDSPRModel`: the user and item towers and the loss (Sec. 3.2-3.4);
  `paper_optimizer`: AdaGrad 0.1, gradient norm clipped at 3.
* `from_synthetic`, `from_search_dataset`, `from_rec_dataset` ->
  `MGDSPRData` (`Examples` train / test): the data (`data`).
* `training_dataset`: the `tf.data` batches for `model.fit`.
* `evaluate`: recall@k, p_good@k and relevance control's metrics.
* `export_mgdspr`: the servable (raw query + behaviour -> top-k item ids,
  relevance control per request).
* `RelevanceControl`, `intent_vocabulary`: the post-ANN filter (Sec. 4).
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from mgdspr_tf.data import (Examples, MGDSPRData, from_rec_dataset,
                            from_search_dataset, from_synthetic,
                            training_dataset)
from mgdspr_tf.evaluation import evaluate
from mgdspr_tf.model import MGDSPRModel, paper_optimizer
from mgdspr_tf.relevance import RelevanceControl, intent_vocabulary
from mgdspr_tf.servable import export_mgdspr

__all__ = ["Examples", "MGDSPRData", "MGDSPRModel", "RelevanceControl",
           "evaluate", "export_mgdspr", "from_rec_dataset",
           "from_search_dataset", "from_synthetic", "intent_vocabulary",
           "paper_optimizer", "training_dataset"]
