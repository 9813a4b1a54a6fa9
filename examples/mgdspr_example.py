"""MGDSPR (Li et al., KDD'21) as a library: synthetic searches with user
behaviour -> tf.data -> fit the towers (temperature softmax, mixed hard
negatives) -> Recall@K, P_good -> export the servable with relevance control
-> reload it -> top-k item ids for a raw query and a behaviour history.

    python examples/mgdspr_example.py
"""

import json
import tempfile

import mgdspr_tf  # sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets import synthetic

keras.utils.set_random_seed(0)
LENGTHS = (8, 16, 16)  # real-time, short-term, long-term events kept
K = 50

# Search clicks with the user's earlier queries and R / S / L behaviour
# windows (Sec. 3.2.2); the last 10% of searches in time are the test.
world = synthetic.generate(synthetic.SyntheticConfig.scaled(
    500, num_users=300, seed=0))
data = mgdspr_tf.from_synthetic(world, lengths=LENGTHS, max_test=200)

model = mgdspr_tf.MGDSPRModel(
    data.num_items, data.attribute_sizes, dim=32, num_buckets=4096,
    num_heads=2, max_real=LENGTHS[0], max_short=LENGTHS[1],
    max_long=LENGTHS[2], num_hard=16)
model.set_catalogue(data.attributes, data.titles)  # item attributes, titles
model.compile(optimizer=mgdspr_tf.paper_optimizer())
train = mgdspr_tf.training_dataset(data.train, batch_size=64,
                                   num_items=data.num_items)
model.fit(train, epochs=2, steps_per_epoch=40, verbose=0)
print("in-batch", model.evaluate(train, steps=5, return_dict=True,
                                 verbose=0))

metrics = mgdspr_tf.evaluate(model, data, ks=[10, K])
print({k: round(v, 3) for k, v in metrics.items()
       if k in (f"recall@{K}", "p_good@10", "rc_p_good", "rc_removal_rate")})

path = mgdspr_tf.export_mgdspr(model, tempfile.mkdtemp(), data.item_ids,
                               data.intent_fields, data.item_fields,
                               max_k=100)
serve = tf.saved_model.load(path).signatures["serving_default"]
row = data.test.take([0])
history = [[str(data.item_ids[i]) if i >= 0 else "" for i in seq[0]]
           for seq in (row.real_time, row.short_term, row.long_term)]
answer = serve(query=tf.constant(row.query.astype(str)),
               history_query=tf.constant(row.history_query.astype(str)),
               real_time=tf.constant([history[0]]),
               short_term=tf.constant([history[1]]),
               long_term=tf.constant([history[2]]),
               relevance_control=tf.constant([1]), k=tf.constant([10]))
served = int(answer["num_results"].numpy()[0])
print(f"top-10 for {row.query[0]!r}:", answer["item_ids"].numpy()[0][:served])

# A random ranking puts each clicked item in the top K of N with
# probability K / N: its expected recall@K.
print(json.dumps({"example": "mgdspr", "metric": f"recall@{K}",
                  "value": metrics[f"recall@{K}"],
                  "random": K / data.num_items, "served": served}))
