"""Fusion on hand-made vectors: the seed's formulas (eqs. 1-7), identical modalities, N = 2, 3, 4,
gradients to every encoder; the baselines' shapes."""

import pytest
import torch
import torch.nn.functional as F

from lit_modules.graph_fusion import build_fusion, graph_levels
from lit_modules.graph_fusion.fusion import GraphFusion, pair_similarity, pair_weights


def vectors(n, d=8, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, d, generator=g, requires_grad=True) for _ in range(n)]


def test_node_counts_follow_the_seed():
    assert [len(level) for level in graph_levels(2)] == [2, 1]
    assert [len(level) for level in graph_levels(3)] == [3, 3, 6]  # Fig. 1
    sets = sorted(sorted(n.modalities) for n in graph_levels(3)[1])
    assert sets == [[0, 1], [0, 2], [1, 2]]
    assert [len(level) for level in graph_levels(4)] == [4, 6, 24]
    assert all(len(n.modalities) == 3 for n in graph_levels(4)[2])


@pytest.mark.parametrize("n, levels", [(2, 2), (3, 3), (4, 3)])
@pytest.mark.parametrize("kind", ["hierarchical_graph", "graph"])
def test_shapes_and_gradients_reach_every_modality(n, levels, kind):
    fusion = build_fusion(kind, n, 8)
    vs = vectors(n)
    out = fusion(vs)
    assert out.shape == (3, 8 * levels) and fusion.out_dim == 8 * levels
    out.pow(2).sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in vs)


@pytest.mark.parametrize("kind, width", [("concat", 24), ("tensor", 9**3)])
def test_baseline_shapes(kind, width):
    fusion = build_fusion(kind, 3, 8)
    vs = vectors(3)
    out = fusion(vs)
    assert out.shape == (3, width) and fusion.out_dim == width
    out.sum().backward()
    assert all(v.grad.abs().sum() > 0 for v in vs)


def test_weights_follow_the_formulas():
    torch.manual_seed(0)
    fusion = GraphFusion(3, 8, block_activation="softmax")
    vs = vectors(3)
    out, info = fusion(vs, return_info=True)
    stacked = torch.stack(vs, 1)
    w = fusion.scorer(stacked)
    torch.testing.assert_close(info["weights"][0], w)
    torch.testing.assert_close(w.sum(-1), torch.ones(3))  # softmax over modalities
    # eq. (2)
    torch.testing.assert_close(info["levels"][0], (w.unsqueeze(-1) * stacked).sum(1) / 3)
    # eqs. (3)-(6), bimodal level, pairs (0,1), (0,2), (1,2)
    pairs = [(0, 1), (0, 2), (1, 2)]
    s = torch.stack([F.cosine_similarity(vs[x].softmax(-1), vs[y].softmax(-1), dim=-1) for x, y in pairs], 1)
    q = torch.stack([(w[:, x] + w[:, y]) / (s[:, k] + 0.5) for k, (x, y) in enumerate(pairs)], 1)
    w_bi = q.softmax(-1)
    torch.testing.assert_close(info["weights"][1], w_bi)
    nodes = torch.stack([fusion.pair_nets[0][0](vs[x], vs[y]) for x, y in pairs], 1)
    torch.testing.assert_close(info["levels"][1], (w_bi.unsqueeze(-1) * nodes).sum(1))
    # trimodal level: its 6 nodes from bimodal pairs and bimodal + missing unimodal, same formulas
    lv = fusion.levels[2]
    vec = {1: stacked, 2: nodes}
    wts = {1: w, 2: w_bi}
    tri_w, tri_v = [], []
    for node in lv:
        (la, ia), (lb, ib) = node.parents
        a, b = vec[la][:, ia], vec[lb][:, ib]
        sim = pair_similarity(a, b)
        tri_w.append((wts[la][:, ia] + wts[lb][:, ib]) / (sim + 0.5))
        tri_v.append(fusion.pair_nets[1][0](a, b))
    w_tri = torch.stack(tri_w, 1).softmax(-1)
    torch.testing.assert_close(info["weights"][2], w_tri)
    torch.testing.assert_close(info["levels"][2], (w_tri.unsqueeze(-1) * torch.stack(tri_v, 1)).sum(1))
    torch.testing.assert_close(out, torch.cat(info["levels"], -1))  # eq. (7)


def test_pair_weight_decreases_with_similarity():
    w = pair_weights(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.2]]))
    assert w[0, 1] > w[0, 0] and torch.isclose(w.sum(), torch.tensor(1.0))


