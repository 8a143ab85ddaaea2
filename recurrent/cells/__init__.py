"""Cells: one time step each, with explicit state in and out. See base.py for the protocol."""
from recurrent.cells.base import Cell, ProjectedCell
from recurrent.cells.elman import ElmanCell
from recurrent.cells.gru import GRUCell
from recurrent.cells.layernorm_lstm import LayerNormLSTMCell
from recurrent.cells.lstm import LSTMCell
from recurrent.cells.tree import BinaryTreeLSTMCell, TreeRNNCell

__all__ = ["Cell", "ProjectedCell", "ElmanCell", "LSTMCell", "GRUCell", "LayerNormLSTMCell", "BinaryTreeLSTMCell",
           "TreeRNNCell"]
