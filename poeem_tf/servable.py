"""Poeem's one servable: the user tower + an `IVFPQIndex` made of the codes
the model learned.

"The index is just the codes" (Sec. 3.4): the trained `EmbeddingIndexLayer`
remembers the code of every item it quantized in training, so building the
index (`index_from_codes`, `codes="stored"`) is copying those codes, the
centroids, codebooks and rotation into `retrieval_tf.index.IVFPQIndex`
(whose query rotation is R^T in row-vector form, so that
<R q, rho> = <q, T(x)>, the training score); only items the layer never
quantized are encoded. `codes="fresh"` re-encodes the whole catalogue with
the final quantizers instead; `code_staleness` measures how far the two
differ. The servable is the shared two-tower one: raw history in, original
item ids out, with the k rule of every servable (docs/serving.md, "k"):
max_k is the index's (the export's max_k capped at the catalogue), a k
outside 1..max_k is refused, and a row whose probed lists hold fewer than k
items is padded with item id "" and score -inf.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from retrieval_tf.compat import tf
from retrieval_tf.datasets.types import RecDataset
from retrieval_tf.index import IVFPQIndex
from retrieval_tf.models.two_tower_servable import export_two_tower

from poeem_tf import callbacks
from poeem_tf.callbacks import code_usage
from poeem_tf.layers import EmbeddingIndexLayer, encode_catalogue
from poeem_tf.model import PoeemModel

PAPER = ("Zhang et al., Joint Learning of Deep Retrieval Model and Product "
         "Quantization based Embedding Index (Poeem), SIGIR'21")


CODE_SOURCES = ("stored", "fresh")


def catalogue_codes(layer: EmbeddingIndexLayer, item_vectors: np.ndarray,
                    codes: str = "stored", batch_size: int = 65536
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """`(coarse [V], pq [V, D])` codes of the catalogue: the ones the layer
  remembered from training, the items it never quantized encoded now
  (`"stored"`, needs a layer with `num_items`), or all encoded now
  (`"fresh"`)."""
  if codes not in CODE_SOURCES:
    raise ValueError(f"codes must be one of {CODE_SOURCES}, got {codes!r}")
  if codes == "fresh":
    return encode_catalogue(layer, item_vectors, batch_size)
  coarse, pq = layer.item_codes()
  if len(coarse) != len(item_vectors):
    raise ValueError(f"the layer remembers codes of {len(coarse)} items, "
                     f"the catalogue has {len(item_vectors)}")
  missing = np.flatnonzero(coarse < 0)
  if len(missing):
    coarse, pq = coarse.copy(), pq.copy()
    coarse[missing], pq[missing] = encode_catalogue(
        layer, item_vectors[missing], batch_size)
  return coarse, pq


def code_staleness(layer: EmbeddingIndexLayer,
                   item_vectors: np.ndarray) -> Dict[str, float]:
  """How the remembered codes differ from the final quantizers' codes:
  share of items never quantized in training, share whose coarse code
  changed, and share of PQ codes (item x sub-space) that changed, among the
  items with a remembered code."""
  stored_coarse, stored_pq = layer.item_codes()
  fresh_coarse, fresh_pq = encode_catalogue(layer, item_vectors)
  seen = stored_coarse >= 0
  return {
      "codes_never_stored": float(1.0 - seen.mean()),
      "coarse_codes_changed": float(
          (stored_coarse[seen] != fresh_coarse[seen]).mean())
      if seen.any() else 0.0,
      "pq_codes_changed": float((stored_pq[seen] != fresh_pq[seen]).mean())
      if seen.any() else 0.0}


def index_from_codes(model: PoeemModel, item_vectors: np.ndarray,
                     nprobe: int, rerank: int = 0, max_k: int = 1000,
                     codes: str = "stored", batch_size: int = 65536
                     ) -> Tuple[IVFPQIndex, float]:
  """The `IVFPQIndex` of the learned codes (`catalogue_codes`); returns it
  and the seconds it took, from the trained model to the filled index."""
  layer = model.index_layer
  if layer.product.num_codewords > 256:
    raise ValueError(f"the servable stores one byte per code: K must be <= "
                     f"256, got {layer.product.num_codewords}")
  start = time.perf_counter()
  coarse, pq = catalogue_codes(layer, item_vectors, codes, batch_size)
  index = IVFPQIndex(
      len(item_vectors), item_vectors.shape[1], layer.coarse.num_centroids,
      layer.product.num_subspaces, layer.product.num_codewords,
      metric="dot", max_k=max_k, nprobe=nprobe, rerank=rerank,
      store_vectors=rerank > 0, rotation=layer.use_rotation)
  index.set_index(
      layer.coarse.centroids.numpy(), layer.product.codebooks.numpy(),
      coarse, pq,
      vectors=item_vectors if rerank > 0 else None,
      rotation=(layer.rotation.rotation.numpy().T if layer.use_rotation
                else None))
  return index, time.perf_counter() - start


def index_utilisation(index: IVFPQIndex) -> Dict[str, float]:
  """`code_usage` of the codes an index holds (no re-encoding)."""
  sizes = np.diff(index.list_offsets.numpy())
  return code_usage(np.repeat(np.arange(index.num_lists), sizes),
                    index.codes.numpy(), index.num_lists, index.num_codewords)


def export_poeem(model: PoeemModel, export_dir: str, dataset: RecDataset,
                 history_length: int, *, nprobe: int = 0, rerank: int = 0,
                 max_k: int = 1000, codes: str = "stored",
                 index: Optional[IVFPQIndex] = None,
                 item_vectors: Optional[np.ndarray] = None,
                 index_build_seconds: Optional[float] = None,
                 model_card: Optional[Mapping[str, Any]] = None) -> str:
  """Exports Poeem's servable (raw history -> top-k item ids through the
  IVF-PQ index of the learned codes, Sec. 3.4) as the next version of
  `export_dir`.

  Args:
    model: a trained `PoeemModel`.
    export_dir: the versioned export folder (created when missing).
    dataset: the `RecDataset` whose vocabularies map raw ids.
    history_length: L, the servable's history window.
    nprobe: lists probed per request (0: J / 4).
    rerank, max_k, codes: as in `index_from_codes`; max_k (capped at the
      catalogue) is the largest k a request may ask for.
    index, item_vectors, index_build_seconds: an index already built by
      `index_from_codes` on `item_vectors` (default: built here from
      `model.catalogue_embeddings()`).
    model_card: more entries for the model card, which records the build
      time, the utilisation and the index's problems (`warnings`, also
      logged and warned about).

  Returns:
    The exported version's folder.

  Example:

      path = poeem_tf.export_poeem(model, "/tmp/poeem", dataset,
                                   history_length=20)
      serve = tf.saved_model.load(path).signatures["serving_default"]
      serve(history=tf.constant([["12", "7"]]), k=tf.constant([10]))
  """
  if index is None:
    item_vectors = model.catalogue_embeddings()
    nprobe = nprobe or max(1, model.index_layer.coarse.num_centroids // 4)
    index, index_build_seconds = index_from_codes(
        model, item_vectors, nprobe, rerank, max_k=max_k, codes=codes)
  elif item_vectors is None or index_build_seconds is None:
    raise ValueError("export_poeem: with index, give item_vectors and "
                     "index_build_seconds too (index_from_codes returns them)")
  usage = index_utilisation(index)
  problems = callbacks.index_health(model.index_layer, usage)
  callbacks.warn(problems)
  card = {"model": "poeem", "paper": PAPER,
          "index_build_seconds": round(index_build_seconds, 3),
          "utilisation": usage, "warnings": problems}
  card.update(model_card or {})
  return export_two_tower(model, dataset, item_vectors, export_dir,
                          history_length, max_k=index.max_k,
                          model_card=card, index=index)
