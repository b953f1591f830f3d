"""Time crossent's loss + analytic gradient against torch's cross_entropy forward + backward.

Same logits (4096, 1000) float32 and class indices, one process, CPU; prints a table and
writes benchmarks/results/bench_loss.json. Torch uses its default intra-op threads.

    python benchmarks/bench_loss.py
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import crossent
from _timing import timings
from crossent import softmax_cross_entropy, softmax_cross_entropy_with_grad

RESULTS = Path(__file__).parent / "results" / "bench_loss.json"
SHAPE = (4096, 1000)


def best_of(fn, repeat=20):
    times = timings(fn, repeat)
    return float(np.median(times)), float(min(times))


def main():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    target = rng.integers(0, SHAPE[1], SHAPE[0])
    logits_t = torch.from_numpy(logits)
    target_t = torch.from_numpy(target)

    def torch_fwd_bwd():
        z = logits_t.detach().requires_grad_(True)
        F.cross_entropy(z, target_t).backward()
        return z.grad

    def torch_fwd():
        with torch.no_grad():
            return F.cross_entropy(logits_t, target_t)

    cases = {
        "crossent loss+grad (numpy)": lambda: softmax_cross_entropy_with_grad(logits, target),
        "torch forward+backward": torch_fwd_bwd,
        "crossent loss (numpy)": lambda: softmax_cross_entropy(logits, target),
        "torch forward": torch_fwd,
    }
    # the two agree before anything is timed
    loss, grad = softmax_cross_entropy_with_grad(logits, target)
    grad_t = torch_fwd_bwd().numpy()
    assert np.allclose(grad, grad_t, rtol=1e-4, atol=1e-9), "gradients disagree"
    assert abs(float(loss) - float(torch_fwd())) < 1e-5 * float(loss), "losses disagree"

    rows = {}
    for name, fn in cases.items():
        median, best = best_of(fn)
        rows[name] = {"median_ms": median * 1e3, "min_ms": best * 1e3}
    base = rows["torch forward+backward"]["median_ms"]
    print(f"{'case':30s} {'median ms':>10s} {'min ms':>8s} {'vs torch fwd+bwd':>17s}")
    for name, r in rows.items():
        ratio = r["median_ms"] / base
        print(f"{name:30s} {r['median_ms']:10.2f} {r['min_ms']:8.2f} {ratio:17.2f}")
    meta = {
        "shape": SHAPE,
        "dtype": "float32",
        "crossent": crossent.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
