"""Poeem (Zhang et al., SIGIR'21) as a library: a synthetic shop ->
held-out users -> tf.data -> fit (the warm start's k-means runs inside fit)
-> the paper's recall@100 of the learned IVF-PQ index -> export the
servable -> reload it -> top-k item ids for a raw behaviour history.

    python examples/poeem_example.py
"""

import json
import tempfile

import numpy as np

import poeem_tf  # sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads
from retrieval_tf import datasets
from retrieval_tf.compat import keras, tf
from retrieval_tf.evaluation import HeldOutProtocol

keras.utils.set_random_seed(0)
HISTORY = 20

# 150 held-out users: the first half of their history is the input, the
# second half the truth (Sec. 3.1); every other user trains.
data = datasets.generate(datasets.SyntheticConfig(
    num_items=1000, num_users=600)).to_rec_dataset()
split = datasets.held_out_split(data, num_test_users=150, seed=0)
train = poeem_tf.training_dataset(split.train, batch_size=256,
                                  history_length=HISTORY,
                                  num_items=data.num_items, num_negatives=20)

# J = 16 coarse lists, D = 8 sub-spaces of K = 16 codewords, Givens rotation;
# the towers train alone for 30 steps, then k-means initialises the index
# and the hinge loss trains through it (straight-through, Eq. 7).
model = poeem_tf.PoeemModel(
    data.num_items, embedding_dim=32, output_dim=32, hidden_units=[64],
    num_centroids=16, num_subspaces=8, num_codewords=16,
    warm_start_steps=30)
model.compile(optimizer=keras.optimizers.Adagrad(0.3))
model.fit(train, epochs=4, verbose=0)
print("in-batch", model.evaluate(train, steps=5, return_dict=True, verbose=0))

metrics = poeem_tf.evaluate(model, split, data, history_length=HISTORY,
                            nprobe=8)
print("held-out users", {k: round(v, 4) for k, v in metrics.items()
                         if k.endswith("@100") or k == "coarse_used"})

path = poeem_tf.export_poeem(model, tempfile.mkdtemp(), data,
                             history_length=HISTORY, nprobe=8, max_k=100)
serve = tf.saved_model.load(path).signatures["serving_default"]
history = [str(data.items.ids[i]) for i in split.test.inputs.item[:HISTORY]]
answer = serve(history=tf.constant([history]), k=tf.constant([10]))
print("top-10 for a raw history:", answer["item_ids"].numpy()[0])

# A random scorer: 100 random items per user among those not in the input.
protocol = HeldOutProtocol.from_held_out(split.test, data.num_items)
scores = np.random.default_rng(0).random(protocol.exclude.shape)
scores[protocol.exclude.nonzero()] = -1.0
random = protocol.report(np.argsort(-scores, axis=1)[:, :100], [100])
print(json.dumps({"example": "poeem", "metric": "recall@100",
                  "value": metrics["recall@100"],
                  "random": random["recall@100"],
                  "served": int(np.size(answer["item_ids"].numpy()))}))
