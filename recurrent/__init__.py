"""recurrent: recurrent neural networks on PyTorch, from the Elman RNN to encoder-decoders."""
from recurrent.backends import Backend
from recurrent.cells import (Cell, DeepOutputCell, DeepTransitionCell, ElmanCell, GRUCell, LayerNormGRUCell,
                             LayerNormLSTMCell, LSTMCell, MinGRUCell, MinLSTMCell, ProjectedCell, ZoneoutCell)
from recurrent.cells.registry import register_cell
from recurrent.engine import unroll
from recurrent.layers import GRU, LSTM, RNN, Recurrent
from recurrent.state import LSTMState, RNNState, detach, from_torch_state, to_torch_state

__version__ = "0.1.0"

__all__ = [
    "Cell", "ProjectedCell", "ElmanCell", "LSTMCell", "GRUCell", "LayerNormLSTMCell", "LayerNormGRUCell",
    "MinGRUCell", "MinLSTMCell", "DeepTransitionCell", "DeepOutputCell", "ZoneoutCell",
    "Recurrent", "RNN", "LSTM", "GRU", "Backend", "unroll", "register_cell",
    "RNNState", "LSTMState", "detach", "to_torch_state", "from_torch_state",
]
