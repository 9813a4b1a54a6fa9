"""DPSR (Zhang et al., SIGIR'20): a multi-head query tower with an attention
loss, mixed random/batch negatives, personalisation, the shared in-graph
tokenizer and a sharded one-servable search system.

`import dpsr_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported.
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from dpsr_tf.layers import (ItemTower, MixedNegatives, QueryTower,
                            SoftDotProduct, attention_hinge_loss)
from dpsr_tf.model import DPSRModel

__all__ = ["DPSRModel", "ItemTower", "MixedNegatives", "QueryTower",
           "SoftDotProduct", "attention_hinge_loss"]
