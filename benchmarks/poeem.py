"""Poeem's Table 2: the jointly trained index against offline indexes of the
same embeddings.

    python -m benchmarks.poeem [--data_root=../shared/data] [--datasets=ml-1m]

Trains Poeem (`python -m poeem_tf.train ... --save_embeddings`, the command
is recorded), then indexes the model's own unquantized item embeddings x
offline, as a user of the two-tower model would, and searches them with the
same held-out users' query vectors (DR protocol, the input half excluded):

* exact brute force over x (the ceiling of any offline index);
* Faiss IVFPQ with Poeem's J, K, D (`nbits = log2 K`) and the same nprobe;
* ScaNN with J leaves, the same leaves searched, 4-bit AH on d/D-dim blocks;
* Annoy and Faiss `IndexLSH` (D log2 K bits, Poeem's code size) at about the
  same search cost (Annoy: search_k = the candidates Poeem scans);
* Poeem's own served index (its learned codes in `IVFPQIndex`).

Reports p@100 and r@100 (and build seconds) in the `poeem` section of
`RESULTS.md` and `results/poeem.json`. One thread everywhere.

    python -m benchmarks.poeem --warm_start_choices=100,300,900 --seeds=0

chooses the warm-start steps on the validation users alone (section
`poeem_warm_start`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from typing import List

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from benchmarks import report
from retrieval_tf import metrics as metrics_lib

flags.DEFINE_string("data_root", os.path.join("..", "shared", "data"),
                    "Folder holding ml-1m/ and amazon-beauty/.")
flags.DEFINE_string("output_root", os.path.join("runs", "benchmarks",
                                                "poeem"), "Where runs go.")
flags.DEFINE_list("datasets", ["ml-1m", "amazon-beauty"], "Datasets.")
flags.DEFINE_list("train_flags", [
    "--loss=softmax", "--learning_rate=0.1", "--epochs=3",
    "--steps_per_epoch=400", "--warm_start_steps=300"],
                  "Extra flags of the --figures training runs.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Table 2: seeds (each its own "
                  "training run; figures are mean ± std over them).")
flags.DEFINE_list("ablation_seeds", ["0", "1", "2"], "Table 2: seeds of the "
                  "ablation runs.")
flags.DEFINE_list("ablations", ["norotation", "warm_start_steps"], "Table 2: "
                  "the ablations run (no rotation, cold start).")
flags.DEFINE_integer("max_epochs", 5, "Table 2: the longest training tried "
                     "(epochs of --steps_per_epoch steps); validation picks "
                     "the epoch tested.")
flags.DEFINE_integer("steps_per_epoch", 400, "Table 2: steps per epoch.")
flags.DEFINE_integer("warm_start_steps", 300, "Table 2: warm-start steps.")
flags.DEFINE_integer("num_valid_users", 500, "Table 2: validation users, "
                     "held out of the training users.")
flags.DEFINE_list("warm_start_choices", [], "Instead of Table 2: the "
                  "warm-start steps to choose among on validation (each "
                  "seed of --seeds, first dataset of --datasets); the "
                  "choice with the best mean validation r@100 wins. Test "
                  "users are not scored.")
flags.DEFINE_bool("figures", False, "Instead of Table 2: Figure 2 (r@100 "
                  "over J, K, D with and without rotation, against Faiss "
                  "IVFPQ) and Figure 3 (r@100 over warm-start steps, coarse "
                  "list sizes cold vs warm) on the first dataset, as PNGs.")
FLAGS = flags.FLAGS

# Figure 2: one parameter varied at a time around J=64, K=16, D=16.
SWEEP = {"num_centroids": (16, 64, 256), "num_codewords": (4, 16, 64),
         "num_subspaces": (4, 16, 32)}
WARM_STEPS = (0, 100, 300, 900)

K = 100
REPO_ROOT = harness.REPO_ROOT


def _filtered(ids: np.ndarray, exclude: np.ndarray) -> np.ndarray:
  """The first K ids of each row not in that row's exclusions (-1 pads)."""
  out = np.full((len(ids), K), -1, np.int64)
  for row, (found, banned) in enumerate(zip(ids, exclude)):
    keep = found[(found >= 0) & ~np.isin(found, banned)][:K]
    out[row, :len(keep)] = keep
  return out


