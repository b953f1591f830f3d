"""torch.compile(fullgraph=True) of a model calling crossent.torch.linear_cross_entropy (CPU).

The custom ops ``crossent::linear_ce_forward`` / ``crossent::linear_ce_backward`` are single
opaque nodes of the graph; loss and gradients must equal eager mode, with ``ignore_index``
present (a known silent failure of other fused losses under compile).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from crossent.torch import linear_cross_entropy  # noqa: E402
from crossent.torch._function import _backward_op, _forward_op  # noqa: E402


class _Head(torch.nn.Module):
    def __init__(self, d: int, C: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(d, d)
        self.out = torch.nn.Linear(d, C)

    def forward(self, x, target, reduction):
        h = torch.tanh(self.proj(x))
        return linear_cross_entropy(
            h,
            self.out.weight,
            target,
            self.out.bias,
            ignore_index=-100,
            label_smoothing=0.1,
            reduction=reduction,
            z_loss=1e-3,
            softcap=5.0,
        )


def test_custom_ops_pass_opcheck():
    g = torch.Generator().manual_seed(0)
    n, d, C = 6, 4, 9
    x, w, b = torch.randn(n, d, generator=g), torch.randn(C, d, generator=g), torch.randn(C)
    t = torch.randint(0, C, (n,), generator=g)
    a, bb = torch.rand(n), torch.rand(n)
    args = (x, w, b, t, a, bb, None, None, 2.0)
    torch.library.opcheck(_forward_op, args)
    lse, _ = _forward_op(*args)
    torch.library.opcheck(
        _backward_op, (*args, lse, torch.rand(n), torch.rand(n), True, True, False)
    )


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiled_matches_eager(reduction):
    torch.manual_seed(0)
    n, d, C = 12, 8, 37
    model = _Head(d, C).double()
    x = torch.randn(3, n // 3, d, dtype=torch.float64)
    target = torch.randint(0, C, (3, n // 3))
    target[0, 1] = target[2, 0] = -100

    def step(fn):
        model.zero_grad()
        loss = fn(x, target, reduction)
        (loss if loss.ndim == 0 else loss.sum()).backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    loss_c, grads_c = step(compiled)
    loss_e, grads_e = step(model)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-10, atol=1e-12)
    for gc, ge in zip(grads_c, grads_e, strict=True):
        torch.testing.assert_close(gc, ge, rtol=1e-10, atol=1e-12)


def test_one_opaque_node_in_the_graph():
    """Dynamo sees crossent::linear_ce_forward as one node, with no graph break."""
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes)
        return gm.forward

    torch._dynamo.reset()
    model = _Head(4, 9)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x, target = torch.randn(5, 4), torch.tensor([0, 1, -100, 3, 8])
    compiled(x, target, "mean")
    assert sum("linear_ce_forward" in s for s in seen) == 1, seen
