"""RotatedBoxCoder: the coding formulas by hand, the round trip, angle wrapping, the clamp, shapes and
bad input."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import roiops

F64 = torch.float64


def test_codes_by_hand():
    coder = roiops.RotatedBoxCoder(weights=(10.0, 5.0, 2.0, 1.0, 3.0))
    proposal = torch.tensor([[10.0, 20.0, 4.0, 8.0, 170.0]], dtype=F64)
    target = torch.tensor([[12.0, 16.0, 8.0, 2.0, -170.0]], dtype=F64)
    codes = coder.encode_single(target, proposal)
    # -170 - 170 = -340 degrees wraps to +20 degrees.
    expected = [10 * 2 / 4, 5 * -4 / 8, 2 * math.log(2), 1 * math.log(0.25), 3 * math.radians(20)]
    torch.testing.assert_close(codes, torch.tensor([expected], dtype=F64), atol=1e-12, rtol=0)


def test_angle_delta_wraps_to_half_open_interval():
    coder = roiops.RotatedBoxCoder()
    p = torch.tensor([[0.0, 0, 1, 1, 0]] * 3, dtype=F64)
    g = p.clone()
    g[:, 4] = torch.tensor([180.0, -180.0, 540.0])
    # 180 degrees wraps to -180: [-180, 180) as Detectron2.
    torch.testing.assert_close(coder.encode_single(g, p)[:, 4], torch.full((3,), -math.pi, dtype=F64))


sides = st.floats(1, 50)  # size ratios below the clamp (62.5x)
boxes = st.tuples(st.floats(-1000, 1000), st.floats(-1000, 1000), sides, sides, st.floats(-720, 720))


@given(st.lists(st.tuples(boxes, boxes), min_size=1, max_size=20))
def test_decode_inverts_encode(pairs):
    coder = roiops.RotatedBoxCoder(weights=(10.0, 10.0, 5.0, 5.0, 1.0))
    targets = torch.tensor([t for t, _ in pairs], dtype=F64)
    proposals = torch.tensor([p for _, p in pairs], dtype=F64)
    decoded = coder.decode_single(coder.encode_single(targets, proposals), proposals)
    torch.testing.assert_close(decoded[:, :4], targets[:, :4], atol=1e-8, rtol=1e-10)
    # The angle comes back wrapped to [-180, 180).
    wrapped = torch.remainder(targets[:, 4] + 180, 360) - 180
    diff = torch.remainder(decoded[:, 4] - wrapped + 180, 360) - 180
    assert diff.abs().max() < 1e-8
    assert ((decoded[:, 4] >= -180) & (decoded[:, 4] < 180)).all()


def test_decode_clamps_growth_and_handles_classes(device):
    coder = roiops.RotatedBoxCoder()
    boxes = torch.tensor([[5.0, 5.0, 2.0, 4.0, 0.0]], device=device)
    codes = torch.tensor([[0.0, 0.0, 100.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, math.pi / 2]], device=device)
    out = coder.decode(codes, [boxes])
    assert out.shape == (1, 2, 5)
    torch.testing.assert_close(out[0, 0, 2], torch.tensor(2.0 * 1000 / 16, device=device))  # clamped
    torch.testing.assert_close(out[0, 1], torch.tensor([6.0, 5.0, 2.0, 4.0, 90.0], device=device))


def test_gradients_flow_through_decode():
    coder = roiops.RotatedBoxCoder(weights=(10.0, 10.0, 5.0, 5.0, 1.0))
    codes = torch.randn(4, 10, dtype=F64, requires_grad=True)
    boxes = torch.tensor([[5.0, 5.0, 2.0, 4.0, 10.0]] * 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, b: coder.decode_single(c, b), (codes, boxes))


def test_lists_and_empty():
    coder = roiops.RotatedBoxCoder()
    a = [torch.tensor([[1.0, 1, 2, 2, 0]]), torch.zeros(0, 5)]
    codes = coder.encode(a, a)
    assert [c.shape for c in codes] == [(1, 5), (0, 5)]
    assert coder.decode(torch.zeros(0, 5), torch.zeros(0, 5)).shape == (0, 1, 5)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: roiops.RotatedBoxCoder(weights=(1.0, 1.0, 1.0, 1.0)), ValueError, "weights"),
        (lambda: roiops.RotatedBoxCoder(weights=(1.0, 1.0, 1.0, 1.0, -1.0)), ValueError, "weights"),
        (
            lambda: roiops.RotatedBoxCoder().encode_single(torch.zeros(2, 4), torch.zeros(2, 4)),
            ValueError,
            "reference_boxes",
        ),
        (
            lambda: roiops.RotatedBoxCoder().encode_single(torch.zeros(2, 5), torch.zeros(3, 5)),
            ValueError,
            "shape",
        ),
        (
            lambda: roiops.RotatedBoxCoder().decode_single(torch.zeros(2, 7), torch.zeros(2, 5)),
            ValueError,
            "rel_codes",
        ),
        (
            lambda: roiops.RotatedBoxCoder().decode_single(torch.zeros(2, 5), torch.zeros(2, 4)),
            ValueError,
            "boxes",
        ),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
