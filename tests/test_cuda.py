"""Evaluation helpers that receive tensors on the model's device: on a GPU they must give what they
give on the CPU (risk-coverage and the abstaining threshold) and draw their figures (matplotlib needs
host arrays). Skipped where no CUDA device is present."""

from __future__ import annotations

import pytest
import torch

from lit_modules.figures import confusion_figure, plt, risk_coverage_figure, tagged_examples_figure
from lit_modules.graph_fusion.edge_weights import edge_weight_figure
from lit_modules.metrics.selective import risk_coverage, threshold_for_precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def _scores(n: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    confidence = torch.rand(n, generator=g).round(decimals=2)  # ties, as softmax maxima have
    correct = torch.rand(n, generator=g) < confidence
    eligible = torch.rand(n, generator=g) > 0.1
    return confidence, correct, eligible


def test_risk_coverage_on_cuda_matches_cpu():
    confidence, correct, eligible = _scores()
    cpu = risk_coverage(confidence, correct, eligible)
    gpu = risk_coverage(confidence.to(CUDA), correct.to(CUDA), eligible.to(CUDA))
    for key in cpu:
        torch.testing.assert_close(gpu[key].cpu(), cpu[key])
    empty = risk_coverage(confidence.to(CUDA), correct.to(CUDA), torch.zeros_like(eligible).to(CUDA))
    assert all(v.numel() == 0 for v in empty.values())


def test_threshold_on_cuda_matches_cpu():
    confidence, correct, eligible = _scores()
    on_cpu = threshold_for_precision(confidence, correct, 0.8, eligible)
    on_gpu = threshold_for_precision(confidence.to(CUDA), correct.to(CUDA), 0.8, eligible.to(CUDA))
    assert on_gpu == on_cpu


def test_figures_accept_cuda_tensors():
    confidence, correct, eligible = _scores()
    curve = risk_coverage(confidence.to(CUDA), correct.to(CUDA), eligible.to(CUDA))
    figures = [
        risk_coverage_figure({"test": curve, "test_tta": curve}, 0.5, 0.6, 0.8),
        confusion_figure(torch.tensor([[3, 1], [0, 2]], device=CUDA), ["a", "b"], "confusion"),
        tagged_examples_figure(
            torch.rand(2, 3, 8, 8, device=CUDA),
            torch.tensor([[1, 0], [0, 1]], device=CUDA),
            torch.tensor([[1, 1], [0, 0]], device=CUDA),
            ["a", "b"],
            {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
            title="examples",
        ),
        edge_weight_figure(
            {
                "weights_0": torch.rand(10, 3, device=CUDA),
                "weights_1": torch.rand(10, 2, device=CUDA),
                "similarity_1": torch.rand(10, 2, device=CUDA),
            },
            [["image", "text", "event"], ["a", "b"]],
            "edge weights",
        ),
    ]
    for fig in figures:
        assert fig.axes
        plt.close(fig)
