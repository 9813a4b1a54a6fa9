"""Keras 2 must be what `tf.keras` binds to, or a clear error says what to do."""

import subprocess
import sys

from retrieval_tf.compat import keras


def test_tf_keras_is_keras_2():
  assert keras.__name__.startswith("tf_keras")


def test_keras3_already_bound_is_a_clear_error():
  code = ("import os; os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
          "import tensorflow as tf; tf.keras.layers\n"
          "import retrieval_tf\n")
  env = {k: v for k, v in __import__("os").environ.items()
         if k != "TF_USE_LEGACY_KERAS"}
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env=env, timeout=120)
  assert proc.returncode != 0
  assert "needs Keras 2" in proc.stderr
  assert "TF_USE_LEGACY_KERAS=1" in proc.stderr


def test_importing_retrieval_tf_first_makes_tf_keras_legacy():
  code = ("import retrieval_tf\nimport tensorflow as tf\n"
          "print(tf.keras.__name__)\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip().startswith("tf_keras")
