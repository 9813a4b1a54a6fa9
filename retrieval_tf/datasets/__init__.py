"""Dataset loaders (real and synthetic), typed containers and splits.

    from retrieval_tf import datasets
    ml = datasets.load_rec_dataset("ml-1m", "../shared/data/ml-1m")
    world = datasets.synthetic.generate(datasets.synthetic.SyntheticConfig())
"""

from retrieval_tf.datasets import splits, synthetic
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.registry import (REC_DATASETS, LeaveOneOut,
                                            leave_one_out, load_rec_dataset)
from retrieval_tf.datasets.types import (Interactions, Judgments, RecDataset,
                                         SearchDataset, Vocabulary)

__all__ = [
    "DataError", "Interactions", "Judgments", "RecDataset", "SearchDataset",
    "Vocabulary", "REC_DATASETS", "LeaveOneOut", "leave_one_out",
    "load_rec_dataset", "splits", "synthetic",
]
