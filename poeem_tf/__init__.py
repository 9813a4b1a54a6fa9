"""Poeem (Zhang et al., SIGIR'21): a product-quantization embedding index
trained jointly with a two-tower retrieval model, served as a stock-TF
IVF-PQ index.

`import poeem_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported.
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from poeem_tf.layers import (CoarseQuantizer, EmbeddingIndexLayer,
                             GivensRotation, ProductQuantizer)
from poeem_tf.model import PoeemModel

__all__ = ["CoarseQuantizer", "EmbeddingIndexLayer", "GivensRotation",
           "PoeemModel", "ProductQuantizer"]