def offline_indexes(items, queries, exclude, config, only_faiss=False):
  """name -> (build seconds, top-K ids with exclusions) on the same x."""
  import faiss  # pylint: disable=g-import-not-at-top
  num, dim = items.shape
  lists, subspaces = config["num_centroids"], config["num_subspaces"]
  codewords = config["num_codewords"]
  nprobe = config["nprobe"] or max(1, lists // 4)
  bits = int(math.log2(codewords))
  depth = K + exclude.shape[1]      # enough to fill K after exclusions
  results = {}

  def timed(name, build, search):
    start = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - start
    results[name] = (seconds, _filtered(search(index), exclude))

  def faiss_ivfpq():
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, subspaces,
                             bits, faiss.METRIC_INNER_PRODUCT)
    index.train(items)
    index.add(items)
    index.nprobe = nprobe
    return index

  timed(f"Faiss IVFPQ (J={lists}, D={subspaces}, K={codewords}, "
        f"nprobe={nprobe})", faiss_ivfpq,
        lambda index: index.search(queries, min(depth, num))[1])
  if only_faiss:
    return results

  def scann_index():
    import scann  # pylint: disable=g-import-not-at-top
    return (scann.scann_ops_pybind.builder(items, min(depth, num),
                                           "dot_product")
            .tree(num_leaves=lists, num_leaves_to_search=nprobe,
                  training_sample_size=num)
            .score_ah(dim // subspaces,
                      anisotropic_quantization_threshold=0.2).build())

  timed(f"ScaNN ({lists} leaves, {nprobe} searched, AH)", scann_index,
        lambda index: index.search_batched(queries)[0])

  def lsh():
    index = faiss.IndexLSH(dim, subspaces * bits)
    index.add(items)
    return index

  timed(f"Faiss IndexLSH ({subspaces * bits} bits)", lsh,
        lambda index: index.search(queries, min(depth, num))[1])

  def annoy_index():
    from annoy import AnnoyIndex  # pylint: disable=g-import-not-at-top
    index = AnnoyIndex(dim, "dot")
    for i, vector in enumerate(items):
      index.add_item(i, vector)
    index.build(10, n_jobs=1)
    return index

  scanned = int(num * nprobe / lists)
  def annoy_search(index):
    found = np.full((len(queries), min(depth, num)), -1, np.int64)
    for row, query in enumerate(queries):
      ids = index.get_nns_by_vector(query, min(depth, num), search_k=scanned)
      found[row, :len(ids)] = ids
    return found

  timed(f"Annoy (10 trees, search_k={scanned})", annoy_index, annoy_search)

  def exact():
    return items

  timed("brute force on x (exact)", exact,
        lambda items_: np.argsort(-(queries @ items_.T), axis=1)[
            :, :min(depth, num)])
  return results


# Ablations (Figure 2's rotation axis, Figure 3's cold start): extra flags.
ABLATIONS = {"Poeem": [], "Poeem-nr (no rotation)": ["--norotation"],
             "Poeem, cold start": ["--warm_start_steps=0"]}


def recall_at_scan(metrics, scanned: float) -> float:
  """r@100 of a run's served index at `scanned` items per query,
  interpolated (linearly in log items scanned) along its nprobe sweep."""
  sweep = sorted((metrics[f"nprobe{n}_scanned"], metrics[f"nprobe{n}_recall@{K}"])
                 for n in (int(key[6:-8]) for key in metrics
                           if key.startswith("nprobe") and
                           key.endswith("_scanned")))
  cost, recall = np.array(sweep).T
  return float(np.interp(np.log(scanned), np.log(cost), recall))


def _train(dataset: str, out: str, extra, threads: int = 1):
  """Runs one Poeem training; returns (command, metrics)."""
  cmd = ["python", "-m", "poeem_tf.train", f"--dataset={dataset}",
         f"--data_dir={os.path.join(FLAGS.data_root, dataset)}",
         f"--output_dir={out}", "--overwrite", "--verbose=2",
         "--save_embeddings", "--nprobe_sweep"] + FLAGS.train_flags + \
      list(extra)
  harness.run_command(cmd, threads)
  return cmd, harness.read_metrics(out)


