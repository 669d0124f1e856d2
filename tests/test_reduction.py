"""weight_reduce_loss: mmdet 3.x semantics exactly, plus the checks and rules it adds."""
import pytest
import torch
from mmdet.models.losses.utils import weight_reduce_loss as mmdet_weight_reduce_loss

from mmloss_ext.core.reduction import adapt_weight, per_box_weight, weight_reduce_loss


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('avg_factor', [None, 3.0, torch.tensor(5.0)])
@pytest.mark.parametrize('weighted', [False, True])
def test_matches_mmdet(reduction, avg_factor, weighted, gen):
    if reduction == 'sum' and avg_factor is not None:
        return  # both raise: covered below
    loss = torch.rand(6, 5, generator=gen, dtype=torch.float64)
    weight = torch.rand(6, 5, generator=gen, dtype=torch.float64) if weighted else None
    torch.testing.assert_close(weight_reduce_loss(loss, weight, reduction, avg_factor),
                               mmdet_weight_reduce_loss(loss, weight, reduction, avg_factor))


def test_mean_with_avg_factor_is_sum_over_avg_factor_plus_float32_eps():
    loss = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    eps = torch.finfo(torch.float32).eps
    assert float(weight_reduce_loss(loss, avg_factor=2.0)) == pytest.approx(6.0 / (2.0 + eps), rel=1e-15)
    assert float(weight_reduce_loss(loss, avg_factor=0)) == pytest.approx(6.0 / eps, rel=1e-12)
    # avg_factor=0, as mmdet: an all-zero loss (an image without objects) stays 0, any other explodes
    assert float(weight_reduce_loss(torch.zeros(3), avg_factor=0)) == 0.0
    torch.testing.assert_close(weight_reduce_loss(loss, avg_factor=0), mmdet_weight_reduce_loss(loss, avg_factor=0))


def test_sum_with_avg_factor_and_unknown_reduction_raise():
    with pytest.raises(ValueError, match=r"MyLoss: `avg_factor` can not be used with reduction='sum'"):
        weight_reduce_loss(torch.ones(3), reduction='sum', avg_factor=2.0, name='MyLoss')
    with pytest.raises(ValueError, match=r"MyLoss: `reduction` expected one of 'none', 'mean', 'sum', got 'avg'"):
        weight_reduce_loss(torch.ones(3), reduction='avg', name='MyLoss')


def test_empty_mean_is_a_connected_zero():
    x = torch.zeros(0, 4, requires_grad=True)
    out = weight_reduce_loss(x * 2, reduction='mean')
    assert out.shape == () and float(out) == 0.0  # torch's mean of nothing would be nan
    out.backward()
    assert x.grad.shape == (0, 4)


def test_weight_shapes():
    loss = torch.ones(4, 3)
    assert adapt_weight('L', torch.ones(4), loss).shape == (4, 1)  # per sample
    assert adapt_weight('L', torch.ones(1, 3), loss).shape == (1, 3)  # broadcasts
    with pytest.raises(ValueError, match=r'L: `weight` expected shape \(4, 3\).*got \(2,\)'):
        adapt_weight('L', torch.ones(2), loss)
    with pytest.raises(ValueError, match='got \\(4, 3, 2\\)'):
        adapt_weight('L', torch.ones(4, 3, 2), loss)  # would grow the loss
    with pytest.raises(TypeError, match='L: `weight` expected a torch.Tensor, got list'):
        adapt_weight('L', [1.0] * 4, loss)
    # a per-sample weight multiplies each row
    torch.testing.assert_close(weight_reduce_loss(loss, torch.tensor([0.0, 1.0, 2.0, 3.0]), 'sum'), torch.tensor(18.0))


def test_per_box_weight_averages_coordinates():
    boxes = torch.zeros(2, 4)
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(per_box_weight(w, boxes), torch.tensor([1.0, 0.5]))
    assert per_box_weight(torch.ones(2), boxes).shape == (2,)
    assert per_box_weight(None, boxes) is None
