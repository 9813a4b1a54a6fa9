"""PDN (Li et al., SIGIR'21): Path-based Deep Network for candidate item
matching: TrigNet x SimNet 2-hop paths plus a Direct Net, trained on Eq. 12-13,
served by greedy path retrieval (Eq. 14) over a SimNet item-to-item index.

`import pdn_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported.
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

from pdn_tf.layers import (BiasNet, DirectNet, SimilarityNet, TriggerNet,
                           click_probability, path_weight, pdn_cross_entropy,
                           relevance)
from pdn_tf.model import PDNModel

__all__ = ["BiasNet", "DirectNet", "PDNModel", "SimilarityNet", "TriggerNet",
           "click_probability", "path_weight", "pdn_cross_entropy",
           "relevance"]