def _faiss_recall(out: str, config) -> float:
  """r@100 of Faiss IVFPQ with the run's J, K, D on its own x."""
  saved = np.load(os.path.join(out, "embeddings.npz"))
  name, (_, top) = next(iter(offline_indexes(
      saved["items"], saved["queries"], saved["exclude"], config,
      only_faiss=True).items()))
  return metrics_lib.ranking_report(topk=top, truth=saved["truth"],
                                    ks=(K,))[f"recall@{K}"]


def figures(dataset: str) -> None:
  """Figures 2 and 3 of the paper on `dataset` (two threads per run: these
  are quality figures, not timings)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  base = {"num_centroids": 64, "num_codewords": 16, "num_subspaces": 16}
  root = os.path.join(FLAGS.output_root, "figures", dataset)
  points, commands, done = {}, [], {}
  for param, values in SWEEP.items():
    for value in values:
      config = dict(base, **{param: value})
      for rotation in (True, False):
        flags_ = [f"--{k}={v}" for k, v in config.items()] + (
            [] if rotation else ["--norotation"])
        out = os.path.join(root, "-".join(f[2:] for f in flags_))
        if out not in done:   # the base point is shared by the sweeps
          cmd, found = _train(dataset, out, flags_, threads=2)
          commands.append(shlex.join(cmd))
          done[out] = (found[f"recall@{K}"],
                       _faiss_recall(out, dict(config, nprobe=0)))
        points[(param, value, rotation)] = done[out]
  warm = {}
  for steps in WARM_STEPS:
    out = os.path.join(root, f"warm-{steps}")
    cmd, found = _train(dataset, out, [f"--warm_start_steps={steps}"],
                        threads=2)
    commands.append(shlex.join(cmd))
    saved = np.load(os.path.join(out, "embeddings.npz"))
    warm[steps] = (found[f"recall@{K}"], found["coarse_used"],
                   saved["list_sizes"], found)
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, (param, values) in zip(axes, SWEEP.items()):
    ax.plot(values, [points[(param, v, True)][0] for v in values], "o-",
            label="Poeem")
    ax.plot(values, [points[(param, v, False)][0] for v in values], "s--",
            label="Poeem-nr")
    ax.plot(values, [points[(param, v, True)][1] for v in values], "^:",
            label="Faiss IVFPQ (x of the Poeem run)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(param.replace("num_", "").replace("centroids", "J")
                  .replace("codewords", "K").replace("subspaces", "D"))
    ax.set_ylabel(f"r@{K}")
    ax.legend(fontsize=7)
  fig.suptitle(f"Figure 2 on {dataset}")
  fig.tight_layout()
  fig.savefig(os.path.join(report.RESULTS_DIR, "poeem_figure2.png"), dpi=110)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  axes[0].plot(WARM_STEPS, [warm[s][0] for s in WARM_STEPS], "o-")
  axes[0].set_xlabel("warm-start steps (0 = cold start)")
  axes[0].set_ylabel(f"r@{K}")
  for steps in (0, max(WARM_STEPS)):
    axes[1].bar(np.arange(len(warm[steps][2])), np.sort(warm[steps][2])[::-1],
                alpha=0.6, label=f"{steps} warm-start steps")
  axes[1].set_xlabel("coarse centroid (sorted by size)")
  axes[1].set_ylabel("items")
  axes[1].legend()
  fig.suptitle(f"Figure 3 on {dataset}")
  fig.tight_layout()
  fig.savefig(os.path.join(report.RESULTS_DIR, "poeem_figure3.png"), dpi=110)
  rows2 = [[param, value, f"{points[(param, value, True)][0]:.4f}",
            f"{points[(param, value, False)][0]:.4f}",
            f"{points[(param, value, True)][1]:.4f}"]
           for param, values in SWEEP.items() for value in values]
  scan = warm[max(WARM_STEPS)][3]["scanned"]
  rows3 = [[steps, f"{warm[steps][0]:.4f}", f"{warm[steps][3]['scanned']:,.0f}",
            f"{recall_at_scan(warm[steps][3], scan):.4f}",
            f"{warm[steps][1]:.2f}"] for steps in WARM_STEPS]
  listed = "\n".join(f"    {c}" for c in commands)
  report.write_section("poeem_figures", f"""
