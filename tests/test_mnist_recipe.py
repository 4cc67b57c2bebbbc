"""The foundation issue's acceptance run on real MNIST: the maxout recipe in 30 epochs, then FGSM at eps 0.25.

Slow (about 4 minutes on a 2-core CPU): `make test-slow`. The thresholds are the issue's, fixed in advance.
"""

from __future__ import annotations

import pytest

from conftest import metrics
from test_data import MNIST_DIR, needs_mnist


@pytest.mark.slow
@needs_mnist
def test_maxout_recipe_reaches_the_issue_numbers(advx, workdir):
    run_dir = workdir / "maxout"
    result = advx("train", "experiment=mnist_maxout", f"dataset.data_dir={MNIST_DIR}", "attack=fgsm",
                  "attack.eps=0.25", "runtime.progress=false", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    final = metrics(run_dir)
    assert final["test_error"] <= 0.016
    assert final["fgsm_adv_error@0.25"] >= 0.85
    assert final["fgsm_adv_confidence@0.25"] >= 0.90
