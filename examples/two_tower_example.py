"""The two-tower baseline (YouTube DNN, Covington et al., RecSys'16) as a
library: synthetic data -> tf.data -> fit -> leave-one-out HR@10 -> export
-> reload the SavedModel -> top-k item ids for a raw request.

    python examples/two_tower_example.py
"""

import json
import tempfile

import numpy as np

import retrieval_tf  # sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads
from retrieval_tf import datasets
from retrieval_tf.compat import keras, tf

HISTORY = 20

# A small synthetic shop; the last event of each user is held out and ranked
# against 99 sampled unseen items (the NCF protocol).
world = datasets.generate(datasets.SyntheticConfig(num_items=500,
                                                   num_users=600))
split = datasets.leave_one_out(world.to_rec_dataset(), num_negatives=99)
data = split.dataset  # training events only
profile = {name: data.user_features[name] for name in ("gender", "age")}

train = retrieval_tf.training_dataset(
    data.interactions, batch_size=256, history_length=HISTORY,
    user_features=profile, num_users=data.num_users,
    num_items=data.num_items, with_log_q=True)

model = retrieval_tf.TwoTowerModel(
    data.num_users, data.num_items,
    user_features={name: len(data.feature_vocabularies[name])
                   for name in profile},
    embedding_dim=32, hidden_units=[64], output_dim=32)
model.compile(optimizer=keras.optimizers.Adagrad(0.3))
model.fit(train, epochs=5, verbose=0)
print("in-batch", model.evaluate(train, return_dict=True, verbose=0))

metrics = retrieval_tf.evaluate(model, split, history_length=HISTORY)
print("leave-one-out", metrics)

export_dir = tempfile.mkdtemp()
path = retrieval_tf.export_two_tower(model, export_dir, data,
                                     history_length=HISTORY, max_k=50)
serve = tf.saved_model.load(path).signatures["serving_default"]
user = int(split.test.user[0])
history = [str(data.items.ids[i])
           for i in data.interactions.sequences()[user][-HISTORY:]]
request = {"user_id": [str(data.users.ids[user])], "history": [history],
           "k": [10]}
for name in profile:
  vocabulary = data.feature_vocabularies[name]
  request[f"user_{name}"] = [str(vocabulary.ids[profile[name][user]])]
answer = serve(**{name: tf.constant(value) for name, value in request.items()})
print("top-10 for user", request["user_id"][0], answer["item_ids"].numpy())

# A random scorer ranks the target first among 100 candidates with p=1/100:
# its expected HR@10 is exactly 10 / 100.
print(json.dumps({"example": "two_tower", "metric": "hr@10",
                  "value": metrics["hr@10"], "random": 10 / 100,
                  "served": int(np.size(answer["item_ids"].numpy()))}))
