"""Recursive (tree) networks: a sentence's meaning composed bottom-up over its binary parse tree, with a
sentiment label read at every node (Socher et al. 2013; Tai et al. 2015).

Key: N nodes in the batch, B trees, E embedding size, H hidden size, C classes.

    leaves   state = cell.leaf(dropout(embedding(word)))              every leaf of every tree at once
    level k  state = cell.compose(state[left], state[right])          every node of height k at once
    head     logits = W dropout(h) + b                                 every node: (N, C)

A node's height (level) is 0 for a leaf and 1 + the larger of its children's otherwise, so both children of a
level-k node lie on lower levels. `batch_trees` numbers the nodes of a batch level by level; the walk is then one
composition per level, whatever the trees' shapes. The loss is the mean cross-entropy over every labelled node
(SST's phrase labels); the prediction for a tree is its root's.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.cells import registry
from recurrent.data.labelled import Tree
from recurrent.models.classifier import ClassifierConfig, ClassifierOutput, check_sizes

NO_LABEL = -1  # a node the loss ignores


class EncodedTree(NamedTuple):
    """One binary tree, nodes in post-order (children before their parent; the root is last)."""

    words: list[int]  # word id at a leaf, -1 at an inner node
    left: list[int]  # the left child's node index; -1 at a leaf
    right: list[int]
    labels: list[int]  # class id per node; NO_LABEL where the node has none


def encode_tree(tree: Tree, word_id: Callable[[str], int], label_id: Callable[[str], int]) -> EncodedTree:
    """A parsed tree -> EncodedTree. A preterminal `(label word)` is a leaf carrying its label. A node of more
    than two children, such as SST's `(2 8 1/2)`, is binarised left to right: the nodes this adds, and words
    standing directly in it, carry no label. A unary node over a subtree gives that subtree its label.
    label_id returns NO_LABEL to drop a label."""
    out = EncodedTree([], [], [], [])

    def add(word: int, left: int, right: int, label: int) -> int:
        for field, value in zip(out, (word, left, right, label)):
            field.append(value)
        return len(out.words) - 1

    def visit(node: Tree) -> int:
        if len(node.children) == 1 and isinstance(node.children[0], str):
            return add(word_id(node.children[0]), -1, -1, label_id(node.label))
        kids = [add(word_id(c), -1, -1, NO_LABEL) if isinstance(c, str) else visit(c) for c in node.children]
        top = kids[0]
        for kid in kids[1:]:
            top = add(-1, top, kid, NO_LABEL)
        out.labels[top] = label_id(node.label)
        return top

    visit(tree)
    return out


class TreeBatch(NamedTuple):
    """A batch of trees, nodes numbered level by level (leaves first)."""

    words: Tensor  # (N0,) word ids of the leaves, nodes 0 .. N0-1
    levels: list[tuple[Tensor, Tensor]]  # per level k >= 1: (left, right) node numbers (n_k,), all < this level's
    labels: Tensor  # (N,) class per node; NO_LABEL where none
    roots: Tensor  # (B,) each tree's root


def batch_trees(trees: list[EncodedTree]) -> TreeBatch:
    """Number the nodes of all trees by (height, tree, post-order position) and map the children to it."""
    keys = []  # (height, tree, node) for every node
    for b, t in enumerate(trees):
        height = []
        for i in range(len(t.words)):
            height.append(0 if t.left[i] < 0 else 1 + max(height[t.left[i]], height[t.right[i]]))
            keys.append((height[i], b, i))
    keys.sort()
    number = {(b, i): n for n, (_, b, i) in enumerate(keys)}
    leaves = sum(1 for h, _, _ in keys if h == 0)
    words = torch.tensor([trees[b].words[i] for _, b, i in keys[:leaves]], dtype=torch.long)
    levels, start = [], leaves
    while start < len(keys):
        end = start
        while end < len(keys) and keys[end][0] == keys[start][0]:
            end += 1
        level = keys[start:end]
        levels.append((torch.tensor([number[b, trees[b].left[i]] for _, b, i in level]),
                       torch.tensor([number[b, trees[b].right[i]] for _, b, i in level])))
        start = end
    labels = torch.tensor([trees[b].labels[i] for _, b, i in keys], dtype=torch.long)
    roots = torch.tensor([number[b, len(t.words) - 1] for b, t in enumerate(trees)])
    return TreeBatch(words, levels, labels, roots)


class TreeClassifier(nn.Module):
    """Embedding at the leaves -> a tree cell composed bottom-up -> a linear head on every node.

    Reads from ClassifierConfig: vocab_size, num_classes, cell ('lstm': Tree-LSTM, 'rnn' or 'elman': recursive NN),
    embedding_size, hidden_size, dropout (on the embeddings and on each node's h before the head)."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        check_sizes(config)
        tree_cell = registry.tree_cell(config.cell)  # ValueError naming the tree cells
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=0)
        self.cell = tree_cell(config.embedding_size, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.num_classes)

    def node_logits(self, trees: TreeBatch) -> Tensor:
        """(N, C): every node's class scores, in the batch's level order."""
        p = self.config.dropout
        x = F.dropout(self.embedding(trees.words), p, self.training)  # (N0, E)
        state = self.cell.leaf(x)  # fields (N0, H)
        for left, right in trees.levels:
            new = self.cell.compose(type(state)(*(s[left] for s in state)),
                                    type(state)(*(s[right] for s in state)))  # fields (n_k, H)
            state = type(state)(*(torch.cat([s, n]) for s, n in zip(state, new)))  # (nodes so far, H)
        return self.head(F.dropout(state.h, p, self.training))  # (N, C)

    def forward(self, trees: TreeBatch) -> ClassifierOutput:
        """-> root logits (B, C), and the mean cross-entropy over every labelled node (None if none is)."""
        logits = self.node_logits(trees)
        labelled = trees.labels != NO_LABEL
        loss = F.cross_entropy(logits[labelled], trees.labels[labelled]) if labelled.any() else None
        return ClassifierOutput(logits[trees.roots], loss)
