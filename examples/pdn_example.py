"""PDN (Li et al., SIGIR'21) as a library: a synthetic shop -> leave-one-out
split -> tf.data -> fit (Eq. 12-13) -> the paper's HR@10 against 99 sampled
negatives -> export the greedy path retrieval servable (Eq. 14) -> reload it
-> top-k item ids for a raw request.

    python examples/pdn_example.py
"""

import json
import tempfile

import numpy as np

import pdn_tf  # sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads
from retrieval_tf import datasets, evaluation
from retrieval_tf.compat import keras, tf
from retrieval_tf.cooccurrence import cooccurrence_counts
from retrieval_tf.datasets import registry
from pdn_tf.servable import raw_requests

keras.utils.set_random_seed(0)
HISTORY = 10

# Each user's last event is the target, ranked against 99 unseen items.
data = datasets.generate(datasets.SyntheticConfig(
    num_items=1000, num_users=600)).to_rec_dataset()
split = registry.leave_one_out(data, num_negatives=99, seed=0)
train = split.dataset  # the training log: every event but the targets
cooc = cooccurrence_counts(train.interactions, train.num_items,
                           vocabulary=train.items)  # c_ji (Sec. 4.2)

# TrigNet, SimNet, Direct Net and Bias Net; the item feature, c_ji and log
# tables are filled from the data and saved with the model.
model = pdn_tf.build_pdn_model(train, cooc, embedding_dim=16,
                               trigger_units=[32], similarity_units=[32],
                               direct_dim=16, num_negatives=4)
model.compile(optimizer=keras.optimizers.Adam(0.005))
model.fit(pdn_tf.training_dataset(train, batch_size=256,
                                  history_length=HISTORY, num_negatives=4),
          epochs=2, verbose=0)

retriever = pdn_tf.build_retriever(model, train, history_length=HISTORY,
                                   num_triggers=10, pool_size=300)
metrics = pdn_tf.evaluate(model, split, history_length=HISTORY,
                          retriever=retriever)
print({k: round(v, 4) for k, v in metrics.items()})

path = pdn_tf.export_pdn(retriever, tempfile.mkdtemp(), train)
serve = tf.saved_model.load(path).signatures["serving_default"]
request = raw_requests(train, [0], HISTORY, with_rating=model.use_rating)
answer = serve(k=tf.constant([10]), **{
    name: tf.constant(value) for name, value in request.items()})
print("top-10 for user", request["user_id"][0], answer["item_ids"].numpy()[0])

rng = np.random.default_rng(0)  # a random scorer on the same candidates
random = evaluation.evaluate_sampled(
    lambda rows, c: rng.random(c.shape), np.arange(len(split.test)),
    split.test.item, split.negatives)
print(json.dumps({"example": "pdn", "metric": "hr@10",
                  "value": metrics["hr@10"], "random": random["hr@10"],
                  "served": int(np.size(answer["item_ids"].numpy()))}))
