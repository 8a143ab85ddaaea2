"""The tree classifier: encoding and level batching on hand-built trees, the batched walk against a plain
recursion over each tree, the loss by hand, and overfitting a tiny treebank."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recurrent.data.labelled import Tree, parse_tree
from recurrent.models.classifier import ClassifierConfig
from recurrent.models.tree import NO_LABEL, TreeClassifier, batch_trees, encode_tree

WORDS = {"a": 2, "good": 3, "film": 4, "bad": 5, ".": 6, "not": 7}
TREES = ["(3 (2 a) (4 (3 good) (2 film)))",
         "(1 (1 (2 not) (3 good)) (2 .))",
         "(0 bad)",
         "(4 (2 a) (4 (4 (3 good) (4 (3 good) (2 film))) (2 .)))"]


def encode(text: str):
    return encode_tree(parse_tree(text), WORDS.__getitem__, int)


def test_encode_tree_post_order_by_hand():
    t = encode("(3 (2 a) (4 (3 good) (2 film)))")
    assert t.words == [2, 3, 4, -1, -1]
    assert t.left == [-1, -1, -1, 1, 0] and t.right == [-1, -1, -1, 2, 3]
    assert t.labels == [2, 3, 2, 4, 3]


def test_wide_nodes_are_binarised_left_to_right_with_unlabelled_helpers():
    t = encode_tree(parse_tree("(3 (2 8 1/2) (4 film))"), lambda w: len(w), int)
    # leaves "8", "1/2" (unlabelled), their join (label 2), "film" (4), the root (3)
    assert t.words == [1, 3, -1, 4, -1] and t.labels == [NO_LABEL, NO_LABEL, 2, 4, 3]
    assert (t.left, t.right) == ([-1, -1, 0, -1, 2], [-1, -1, 1, -1, 3])


def test_batch_trees_numbers_nodes_level_by_level():
    b = batch_trees([encode(TREES[0]), encode(TREES[2])])
    assert b.words.tolist() == [2, 3, 4, 5]  # the leaves of tree 0, then tree 1's
    assert [(l.tolist(), r.tolist()) for l, r in b.levels] == [([1], [2]), ([0], [4])]
    assert b.roots.tolist() == [5, 3]  # tree 1 is a single leaf
    assert b.labels.tolist() == [2, 3, 2, 0, 4, 3]


def reference_node_logits(model: TreeClassifier, tree: Tree) -> list[torch.Tensor]:
    """A plain recursion over one tree, node by node, in post-order."""
    out = []

    def visit(node):
        if isinstance(node.children[0], str):
            state = model.cell.leaf(model.embedding(torch.tensor([WORDS[node.children[0]]])))
        else:
            left, right = visit(node.children[0]), visit(node.children[1])
            state = model.cell.compose(left, right)
        out.append(model.head(state.h)[0])
        return state

    visit(tree)
    return out


@pytest.mark.parametrize("cell", ["lstm", "elman"])
def test_batched_walk_equals_recursion_tree_by_tree(cell):
    torch.manual_seed(0)
    model = TreeClassifier(ClassifierConfig(vocab_size=8, num_classes=5, structure="tree", cell=cell,
                                            embedding_size=4, hidden_size=3)).double().eval()
    encoded = [encode(t) for t in TREES]
    batch = batch_trees(encoded)
    logits = model.node_logits(batch)  # (N, C), level order
    keys = sorted((h, b, i) for b, t in enumerate(encoded) for i, h in enumerate(heights(t)))
    for n, (_, b, i) in enumerate(keys):
        torch.testing.assert_close(logits[n], reference_node_logits(model, parse_tree(TREES[b]))[i])
    out = model(batch)
    torch.testing.assert_close(out.logits, logits[batch.roots])
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, batch.labels))  # every node is labelled


def heights(t) -> list[int]:
    h = []
    for i in range(len(t.words)):
        h.append(0 if t.left[i] < 0 else 1 + max(h[t.left[i]], h[t.right[i]]))
    return h


def test_loss_ignores_unlabelled_nodes():
    torch.manual_seed(0)
    model = TreeClassifier(ClassifierConfig(vocab_size=8, num_classes=5, structure="tree", embedding_size=4,
                                            hidden_size=3)).eval()
    t = encode(TREES[0])
    roots_only = t._replace(labels=[NO_LABEL] * 4 + [3])
    out = model(batch_trees([roots_only]))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([3])))
    assert model(batch_trees([t._replace(labels=[NO_LABEL] * 5)])).loss is None


def test_tree_lstm_overfits_a_tiny_treebank():
    torch.manual_seed(0)
    model = TreeClassifier(ClassifierConfig(vocab_size=8, num_classes=5, structure="tree", embedding_size=8,
                                            hidden_size=8, dropout=0.0))
    batch = batch_trees([encode(t) for t in TREES])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = model(batch).loss
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert model(batch).logits.argmax(-1).tolist() == [3, 1, 0, 4]


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match="a tree cell must be one of \\['elman', 'lstm', 'rnn'\\], got 'gru'"):
        TreeClassifier(ClassifierConfig(vocab_size=8, num_classes=5, structure="tree", cell="gru"))
