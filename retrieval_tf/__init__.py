"""retrieval_tf: the shared foundation of the five retrieval packages.

Importing this package makes `TF_USE_LEGACY_KERAS=1` take effect (TFRS needs
Keras 2, shipped as `tf-keras`) before TensorFlow binds `tf.keras`. Modules that
need Keras get it from `retrieval_tf.compat`, which fails with a clear message
when TensorFlow already bound Keras 3.
"""

import os as _os
import sys as _sys

_os.environ["TF_USE_LEGACY_KERAS"] = "1"
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "tensorflow" in _sys.modules:
  from retrieval_tf import compat as _compat  # pylint: disable=g-import-not-at-top
  _compat.check_legacy_keras()

__version__ = "0.1.0"