def test_identical_modalities():
    torch.manual_seed(0)
    fusion = GraphFusion(3, 8)
    v = vectors(1)[0]
    out, info = fusion([v, v, v], return_info=True)
    bi = info["similarities"][0]
    torch.testing.assert_close(bi, torch.ones_like(bi))  # S = cos(softmax(v), softmax(v)) = 1
    tri = info["similarities"][1]  # trimodal: bimodal x bimodal nodes are identical too
    both_bimodal = torch.tensor([n.parents[1][0] == 2 for n in fusion.levels[2]])
    torch.testing.assert_close(tri[:, both_bimodal], torch.ones_like(tri[:, both_bimodal]))
    node = fusion.pair_nets[0][0](v, v)
    # every bimodal node is NN(v (+) v): the level's weighted sum is that node whatever the weights
    torch.testing.assert_close(info["levels"][1], node)
    torch.testing.assert_close(info["levels"][0], v * info["weights"][0].sum(-1, keepdim=True) / 3)
    # Mai et al.'s shared scorer gives identical modalities identical weights
    mai = build_fusion("graph", 3, 8)
    _, mai_info = mai([v, v, v], return_info=True)
    w = mai_info["weights"][0]
    torch.testing.assert_close(w, w[:, :1].expand_as(w))


def test_n_equals_two_stops_at_bimodal():
    fusion = GraphFusion(2, 8)
    _, info = fusion(vectors(2), return_info=True)
    assert len(info["levels"]) == 2 and torch.allclose(info["weights"][1], torch.ones(3, 1))


def test_block_without_output_activation_gives_the_leaky_relu_scores():
    """The seed's B: Conv 5x5 -> LeakyReLU -> Conv 1x1 -> LeakyReLU, no normalisation of the weights."""
    torch.manual_seed(0)
    fusion = GraphFusion(3, 8)  # block_activation="none" is the default
    vs = vectors(3, batch=5)
    _, info = fusion(vs, return_info=True)
    block = fusion.scorer
    x = torch.stack(vs, 1).unsqueeze(1)  # [n, 1, N, D]
    by_hand = F.leaky_relu(block.conv1(F.leaky_relu(block.conv5(x), 0.01)), 0.01).squeeze(1).mean(-1)
    torch.testing.assert_close(info["weights"][0], by_hand)
    assert not torch.allclose(by_hand.sum(-1), torch.ones(5))  # not a softmax
    # eq. (5) then takes these raw weights
    pairs = [(0, 1), (0, 2), (1, 2)]
    s = info["similarities"][0]
    q = torch.stack([(by_hand[:, x] + by_hand[:, y]) / (s[:, k] + 0.5) for k, (x, y) in enumerate(pairs)], 1)
    torch.testing.assert_close(info["weights"][1], q.softmax(-1))
    with pytest.raises(ValueError, match="activation"):
        GraphFusion(3, 8, block_activation="tanh")


def test_node_names_follow_the_parents():
    from lit_modules.graph_fusion.fusion import node_names

    names = node_names(graph_levels(3), ["image", "text", "extra"])
    assert names[0] == ["image", "text", "extra"]
    assert sorted(names[1]) == ["image+extra", "image+text", "text+extra"]
    assert len(names[2]) == 6 and "(image+text)x(extra)" in names[2]


def test_edge_weight_spread_matches_numpy():
    import numpy as np

    from lit_modules.graph_fusion.edge_weights import EdgeWeightStats, edge_weight_figure
    from lit_modules.graph_fusion.fusion import node_names

    torch.manual_seed(0)
    fusion = GraphFusion(3, 8)
    stats = EdgeWeightStats(node_names(fusion.levels, ["image", "text", "extra"]))
    batches = [vectors(3, batch=b, seed=b) for b in (4, 7)]
    infos = []
    for vs in batches:
        _, info = fusion(vs, return_info=True)
        stats.update(info)
        infos.append(info)
    out = stats.compute()
    for k in range(3):
        w = np.concatenate([i["weights"][k].detach().numpy() for i in infos])
        for j, name in enumerate(stats.names[k]):
            assert out[f"L{k + 1}/{name}/mean"].item() == pytest.approx(w[:, j].mean(), abs=1e-6)
            assert out[f"L{k + 1}/{name}/sd"].item() == pytest.approx(w[:, j].std(), abs=1e-6)
        if k:
            ratio = (w.max(1) / w.min(1)).mean()
            assert out[f"L{k + 1}/max_over_min"].item() == pytest.approx(ratio, rel=1e-5)
            s = np.concatenate([i["similarities"][k - 1].detach().numpy() for i in infos])
            assert out[f"L{k + 1}/S_sd"].item() == pytest.approx(s.std(), abs=1e-6)
    fig = edge_weight_figure(stats.last_tables, stats.names, "test")
    assert len(fig.axes) == 5  # three levels of weights, two of similarities
