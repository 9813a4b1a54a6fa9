"""Writing benchmark results: one section of RESULTS.md per benchmark.

Each benchmark owns the text between `<!-- begin NAME -->` and
`<!-- end NAME -->` in `benchmarks/RESULTS.md` and the raw numbers in
`benchmarks/results/NAME.json`; rerunning one benchmark leaves the others'
sections untouched.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from retrieval_tf.files import write_json_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
RESULTS_DIR = os.path.join(HERE, "results")
HEADER = ("# Benchmark results\n\nEvery table below was written by the "
          "command in its section, on the machine it names. Rerun a "
          "benchmark to refresh its section.\n")


def machine() -> str:
  """A one-line description of where the numbers were measured."""
  return (f"{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]
                   ) -> str:
  def cell(value):
    if isinstance(value, float):
      return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def mean_std(runs: List[Dict[str, Any]], key: str) -> str:
  """`key` over the runs that have it as "mean ± std" (population std), one
  value as itself, none as "-"."""
  values = [r[key] for r in runs if key in r]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def chosen_epochs(runs: List[Dict[str, Any]], key: str = "best_epoch") -> str:
  """The epoch validation chose in each run (`key` of its metrics), one per
  seed, as a table cell: "4, 6, 5"."""
  return ", ".join(str(r[key]) for r in runs)


def write_section(name: str, markdown: str, raw: Mapping[str, Any]) -> None:
  """Replaces benchmark `name`'s section of RESULTS.md; writes its JSON."""
  begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
  block = f"{begin}\n{markdown.strip()}\n{end}"
  text = open(RESULTS_MD).read() if os.path.exists(RESULTS_MD) else HEADER
  pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
  if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  tmp = RESULTS_MD + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, RESULTS_MD)
  write_json_atomic(os.path.join(RESULTS_DIR, f"{name}.json"), dict(raw))
