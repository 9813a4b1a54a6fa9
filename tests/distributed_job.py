"""Trains the two-tower baseline for a few steps under one tf.distribute
strategy through `retrieval_tf.runner.fit`; prints the per-epoch losses as JSON.

    python tests/distributed_job.py STRATEGY OUTPUT_DIR

STRATEGY: `mirrored` (2 logical CPU devices), `multi_worker` (cluster from
TF_CONFIG) or `parameter_server` (an in-process cluster of 2 workers + 1 ps
on loopback ports). Used by tests/test_distribute.py.
"""

import json
import socket
import sys

import numpy as np

import retrieval_tf  # noqa: F401
from retrieval_tf import data as pipeline
from retrieval_tf import runner
from retrieval_tf.compat import keras, tf
from retrieval_tf.datasets.types import Interactions
from retrieval_tf.models.two_tower import TwoTowerModel

USERS, ITEMS, EVENTS = 50, 40, 4000
EPOCHS, STEPS, BATCH = 3, 10, 64


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _in_process_cluster(num_workers=2, num_ps=1):
  spec = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(num_workers)],
          "ps": [f"127.0.0.1:{_free_port()}" for _ in range(num_ps)]}
  cluster = tf.train.ClusterSpec(spec)
  # In-process workers share this machine's cores; with fewer cores than
  # workers + 1 their inter-op pools deadlock (see TF's PS training guide).
  config = tf.compat.v1.ConfigProto(
      inter_op_parallelism_threads=num_workers + 1)
  for job, count in (("worker", num_workers), ("ps", num_ps)):
    for i in range(count):
      tf.distribute.Server(cluster, job_name=job, task_index=i,
                           config=config, protocol="grpc", start=True)
  return tf.distribute.cluster_resolver.SimpleClusterResolver(
      cluster, rpc_layer="grpc")


def _strategy(name):
  if name == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return runner.make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
  if name == "parameter_server":
    return runner.make_strategy("parameter_server",
                                cluster_resolver=_in_process_cluster())
  return runner.make_strategy(name)


def main(name, output_dir):
  strategy = _strategy(name)
  rng = np.random.default_rng(0)
  # Planted structure: user u mostly clicks items of group u % 4.
  users = rng.integers(0, USERS, EVENTS)
  items = (users % 4) * 10 + rng.integers(0, 10, EVENTS)
  log = Interactions(users, items, timestamp=np.arange(EVENTS))
  dataset_fn = pipeline.distributed_dataset_fn(
      log, batch_size=BATCH, history_length=5, shuffle=True, seed=0,
      repeat=True, with_log_q=True, drop_remainder=True)

  def build():
    model = TwoTowerModel(USERS, ITEMS, embedding_dim=16, output_dim=16,
                          hidden_units=[32], temperature=0.1)
    model.compile(keras.optimizers.Adagrad(0.5))
    return model

  result = runner.fit(build, dataset_fn, strategy=strategy,
                      output_dir=output_dir, epochs=EPOCHS,
                      steps_per_epoch=STEPS, batch_size=BATCH, verbose=0)
  print(json.dumps({"loss": result.history["loss"],
                    "steps": result.train_steps,
                    "replicas": strategy.num_replicas_in_sync}))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
