"""Every script in `examples/` runs as a user runs it and reports a metric
above a random scorer's and a servable that answers.

Each example prints, as its last line, a JSON object
`{"example", "metric", "value", "random", "served"}`: the paper's metric of
the trained model, the same metric of a random scorer, and how many items the
exported servable (reloaded with `tf.saved_model.load`) returned for its
first request.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.py"))


def test_every_package_has_an_example():
  names = {path.stem for path in EXAMPLES}
  for package in ("two_tower", "poeem", "dr", "pdn", "dpsr", "mgdspr"):
    assert f"{package}_example" in names, f"examples/{package}_example.py"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(script, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  result = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["example"] == script.stem.replace("_example", "")
  assert report["value"] > report["random"], report
  assert report["served"] > 0, report
