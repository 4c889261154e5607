"""torch.compile of the fused eval model: Inductor's code returns eager's detections, the graph
breaks only where an op's output size depends on the data, and new image sizes reuse the graphs.

The small r18_fpn of the export tests (_small_detector.py), fused, with the same tolerances."""

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from _small_detector import assert_same_detections, blobs, small_r18_fpn

from maskzoo.modeling.fuse import fuse_for_inference

# The model's only data-dependent output sizes: the RPN's proposals and the box head's detections.
DATA_DEPENDENT_OPS = ("roiops.rpn_proposals", "roiops.detections_from_box_head")


@pytest.fixture(scope="module")
def model():
    return fuse_for_inference(small_r18_fpn())


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _assert_same_detections(got: dict, expected: dict) -> None:
    assert_same_detections([got[k] for k in ("boxes", "labels", "scores", "masks")], expected)


@pytest.mark.slow
def test_inductor_with_frozen_weights_returns_eager_detections_and_zero_detections(model):
    # freezing: the weights become constants that Inductor prepacks and fuses with what follows;
    # the batch is padded out of place for it (Transform.batch).
    noise = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(2))
    images = [blobs(torch.Generator().manual_seed(1), 96, 128), noise]
    compiled = torch.compile(model, dynamic=False)
    with torch.no_grad(), torch._inductor.config.patch(freezing=True):
        for image, finds_objects in zip(images, (True, False)):
            expected = model([image])[0]
            assert (len(expected["boxes"]) > 0) == finds_objects
            _assert_same_detections(compiled([image])[0], expected)


def test_graph_breaks_only_at_the_ops_with_data_dependent_output_sizes(model):
    image = [blobs(torch.Generator().manual_seed(1), 96, 128)]
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(image)
    assert explained.graph_break_count > 0
    for reason in explained.break_reasons:
        assert any(op in str(reason.reason) for op in DATA_DEPENDENT_OPS), reason.reason
    torch._dynamo.reset()
    with torch.no_grad(), torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        explained = torch._dynamo.explain(model)(image)
    assert explained.graph_count == 1 and explained.graph_break_count == 0


@pytest.mark.slow
def test_new_image_sizes_reuse_the_dynamic_graphs(model):
    # No guard on a size's value: not the anchor cache's keys, not the FPN pooler's scales (2 **
    # round(log2(map / image)), compared in integers), so every size after the second (which
    # settles what duck sizing and the convolutions' batch checks specialised) traces nothing.
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=counting_backend, dynamic=True)
    sizes = [(96, 128), (150, 90), (120, 100), (200, 140)]
    counts = []
    with torch.no_grad():
        for seed, (h, w) in enumerate(sizes):
            image = blobs(torch.Generator().manual_seed(seed + 1), h, w)
            expected = model([image])[0]
            got = compiled([image])[0]
            assert len(expected["boxes"]) >= 2  # past the 0/1 specialisation of the RoI counts
            assert torch.equal(got["boxes"], expected["boxes"])
            counts.append(len(graphs))
    assert counts[2] == counts[3] == counts[1], counts
