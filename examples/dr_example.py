"""Deep Retrieval (Gao et al., CIKM'21) as a library: a synthetic shop ->
held-out users -> tf.data -> fit (the EM runs inside fit) -> the paper's
recall@10 -> export the one servable -> reload it -> top-k item ids for a
raw behaviour sequence.

    python examples/dr_example.py
"""

import json
import tempfile

import numpy as np

import dr_tf  # sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads
from retrieval_tf import datasets
from retrieval_tf.compat import keras, tf
from retrieval_tf.evaluation import HeldOutProtocol

keras.utils.set_random_seed(0)
HISTORY = 20

# 150 held-out users: the first half of their history is the input, the
# second half the truth (Sec. 4.1); every other user trains.
data = datasets.generate(datasets.SyntheticConfig(
    num_items=1000, num_users=600)).to_rec_dataset()
split = datasets.held_out_split(data, num_test_users=150, seed=0)
train = dr_tf.training_dataset(split.train, batch_size=256,
                               history_length=HISTORY,
                               num_items=data.num_items)

# K x D = 24 x 2 paths, J = 2 paths per item, beam B = 10; N_v feeds the
# M-step (Algorithm 2) and the softmax's log Q.
model = dr_tf.DeepRetrievalModel(
    data.num_items, num_nodes=24, depth=2, num_paths=2, beam_size=10,
    score_paths=8, embedding_dim=32, gru_units=32, user_dim=32,
    rerank_dim=32, hidden_units=[64], alpha=1.0)
model.set_item_counts(np.bincount(split.train.item,
                                  minlength=data.num_items))
model.compile(optimizer=keras.optimizers.Adam(0.005))
model.fit(train, epochs=3, verbose=0)   # an M-step ends every epoch
print("in-batch", model.evaluate(train, steps=5, return_dict=True, verbose=0))

metrics = dr_tf.evaluate(model, split, data, history_length=HISTORY, ks=[10])
print("held-out users", {k: round(v, 4) for k, v in metrics.items()})

path = dr_tf.export_dr(model, tempfile.mkdtemp(), data,
                       history_length=HISTORY, max_k=50)
serve = tf.saved_model.load(path).signatures["serving_default"]
history = [str(data.items.ids[i]) for i in split.test.inputs.item[:HISTORY]]
answer = serve(history=tf.constant([history]), k=tf.constant([10]))
print("top-10 for a raw history:", answer["item_ids"].numpy()[0])

# A random scorer: 10 random items per user among those not in the input.
protocol = HeldOutProtocol.from_held_out(split.test, data.num_items)
scores = np.random.default_rng(0).random(protocol.exclude.shape)
scores[protocol.exclude.nonzero()] = -1.0
random = protocol.report(np.argsort(-scores, axis=1)[:, :10], [10])
print(json.dumps({"example": "dr", "metric": "recall@10",
                  "value": metrics["recall@10"],
                  "random": random["recall@10"],
                  "served": int(np.size(answer["item_ids"].numpy()))}))
