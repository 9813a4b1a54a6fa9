"""DPSR (Zhang et al., SIGIR'20): a multi-head query tower with an attention
loss, mixed random/batch negatives, personalisation, the shared in-graph
tokenizer and a sharded one-servable search system.

`import dpsr_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported. The public API:

    import dpsr_tf
    from retrieval_tf.text import Tokenizer, padded_ids
    task = dpsr_tf.load_task("synthetic")
    tokenizer = Tokenizer(num_buckets=4096)
    titles = padded_ids(tokenizer, task.item_text)
    model = dpsr_tf.DPSRModel(task.num_items, titles.shape[1],
                              task.item_feature_sizes,
                              tokenizer=tokenizer.get_config(),
                              num_negatives=31)
    model.set_item_tables(titles, task.item_columns)
    model.compile(optimizer="adagrad")
    model.fit(dpsr_tf.training_dataset(task.train, model, batch_size=64),
              epochs=2, steps_per_epoch=100)
    dpsr_tf.evaluate(model, task)          # {"top10": ..., "auc": ...}
    dpsr_tf.export_dpsr(model, "/tmp/dpsr_export")   # [version folder]

* `DPSRModel`: the model (Sec. 4; DPSR, DPSR-p, DPSR-h, DSSM loss).
* `load_task`, `SearchTask`: training and evaluation data (`data`).
* `training_dataset`: the `tf.data` batches for `model.fit`.
* `evaluate`: Table 2's metrics (Top-k among 1,024 random items, AUC).
* `export_dpsr`: the servable (raw query -> top-k item ids).
* `all_item_embeddings`, and the layers `QueryTower`, `ItemTower`,
  `SoftDotProduct` (Eq. 1), `attention_hinge_loss` (Eq. 2),
  `MixedNegatives` (Algorithm 1).
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from dpsr_tf.data import SearchTask, load_task, training_dataset
from dpsr_tf.evaluation import evaluate
from dpsr_tf.layers import (ItemTower, MixedNegatives, QueryTower,
                            SoftDotProduct, attention_hinge_loss)
from dpsr_tf.model import DPSRModel, all_item_embeddings, check_batch_size
from dpsr_tf.servable import export_dpsr

__all__ = ["DPSRModel", "ItemTower", "MixedNegatives", "QueryTower",
           "SearchTask", "SoftDotProduct", "all_item_embeddings",
           "attention_hinge_loss", "check_batch_size", "evaluate",
           "export_dpsr", "load_task", "training_dataset"]
