"""The shared `tf.data` input pipeline: history windows, negative samplers,
training / evaluation datasets of feature dicts, and TFRecord I/O.

    from retrieval_tf import data as pipeline
    ds = pipeline.training_dataset(log, batch_size=1024, history_length=50,
                                   with_log_q=True, repeat=True)
"""

from retrieval_tf.data.history import HistoryIndex, history_window
from retrieval_tf.data.pipeline import (PAD_ID, distributed_dataset_fn,
                                        item_dataset, training_dataset,
                                        user_eval_dataset)
from retrieval_tf.data.samplers import (NegativeSampler, PopularitySampler,
                                        UniformSampler, as_seed,
                                        in_batch_log_q, item_frequencies)
from retrieval_tf.data.tfrecord import (feature_spec_from_arrays,
                                        read_tfrecords, write_tfrecords)

__all__ = [
    "HistoryIndex", "history_window",
    "PAD_ID", "training_dataset", "distributed_dataset_fn",
    "user_eval_dataset", "item_dataset",
    "NegativeSampler", "UniformSampler", "PopularitySampler", "as_seed",
    "in_batch_log_q", "item_frequencies",
    "write_tfrecords", "read_tfrecords", "feature_spec_from_arrays",
]
