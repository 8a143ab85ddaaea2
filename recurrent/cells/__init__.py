"""Cells: one time step each, with explicit state in and out. See base.py for the protocol."""
from recurrent.cells.base import Cell, ProjectedCell
from recurrent.cells.deep_transition import DeepOutputCell, DeepOutputState, DeepTransitionCell
from recurrent.cells.elman import ElmanCell
from recurrent.cells.gru import GRUCell
from recurrent.cells.layernorm_gru import LayerNormGRUCell
from recurrent.cells.layernorm_lstm import LayerNormLSTMCell
from recurrent.cells.lstm import LSTMCell
from recurrent.cells.mingru import MinGRUCell, MinLSTMCell
from recurrent.cells.tree import BinaryTreeLSTMCell, TreeRNNCell
from recurrent.cells.zoneout import ZoneoutCell

__all__ = ["Cell", "ProjectedCell", "ElmanCell", "LSTMCell", "GRUCell", "LayerNormLSTMCell", "BinaryTreeLSTMCell",
           "TreeRNNCell", "LayerNormGRUCell", "MinGRUCell", "MinLSTMCell", "ZoneoutCell", "DeepTransitionCell",
           "DeepOutputCell", "DeepOutputState"]
