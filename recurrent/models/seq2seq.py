"""Encoder-decoder translation with attention (Sutskever et al. 2014; Bahdanau et al. 2015; Luong et al. 2015).

Key: B batch, S source length, T target length, E embedding size, H hidden size, M = H memory size,
A attentional-vector size (E with tied weights, else H), V vocabulary, L layers.

    source ──embed──▶ bidirectional RNN (H/2 per direction) ──▶ memory (B, S, H)
                                   │ final fwd/bwd states, concatenated (B, H)
                                   ▼
                        bridge: s_0 = tanh(W_b [h→; h←] + b_b), one per decoder layer and state field
    decoder step t (the cells are stepped directly, one token at a time):
        x_t  = [embed(y_{t-1}); h̃_{t-1}]              input feeding (Luong et al. 2015, §3.3)
        s_t  = cells(x_t, s_{t-1})                     stacked cells: any registered cell (lstm, gru, ...)
        c_t, a_t = attention(s_t, memory)               bahdanau | dot | general (see attention.py)
        h̃_t  = tanh(W_c [s_t; c_t])                    the attentional vector (no c_t without attention)
        p(y_t | y_<t, x) = softmax(W_out h̃_t)         W_out may be the target embedding (weight tying)

Every attention type sits in this one decoder, Luong's: the score is what differs, so Bahdanau's additive score
uses the current state s_t as its query (as OpenNMT's "mlp" attention) rather than s_{t-1}.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.cells import registry
from recurrent.data.parallel import PAD_ID
from recurrent.models.attention import ATTENTIONS, make_attention
from recurrent.validation import at_least, fraction


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = field(default=0, metadata=at_least(0))  # taken from the source vocabulary
    tgt_vocab_size: int = field(default=0, metadata=at_least(0))  # taken from the target vocabulary
    cell: str = field(default="gru", metadata={"help": "recurrent cell (recurrent.cells.registry)",
                                               "choices": registry.NAMES})
    embedding_size: int = 256  # E, both sides
    hidden_size: int = 512  # H: the decoder's size; the encoder has H/2 per direction, so memory is H wide
    encoder_layers: int = field(default=1, metadata=at_least(1))
    decoder_layers: int = field(default=1, metadata=at_least(1))
    attention: str = field(default="bahdanau", metadata={"help": f"one of {ATTENTIONS}", "choices": ATTENTIONS})
    input_feeding: bool = True  # feed h̃_{t-1} into the next step (needs attention; ignored without it)
    tie_weights: bool = False  # target embedding = output matrix (Press & Wolf 2017); h̃ then has size E
    dropout: float = field(default=0.2, metadata=fraction())  # on embeddings, between layers and on h̃

    def validate(self) -> None:
        """ValueError naming the first bad value."""
        registry.spec(self.cell)  # ValueError naming the registered cells
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        for name in ("src_vocab_size", "tgt_vocab_size", "embedding_size", "encoder_layers", "decoder_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.hidden_size < 2 or self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even (H/2 per encoder direction), got {self.hidden_size!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


class Encoded(NamedTuple):
    memory: Tensor  # (B, S, H) encoder outputs, zero past each length
    keys: Tensor  # the attention's precomputed source half, (B, S, *)
    mask: Tensor  # (B, S) True at valid source positions
    final: NamedTuple  # the top layer's [fwd; bwd] final state, every field (B, H)


class DecoderState(NamedTuple):
    cells: tuple  # one cell state per decoder layer, every field (B, H)
    feed: Tensor  # (B, A) the previous attentional vector h̃_{t-1} (zeros at the start)


class StepOutput(NamedTuple):
    logits: Tensor  # (B, V)
    state: DecoderState
    attention: Tensor | None  # (B, S) weights over the source; None for a model without attention


class Seq2SeqOutput(NamedTuple):
    logits: Tensor  # (B, T, V)
    loss: Tensor | None  # mean cross-entropy in nats per target token (padding excluded), when targets are given
    attention: Tensor | None  # (B, T, S); None for a model without attention


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        config.validate()
        self.config = config
        E, H, L, cfg = config.embedding_size, config.hidden_size, config.decoder_layers, config
        A = E if cfg.tie_weights else H
        self.uses_attention = cfg.attention != "none"
        self.input_feeding = cfg.input_feeding and self.uses_attention
        # encoder
        self.src_embedding = nn.Embedding(cfg.src_vocab_size, E, padding_idx=PAD_ID)
        self.encoder = registry.layer(cfg.cell, E, H // 2, num_layers=cfg.encoder_layers, bidirectional=True,
                                      dropout=cfg.dropout)
        # bridge: one linear map per state field (h, and c for an LSTM) to every decoder layer's initial state
        state_fields = self.encoder.state_type._fields
        self.bridge = nn.ModuleDict({f: nn.Linear(H, L * H) for f in state_fields})
        # decoder
        self.tgt_embedding = nn.Embedding(cfg.tgt_vocab_size, E, padding_idx=PAD_ID)
        first_input = E + (A if self.input_feeding else 0)
        cell = registry.cell(cfg.cell)
        self.decoder_cells = nn.ModuleList(cell(first_input if l == 0 else H, H) for l in range(L))
        self.attention = make_attention(cfg.attention, H, H) if self.uses_attention else None
        self.combine = nn.Linear(2 * H if self.uses_attention else H, A)  # W_c
        self.out = nn.Linear(A, cfg.tgt_vocab_size)  # W_out
        if cfg.tie_weights:
            self.out.weight = self.tgt_embedding.weight  # (V, E), one parameter

    # --- encoder and bridge ---------------------------------------------------------------------------------
    def encode(self, src: Tensor, lengths: Tensor) -> Encoded:
        """src (B, S) ids, lengths (B,) -> the memory the decoder attends to, and the final states."""
        x = F.dropout(self.src_embedding(src), self.config.dropout, self.training)  # (B, S, E)
        memory, state = self.encoder(x, lengths=lengths)  # (B, S, H); fields (L, 2, B, H/2)
        final = type(state)(*(torch.cat([f[-1, 0], f[-1, 1]], dim=-1) for f in state))  # (B, H) [fwd; bwd]
        mask = torch.arange(src.shape[1], device=src.device) < lengths.to(src.device).unsqueeze(1)  # (B, S)
        keys = self.attention.keys(memory) if self.uses_attention else memory
        return Encoded(memory, keys, mask, final)

    def initial_state(self, encoded: Encoded) -> DecoderState:
        """The bridge: s_0 of decoder layer l = tanh(W_b [h→; h←] + b_b)[l], for every state field."""
        B, H, L = encoded.memory.shape[0], self.config.hidden_size, self.config.decoder_layers
        fields = {f: torch.tanh(self.bridge[f](getattr(encoded.final, f))).view(B, L, H)
                  for f in encoded.final._fields}  # each (B, L, H)
        state_type = self.decoder_cells[0].state_type
        cells = tuple(state_type(*(fields[f][:, l] for f in state_type._fields)) for l in range(L))
        feed = encoded.memory.new_zeros(B, self.combine.out_features)  # (B, A)
        return DecoderState(cells, feed)

    # --- one decoder step --------------------------------------------------------------------------------------
    def decode_step(self, token: Tensor, state: DecoderState, encoded: Encoded) -> StepOutput:
        """token (B,) the previous target token -> logits (B, V) for the next, the new state, attention (B, S)."""
        state, weights = self._advance(token, state, encoded)
        return StepOutput(self._logits(state.feed), state, weights)

    def _advance(self, token: Tensor, state: DecoderState, encoded: Encoded) -> tuple[DecoderState, Tensor | None]:
        """The step up to h̃_t (in the new state's `feed`), and the attention weights (B, S) or None."""
        p, training = self.config.dropout, self.training
        x = F.dropout(self.tgt_embedding(token), p, training)  # (B, E)
        if self.input_feeding:
            x = torch.cat([x, state.feed], dim=-1)  # (B, E + A)
        cells = []
        for l, cell in enumerate(self.decoder_cells):
            s = cell(x, state.cells[l])  # one step of the cell itself: no unroll, no re-run of the prefix
            cells.append(s)
            x = F.dropout(s.h, p, training) if l < len(self.decoder_cells) - 1 else s.h  # (B, H)
        weights = None
        if self.uses_attention:
            context, weights = self.attention(x, encoded.keys, encoded.memory, encoded.mask)  # (B, H), (B, S)
            x = torch.cat([x, context], dim=-1)  # (B, 2H)
        attentional = torch.tanh(self.combine(x))  # h̃_t (B, A)
        return DecoderState(tuple(cells), attentional), weights

    def _logits(self, attentional: Tensor) -> Tensor:
        """h̃ (..., A) -> logits (..., V)."""
        return self.out(F.dropout(attentional, self.config.dropout, self.training))

    # --- training: the whole target sentence -----------------------------------------------------------------
    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor | None = None,
                teacher_forcing: float = 1.0) -> Seq2SeqOutput:
        """src (B, S), tgt_in (B, T) = <s> y_1..y_n, tgt_out (B, T) = y_1..y_n </s> (PAD-padded).

        teacher_forcing: the probability that step t reads the true y_{t-1} rather than the model's own previous
        argmax (scheduled sampling, Bengio et al. 2015); drawn per sentence and step. 1.0: always the truth, and
        then the output layer runs once over all steps (one (B·T, A) x (A, V) product) after the loop.
        """
        encoded = self.encode(src, src_lengths)
        state = self.initial_state(encoded)
        sampled = teacher_forcing < 1.0
        token, attentionals, logits, weights = tgt_in[:, 0], [], [], []
        for t in range(tgt_in.shape[1]):
            if t > 0:
                token = tgt_in[:, t]
                if sampled:
                    own = torch.rand(token.shape, device=token.device) >= teacher_forcing
                    token = torch.where(own, logits[-1].argmax(-1), token)
            state, w = self._advance(token, state, encoded)
            attentionals.append(state.feed)
            weights.append(w)
            if sampled:  # the next step may read this step's argmax
                logits.append(self._logits(state.feed))
        logits = torch.stack(logits, dim=1) if sampled else self._logits(torch.stack(attentionals, dim=1))  # (B, T, V)
        attention = torch.stack(weights, dim=1) if self.uses_attention else None  # (B, T, S)
        loss = None
        if tgt_out is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID)
        return Seq2SeqOutput(logits, loss, attention)


def select(tree, index: Tensor):
    """Rows `index` (along dim 0) of every tensor in a nest of NamedTuples / tuples: reorders or repeats a batch
    (beam search keeps each hypothesis's own state this way)."""
    if tree is None:
        return None
    if isinstance(tree, Tensor):
        return tree.index_select(0, index)
    parts = [select(t, index) for t in tree]
    return type(tree)(*parts) if hasattr(tree, "_fields") else type(tree)(parts)
