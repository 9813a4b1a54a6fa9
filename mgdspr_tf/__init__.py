"""MGDSPR (Li et al., KDD'21, "Embedding-based Product Retrieval in Taobao
Search"): multi-granular query semantics, query-attentive behaviour
sequences, temperature softmax with mixed hard negatives, and relevance
control after the ANN, as one servable.

`import mgdspr_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported.
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from mgdspr_tf.model import MGDSPRModel

__all__ = ["MGDSPRModel"]
