"""DPSR (Zhang et al., SIGIR'20) as a library: a synthetic shop's searches
-> tf.data -> fit the two heads with mixed negatives -> Table 2's Top-10
among 1,024 random items -> export the one servable -> reload it -> top-k
item ids for a raw query string.

    python examples/dpsr_example.py
"""

import json
import tempfile

import numpy as np

import dpsr_tf  # sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import SyntheticConfig
from retrieval_tf.text import Tokenizer, padded_ids

keras.utils.set_random_seed(0)
BATCH = 64

# Search clicks of a small synthetic shop; test queries are never trained on.
task = dpsr_tf.load_task("synthetic", synthetic_config=SyntheticConfig.scaled(
    500, num_users=300, seed=0))

# One tokenizer for the data, the model and the servable (Sec. 5.1.1); the
# item titles become the model's in-memory token table (Sec. 5.1.2).
tokenizer = Tokenizer(num_buckets=8192)
titles = padded_ids(tokenizer, task.item_text, max_tokens=64)
model = dpsr_tf.DPSRModel(
    task.num_items, titles.shape[1], task.item_feature_sizes,
    tokenizer=tokenizer.get_config(), num_heads=2, token_dim=32,
    output_dim=32, hidden_units=[64], num_negatives=BATCH - 1, alpha=0.5)
model.set_item_tables(titles, task.item_columns)
model.compile(optimizer=keras.optimizers.Adagrad(0.1))

train = dpsr_tf.training_dataset(task.train, model, batch_size=BATCH)
model.fit(train, epochs=3, steps_per_epoch=100, verbose=0)
print("in-batch", model.evaluate(train, steps=10, return_dict=True,
                                 verbose=0))

metrics = dpsr_tf.evaluate(model, task)
print("Table 2", {k: metrics[k] for k in ("top1", "top10", "mrr", "auc")})

path = dpsr_tf.export_dpsr(model, tempfile.mkdtemp(),
                           [str(i) for i in task.item_ids], max_k=50)[0]
serve = tf.saved_model.load(path).signatures["serving_default"]
query = str(task.test["query"][0])
answer = serve(query=tf.constant([query]), k=tf.constant([10]))
print(f"top-10 for {query!r}:", answer["item_ids"].numpy()[0])

# A random scorer puts the positive in the top 10 of 1 + 1,024 items with
# probability 10 / 1,025.
print(json.dumps({"example": "dpsr", "metric": "top10",
                  "value": metrics["top10"], "random": 10 / 1025,
                  "served": int(np.size(answer["item_ids"].numpy()))}))
