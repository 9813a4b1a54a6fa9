"""Deep Retrieval (Gao et al., CIKM'21): a learnable K x D path structure
with beam search, learned item-to-path assignment by EM with a penalised
M-step, a jointly trained softmax reranker, served as one stock-TF
SavedModel.

`import dr_tf` makes `TF_USE_LEGACY_KERAS=1` take effect (through
`retrieval_tf`) before TensorFlow is imported.
"""

import retrieval_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
