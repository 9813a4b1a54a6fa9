"""Dataset loaders (real and synthetic), typed containers and splits.

Every loader returns a `RecDataset` (interactions, vocabularies, user and
item fields) or a `SearchDataset` (queries, judgments, catalogue), and
raises `DataError` naming the file, line and fix on bad input.

    from retrieval_tf import datasets
    ml = datasets.load_ml1m("../shared/data/ml-1m")
    mine = datasets.load_interactions_csv("events.csv")
    world = datasets.generate(datasets.SyntheticConfig(num_items=2000))
    split = datasets.leave_one_out(world.to_rec_dataset())
"""

from retrieval_tf.datasets import splits, synthetic
from retrieval_tf.datasets.amazon import load_amazon, load_sequences
from retrieval_tf.datasets.bestbuy import load_bestbuy
from retrieval_tf.datasets.crowdflower import load_crowdflower
from retrieval_tf.datasets.errors import DataError
from retrieval_tf.datasets.interactions_csv import load_interactions_csv
from retrieval_tf.datasets.movielens import load_ml1m, load_ncf_ml1m
from retrieval_tf.datasets.registry import (REC_DATASETS, LeaveOneOut,
                                            held_out_split, leave_one_out,
                                            load_rec_dataset)
from retrieval_tf.datasets.synthetic import (SyntheticConfig, SyntheticWorld,
                                             generate)
from retrieval_tf.datasets.types import (Interactions, Judgments, RecDataset,
                                         SearchDataset, Vocabulary)

__all__ = [
    "DataError", "Interactions", "Judgments", "RecDataset", "SearchDataset",
    "Vocabulary", "REC_DATASETS", "LeaveOneOut", "leave_one_out",
    "held_out_split", "load_rec_dataset", "load_interactions_csv",
    "load_ml1m", "load_ncf_ml1m", "load_amazon", "load_sequences",
    "load_crowdflower", "load_bestbuy", "SyntheticConfig", "SyntheticWorld",
    "generate", "splits", "synthetic",
]