## Poeem, Figures 2 and 3 on {dataset}

Measured by `python -m benchmarks.poeem --figures
{' '.join(a for a in sys.argv[1:] if a != '--figures')}` (two threads per
training run; served index, nprobe = J/4); plots in
`results/poeem_figure2.png` and `results/poeem_figure3.png`. Faiss IVFPQ is
built on the unquantized embeddings of the Poeem run with the same J, K, D.

{report.markdown_table(["varied", "value", f"Poeem r@{K}",
                        f"Poeem-nr r@{K}", f"Faiss IVFPQ r@{K}"], rows2)}

{report.markdown_table(["warm-start steps", f"r@{K}", "items scanned",
                        f"r@{K} at {scan:,.0f} items scanned",
                        "coarse centroids used"], rows3)}

"items scanned": mean items the served index scores per query; the column
after it interpolates each run's recall along its nprobe sweep to the scan
of the {max(WARM_STEPS)}-step run (equal search cost).

<details><summary>commands</summary>

{listed}

</details>
""", {"figure2": {f"{p}={v} rotation={r}": list(x)
                  for (p, v, r), x in points.items()},
      "figure3": {str(s): [w[0], w[1], w[2].tolist(), w[3]["scanned"]]
                  for s, w in warm.items()},
      "commands": commands})


# The Table 2 settings (the CLI flags of the recorded equivalent run).
SETTINGS = {"loss": "softmax", "learning_rate": 0.1, "batch_size": 1024,
            "history_length": 50, "embedding_dim": 64, "num_centroids": 64,
            "num_codewords": 16, "num_subspaces": 16, "temperature": 0.05,
            "num_test_users": 1000}
STALENESS = ("codes_never_stored", "coarse_codes_changed", "pq_codes_changed")


def poeem_seed(dataset, seed: int, variant, max_epochs: int,
               steps_per_epoch: int, num_valid: int, test: bool = True):
  """One seed of one variant: trains on the DR split's training users less
  `num_valid` validation users, scores the validation users' r@100 (served
  index) after every epoch once the index is on, keeps the best epoch's
  weights and evaluates the test users once with them (with `test=False`,
  never: the metrics are then only the validation curve, the chosen epoch
  and its validation r@100, and there are no item vectors).

  Returns:
    `(test metrics with the validation curve and the chosen epoch, split,
    model)`.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  import poeem_tf  # pylint: disable=g-import-not-at-top
  from poeem_tf import servable  # pylint: disable=g-import-not-at-top
  from retrieval_tf.compat import keras  # pylint: disable=g-import-not-at-top
  from retrieval_tf.datasets import registry  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  s = SETTINGS
  split = registry.held_out_split(dataset, s["num_test_users"], seed)
  train_side = dataclasses.replace(dataset, interactions=split.train)
  inner = registry.held_out_split(train_side, num_valid, seed)
  train = poeem_tf.training_dataset(
      inner.train, batch_size=s["batch_size"],
      history_length=s["history_length"], num_items=dataset.num_items,
      num_users=dataset.num_users, with_log_q=True, seed=seed, repeat=True)
  model = poeem_tf.PoeemModel(
      dataset.num_items, embedding_dim=s["embedding_dim"],
      output_dim=s["embedding_dim"], num_centroids=s["num_centroids"],
      num_subspaces=s["num_subspaces"], num_codewords=s["num_codewords"],
      loss=s["loss"], temperature=s["temperature"], warm_start_seed=seed,
      **variant)
  model.compile(optimizer=keras.optimizers.Adagrad(s["learning_rate"]))
  curve, best = [], {"recall": -1.0}

  class Validation(keras.callbacks.Callback):
    """Validation r@100 of the served index after every epoch."""

    def on_epoch_end(self, epoch, logs=None):
      if not float(model.index_layer.enabled.numpy()):
        return   # still warming up: no index to serve yet
      found = poeem_tf.evaluate(model, inner, train_side,
                                s["history_length"], ks=(K,))
      curve.append({"epoch": epoch + 1,
                    "steps": (epoch + 1) * steps_per_epoch,
                    f"valid_recall@{K}": found[f"recall@{K}"]})
      print(f"seed {seed} {variant or 'Poeem'} epoch {epoch + 1}: "
            f"validation r@{K} {found[f'recall@{K}']:.4f}", flush=True)
      if found[f"recall@{K}"] > best["recall"]:
        best.update(recall=found[f"recall@{K}"], epoch=epoch + 1,
                    weights=model.get_weights())

  start = time.perf_counter()
  model.fit(train, epochs=max_epochs, steps_per_epoch=steps_per_epoch,
            callbacks=[Validation()], verbose=0)
  train_seconds = time.perf_counter() - start
  if "weights" not in best:
    raise ValueError(f"--warm_start_steps never ended within {max_epochs} "
                     f"epochs of {steps_per_epoch} steps: nothing to validate")
  if not test:
    return ({"validation_curve": curve, "chosen_epoch": best["epoch"],
             f"valid_recall@{K}": best["recall"]}, split, model, None)
  model.set_weights(best["weights"])
  vectors = model.catalogue_embeddings()
  nprobe = max(1, s["num_centroids"] // 4)
  index, build_seconds = servable.index_from_codes(
      model, vectors, nprobe, 0, max_k=1000)
  metrics = poeem_tf.evaluate(
      model, split, dataset, s["history_length"], nprobe=nprobe,
      nprobe_sweep=True, index=index, item_vectors=vectors)
  print(f"seed {seed} {variant or 'Poeem'}: chosen epoch {best['epoch']}, "
        f"test r@{K} {metrics[f'recall@{K}']:.4f}", flush=True)
  metrics.update(seed=seed, chosen_epoch=best["epoch"],
                 chosen_steps=best["epoch"] * steps_per_epoch,
                 validation_curve=curve, train_seconds=round(train_seconds, 1),
                 index_build_seconds=round(build_seconds, 3),
                 num_train_users=int(len(np.unique(inner.train.user))),
                 num_validation_users=len(inner.test.users))
  return metrics, split, model, vectors


def choose_warm_start(dataset_name: str, choices: List[int]) -> None:
  """Warm-start steps chosen on the validation users alone: every choice
  trained as Table 2 trains Poeem (same seeds, epochs picked on
  validation), its best validation r@100 per seed compared; no test user
  is scored."""
  from retrieval_tf.datasets import registry  # pylint: disable=g-import-not-at-top
  dataset = registry.load_rec_dataset(
      dataset_name, os.path.join(FLAGS.data_root, dataset_name))
  seeds = [int(s) for s in FLAGS.seeds]
  found = {}
  for steps in choices:
    for seed in seeds:
      best = poeem_seed(dataset, seed, dict(warm_start_steps=steps),
                        FLAGS.max_epochs, FLAGS.steps_per_epoch,
                        FLAGS.num_valid_users, test=False)[0]
      found.setdefault(steps, []).append(
          {"seed": seed, "epoch": best["chosen_epoch"],
           f"valid_recall@{K}": best[f"valid_recall@{K}"]})
      print(f"warm start {steps}, seed {seed}: best validation r@{K} "
            f"{best[f'valid_recall@{K}']:.4f} at epoch "
            f"{best['chosen_epoch']}", flush=True)
  mean = {steps: float(np.mean([r[f"valid_recall@{K}"] for r in runs]))
          for steps, runs in found.items()}
  chosen = max(mean, key=mean.get)
  command = "python -m benchmarks.poeem " + " ".join(sys.argv[1:])
  rows = [[steps, _mean_std([r[f"valid_recall@{K}"] for r in runs]),
           ", ".join(str(r["epoch"]) for r in runs),
           "chosen" if steps == chosen else ""]
          for steps, runs in found.items()]
  report.write_section("poeem_warm_start", f"""
## Poeem: warm-start steps chosen on validation

Measured on {report.machine()} by `{command}` (one thread), {dataset_name},
seeds {', '.join(map(str, seeds))}: each choice trained as Table 2 trains
Poeem, its epoch picked on the {FLAGS.num_valid_users} validation users
(r@{K} of the served index, up to {FLAGS.max_epochs} epochs of
{FLAGS.steps_per_epoch} steps); no test user was scored. The choice with
the best mean validation r@{K} is {chosen}.

{report.markdown_table(
    ["warm-start steps", f"validation r@{K}", "chosen epochs", ""], rows)}
""", {"command": command, "dataset": dataset_name, "seeds": seeds,
      "runs": found, "chosen": chosen})


def _offline_table(dataset, split, model, vectors):
  """name -> (p@100, r@100, build s) of the offline indexes on the model's
  own x, searched with the test users' query vectors."""
  from poeem_tf import evaluation  # pylint: disable=g-import-not-at-top
  from retrieval_tf.evaluation import HeldOutProtocol  # pylint: disable=g-import-not-at-top
  protocol = HeldOutProtocol.from_held_out(split.test, dataset.num_items)
  queries = evaluation.user_queries(model, protocol, dataset.num_users,
                                    SETTINGS["history_length"])
  config = {k: SETTINGS[k] for k in ("num_centroids", "num_codewords",
                                     "num_subspaces")}
  config["nprobe"] = 0
  table = {}
  for name, (seconds, top) in offline_indexes(
      vectors, queries, protocol.banned, config).items():
    scores = metrics_lib.ranking_report(topk=top, truth=protocol.truth,
                                        ks=(K,))
    table[name] = (scores[f"precision@{K}"], scores[f"recall@{K}"], seconds)
  return table


def _mean_std(values) -> str:
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def main(unused_argv):
  os.chdir(REPO_ROOT)
  harness.pin_threads()
  if FLAGS.figures:
    figures(FLAGS.datasets[0])
    return
  if FLAGS.warm_start_choices:
    choose_warm_start(FLAGS.datasets[0],
                      [int(v) for v in FLAGS.warm_start_choices])
    return
  from retrieval_tf.datasets import registry  # pylint: disable=g-import-not-at-top
  seeds = [int(s) for s in FLAGS.seeds]
  ablation_seeds = [int(s) for s in FLAGS.ablation_seeds]
  rows, ablation_rows, staleness, raw = [], [], [], {}
  for dataset_name in FLAGS.datasets:
    dataset = registry.load_rec_dataset(
        dataset_name, os.path.join(FLAGS.data_root, dataset_name))
    tables, runs = [], []
    ablations = {name: [] for name in ABLATIONS}
    for seed in seeds:
      metrics, split, model, vectors = poeem_seed(
          dataset, seed, dict(warm_start_steps=FLAGS.warm_start_steps),
          FLAGS.max_epochs, FLAGS.steps_per_epoch, FLAGS.num_valid_users)
      table = _offline_table(dataset, split, model, vectors)
      table["Poeem (served index: codes remembered in training, same "
            "nprobe)"] = (metrics[f"precision@{K}"], metrics[f"recall@{K}"],
                          metrics["index_build_seconds"])
      table["Poeem (codes re-encoded by the final quantizers, same "
            "nprobe)"] = (metrics[f"fresh_precision@{K}"],
                          metrics[f"fresh_recall@{K}"], math.nan)
      table["most popular (floor)"] = (metrics[f"popular_precision@{K}"],
                                       metrics[f"popular_recall@{K}"], 0.0)
      tables.append(table)
      runs.append(metrics)
      if seed in ablation_seeds:
        ablations["Poeem"].append(metrics)
    for name, extra in ABLATIONS.items():
      if not extra or extra[0].lstrip("-").split("=")[0] not in \
          FLAGS.ablations:
        continue
      variant = dict(warm_start_steps=FLAGS.warm_start_steps)
      variant.update({"--norotation": {"rotation": False},
                      "--warm_start_steps=0": {"warm_start_steps": 0}}[
                          extra[0]])
      for seed in ablation_seeds:
        ablations[name].append(poeem_seed(
            dataset, seed, variant, FLAGS.max_epochs, FLAGS.steps_per_epoch,
            FLAGS.num_valid_users)[0])
    raw[dataset_name] = {
        "seeds": seeds, "chosen_epochs": [r["chosen_epoch"] for r in runs],
        "rows": {name: [t[name] for t in tables] for name in tables[0]},
        "runs": runs, "ablations": ablations}
    for name in tables[0]:
      seconds = [t[name][2] for t in tables]
      rows.append([dataset_name, name,
                   _mean_std([t[name][0] for t in tables]),
                   _mean_std([t[name][1] for t in tables]),
                   "-" if math.isnan(seconds[0])
                   else f"{np.mean(seconds):.2f}"])
    staleness.append([dataset_name] + [_mean_std([r[k] for r in runs])
                                       for k in STALENESS])
    scan = float(np.mean([r["scanned"] for r in ablations["Poeem"]]))
    for name, extra in ABLATIONS.items():
      found = ablations[name]
      if not found:
        continue
      ablation_rows.append([
          dataset_name, name, " ".join(extra) or "-",
          _mean_std([f[f"precision@{K}"] for f in found]),
          _mean_std([f[f"recall@{K}"] for f in found]),
          f"{np.mean([f['scanned'] for f in found]):,.0f}",
          _mean_std([recall_at_scan(f, scan) for f in found]),
          _mean_std([f["coarse_used"] for f in found]),
          ", ".join(str(f["chosen_epoch"]) for f in found)])
  command = "python -m benchmarks.poeem " + " ".join(sys.argv[1:])
  raw["command"] = command
  raw["settings"] = dict(SETTINGS, warm_start_steps=FLAGS.warm_start_steps,
                         max_epochs=FLAGS.max_epochs,
                         steps_per_epoch=FLAGS.steps_per_epoch,
                         num_valid_users=FLAGS.num_valid_users)
  curves = "\n".join(
      f"* {name}, seed {r['seed']}: " + ", ".join(
          f"{p['steps']} steps {p[f'valid_recall@{K}']:.4f}"
          for p in r["validation_curve"])
      for name, value in raw.items() if isinstance(value, dict)
      and "runs" in value for r in value["runs"])
  table_md = report.markdown_table(
      ["dataset", "index", f"p@{K}", f"r@{K}", "build s"], rows)
  s = SETTINGS
  report.write_section("poeem", f"""
## Poeem, Table 2: the jointly trained index vs offline indexes

Measured on {report.machine()} by `{command}` (one thread; shared with
other jobs), seeds {', '.join(map(str, seeds))}; figures are mean ± std
(population) over the seeds. Poeem ({s['loss']} + logQ, Adagrad
{s['learning_rate']}, batch {s['batch_size']}, J={s['num_centroids']},
K={s['num_codewords']}, D={s['num_subspaces']}, d={s['embedding_dim']},
{FLAGS.warm_start_steps} warm-start steps) trains on the DR split's
training users less {FLAGS.num_valid_users} validation users (held out as
the test users are: first half of the history in, second half to find);
the validation users' r@{K} of the served index after every epoch of
{FLAGS.steps_per_epoch} steps (up to {FLAGS.max_epochs}) picks the epoch
whose weights are tested, once per seed, on the {s['num_test_users']} test
users. Every offline index is built on that model's own unquantized item
embeddings x and searched with the same test users' query vectors (the
input half excluded). "build s" of Poeem is copying the codes its index
layer remembered in training into the index (items never quantized after
the warm start are encoded then); the row below it re-encodes every item
with the final quantizers instead.

{table_md}

Validation r@{K} (served index) along training, from the first epoch with
the index on:

{curves}

How stale the remembered codes are at the end of training (share of items
never quantized after the warm start; among the others, share whose coarse
code, and share of PQ codes, differ from the final quantizers' codes):

{report.markdown_table(
    ["dataset", "never stored", "coarse code changed", "PQ codes changed"],
    staleness)}

Ablations, each trained the same way (its own epoch chosen on validation),
seeds {', '.join(map(str, ablation_seeds))} (served index):

{report.markdown_table(
    ["dataset", "variant", "flags", f"p@{K}", f"r@{K}", "items scanned",
     f"r@{K} at Poeem's scan", "coarse centroids used", "chosen epochs"],
    ablation_rows)}

"items scanned" is the mean number of items the served index scores per
query (the sizes of its probed lists); "r@{K} at Poeem's scan" is the
variant's recall when it scans as many items per query as Poeem's default
run, interpolated along its nprobe sweep: the comparison at equal search
cost.
""", raw)


if __name__ == "__main__":
  app.run(main)
