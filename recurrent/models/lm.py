"""A recurrent language model: embedding -> stacked RNN -> decoder.

Zaremba et al. 2014 ("Recurrent neural network regularization") with the AWD-LSTM
regularisers of Merity et al. 2017 as options. Key: B batch, T time, V vocab,
E embedding size, H hidden size, L layers, C condition size.

Optionally conditioned, one-to-many from a vector as in image captioning (Vinyals et al. 2015, "Show and tell"):
a label (num_conditions > 0, embedded in E) or a feature vector (condition_size > 0) is mapped by a learned
linear map to every layer's initial state, and with condition_every_step it is also fed at every step beside
the token's embedding (Mao et al. 2015's m-RNN feeds the image at every step). Without a condition the model,
its parameters and its behaviour are exactly the unconditioned ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent import backends, kernels
from recurrent.backends import BACKENDS
from recurrent.cells import ProjectedCell, registry
from recurrent.regularizers import embedding_dropout, locked_dropout
from recurrent.sampling import Sampler
from recurrent.validation import at_least, fraction


@dataclass
class LMConfig:
    vocab_size: int = field(default=0, metadata=at_least(0))  # V: taken from the data's vocabulary
    cell: str = field(default="lstm", metadata={"help": "recurrent cell (recurrent.cells.registry)",
                                                "choices": registry.NAMES})
    embedding_size: int = field(default=0, metadata=at_least(0))  # E; 0 means E = hidden_size
    hidden_size: int = 512  # H
    num_layers: int = 2  # L
    tie_weights: bool = False  # decoder shares the embedding matrix (Press & Wolf 2017); last layer has size E
    dropout: float = field(default=0.0, metadata=fraction())  # locked dropout on the last layer's output
    dropout_input: float = field(default=0.0, metadata=fraction())  # locked dropout on the embeddings (dropouti)
    dropout_hidden: float = field(default=0.0, metadata=fraction())  # locked dropout between layers (dropouth)
    dropout_embedding: float = field(default=0.0, metadata=fraction())  # drop whole words (dropoute)
    weight_drop: float = field(default=0.0, metadata=fraction())  # DropConnect on every W_hh (wdrop)
    zoneout: float = field(default=0.0, metadata=fraction())  # each state unit keeps its previous value with this
    #     probability in training (Krueger et al. 2017; evaluation uses the expectation)
    init_range: float = field(default=0.0, metadata=at_least(0))  # > 0: every parameter uniform(-r, r), as
    #     Zaremba et al.; 0: torch's defaults (tied weights: the shared matrix uniform(-0.1, 0.1), as AWD-LSTM)
    backend: str = field(default="auto", metadata={"help": "layer backend", "choices": BACKENDS})
    num_conditions: int = field(default=0, metadata=at_least(0))  # K > 0: conditioned on one of K labels, each
    #                                                               embedded in E (taken from the data)
    condition_size: int = field(default=0, metadata=at_least(0))  # F > 0: conditioned on a vector of F features
    #                                                               (taken from the data)
    condition_every_step: bool = field(default=False, metadata={"help": "feed the condition at every step too, "
                                       "beside the token's embedding (not only into the initial state)"})
    reset_id: int = field(default=-1, metadata=at_least(-1))  # >= 0: every stream's state restarts before this
    #                                      token, a document boundary (taken from --reset-at; -1: never)


PRIME_PASS_MIN = 64  # a prime longer than this runs through the layers in one pass; a shorter one is stepped


class LMOutput(NamedTuple):
    logits: Tensor  # (B, T, V)
    loss: Tensor | None  # mean cross-entropy in nats per token, when targets are given
    state: tuple  # one layer state per layer, e.g. LSTMState(h, c) with fields (1, 1, B, H)


class LanguageModel(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {config.vocab_size}")
        registry.spec(config.cell)  # ValueError naming the registered cells
        if config.num_conditions < 0 or config.condition_size < 0 or (config.num_conditions and config.condition_size):
            raise ValueError(f"give num_conditions (labels) or condition_size (vectors) >= 1, not both; got "
                             f"{config.num_conditions} and {config.condition_size}")
        if config.condition_every_step and not (config.num_conditions or config.condition_size):
            raise ValueError("condition_every_step needs a condition (num_conditions or condition_size)")
        self.config = config
        E = config.embedding_size or config.hidden_size
        L, H = config.num_layers, config.hidden_size
        C = config.condition_size or (E if config.num_conditions else 0)  # the condition vector's size (0: none)
        sizes = [E] + [H] * (L - 1) + [E if config.tie_weights else H]  # layer l maps sizes[l] -> sizes[l+1]
        if config.condition_every_step:
            sizes[0] = E + C  # layer 0 reads [embedding, condition]
        self.embedding = nn.Embedding(config.vocab_size, E)
        self.layers = nn.ModuleList(
            registry.layer(config.cell, sizes[l], sizes[l + 1], weight_drop=config.weight_drop, backend=config.backend,
                           zoneout=config.zoneout)
            for l in range(L)
        )
        self.decoder = nn.Linear(sizes[-1], config.vocab_size)
        if config.init_range > 0:
            for p in self.parameters():
                nn.init.uniform_(p, -config.init_range, config.init_range)
        elif config.tie_weights:  # N(0, 1) embeddings would make the tied decoder's first logits huge
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)  # AWD-LSTM's init of the shared matrix
            nn.init.zeros_(self.decoder.bias)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight  # (V, E), one parameter
        # Built after the rest, so that an unconditioned model draws the same initial weights as before.
        self.condition_embedding = nn.Embedding(config.num_conditions, E) if config.num_conditions else None
        self.condition_to_state = nn.ModuleList(  # condition (B, C) -> every field of layer l's state, (B, S*H_l)
            nn.Linear(C, len(layer.state_type._fields) * sizes[l + 1]) for l, layer in enumerate(self.layers)
        ) if C else None

    @property
    def conditioned(self) -> bool:
        return self.condition_to_state is not None

    def forward(self, tokens: Tensor, state: tuple | None = None, targets: Tensor | None = None,
                condition: Tensor | None = None) -> LMOutput:
        """tokens (B, T) -> logits (B, T, V); `state` carries over from the previous window (truncated BPTT).
        A conditioned model takes `condition`, labels (B,) or features (B, F): it sets the initial state when
        `state` is None, and with condition_every_step is fed beside every token. Targets -100 are not scored.
        With reset_id, each stream's state restarts before each reset_id token (documents do not leak)."""
        cfg, training = self.config, self.training
        x = embedding_dropout(self.embedding.weight, tokens, cfg.dropout_embedding, training)  # (B, T, E)
        x = locked_dropout(x, cfg.dropout_input, training)
        c = self.embed_condition(condition, needed=state is None or cfg.condition_every_step)  # (B, C) or None
        if c is not None and state is None:
            state = self.condition_state(c)
        if c is not None and cfg.condition_every_step:
            x = torch.cat([x, c.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)  # (B, T, E + C)
        reset = tokens == cfg.reset_id if cfg.reset_id >= 0 else None  # (B, T): a new document starts there
        new_state = []
        for l, layer in enumerate(self.layers):
            kwargs = {} if reset is None else {"reset": reset}  # reset= runs the autograd loop: only when asked
            x, s = layer(x, None if state is None else state[l], **kwargs)  # (B, T, sizes[l+1])
            new_state.append(s)
            x = locked_dropout(x, cfg.dropout if l == len(self.layers) - 1 else cfg.dropout_hidden, training)
        logits = self.decoder(x)  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return LMOutput(logits, loss, tuple(new_state))

    def embed_condition(self, condition: Tensor | None, needed: bool = True) -> Tensor | None:
        """labels (B,) -> their embeddings (B, E); features (B, F) as they are; None for an unconditioned model.
        ValueError for a condition the model does not take, or a missing one it `needed`."""
        if not self.conditioned:
            if condition is not None:
                raise ValueError("this language model is not conditioned: give no condition")
            return None
        if condition is None:
            if needed:
                raise ValueError("this language model is conditioned: give a condition (labels (B,) or features "
                                 "(B, F))")
            return None
        if self.condition_embedding is not None:
            return self.condition_embedding(condition.to(self.embedding.weight.device))  # (B, E)
        if condition.dim() != 2 or condition.shape[1] != self.config.condition_size:
            raise ValueError(f"condition must be (B, {self.config.condition_size}) features, got shape "
                             f"{tuple(condition.shape)}")
        return condition.to(self.embedding.weight)  # (B, F)

    def condition_state(self, c: Tensor) -> tuple:
        """The initial state that an embedded condition (B, C) sets: a learned linear map to every field of every
        layer's state, as layer states with fields (1, 1, B, H)."""
        B, states = c.shape[0], []
        for layer, linear in zip(self.layers, self.condition_to_state):
            S = len(layer.state_type._fields)
            fields = linear(c).view(B, S, -1).transpose(0, 1)  # (S, B, H)
            fields = fields.to(self.embedding.weight.dtype).contiguous()  # float32 under autocast, as zeros would be
            states.append(layer.state_type(*(f.view(1, 1, B, -1) for f in fields)))  # each (1, 1, B, H)
        return tuple(states)

    def stepper(self, dtype: torch.dtype | None = None) -> Stepper:
        """The model's Stepper for `dtype` (weights packed for per-token stepping), kept between calls until a
        parameter changes: every in-place update (optimizer steps, load_state_dict) bumps a tensor's version."""
        version = tuple((p.data_ptr(), p._version) for p in self.parameters())
        kept = self.__dict__.setdefault("_steppers", {})  # dtype -> (version, Stepper); not a submodule
        if kept.get(dtype, (None,))[0] != version:
            kept[dtype] = (version, Stepper(self, dtype))
        return kept[dtype][1]

    @torch.inference_mode()
    def generate(self, prime: Tensor, length: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 greedy: bool = False, generator: torch.Generator | None = None, bf16: bool = False,
                 condition: Tensor | None = None) -> Iterator[int]:
        """Yield `length` token ids continuing `prime` (P,), one at a time, as they are sampled.

        Each new token steps the cells directly (`Stepper`); so does a short prime (a long one runs through
        the layers in one pass).
        bf16: keep the per-token weights in bfloat16 (half the bytes read per token: faster on the CPU, not
        bit-equal; on a GPU at batch 1 a token costs kernel launches, not bytes, and the casts make it slower).
        condition: a conditioned model's label (a long scalar) or features (F,): the initial state comes from it.
        A model fed its condition at every step generates with its own forward, one token at a time, instead:
        the Stepper's per-token products (layer 0's table of U e_v + b) have no place for the extra input. That
        path is slower, and keeps its weights in float32 (bf16 does not apply).
        """
        was_training = self.training
        self.eval()
        try:
            sample = Sampler(temperature, top_k, top_p, greedy, generator)
            if self.config.condition_every_step:
                yield from self._generate_by_forward(prime, length, sample, condition)
                return
            stepper = self.stepper(torch.bfloat16 if bf16 else None)
            logits, states = self.read_prime(prime, stepper, condition)
            for _ in range(length):
                token = sample(logits)  # (1,)
                yield int(token)
                logits, states = stepper.step(token, states)
        finally:
            self.train(was_training)

    def _generate_by_forward(self, prime: Tensor, length: int, sample: Sampler, condition: Tensor) -> Iterator[int]:
        """generate() for a model fed its condition at every step: each token is a forward call of length 1."""
        condition = _batch_of_one(condition)
        out = self(prime.to(self.embedding.weight.device).view(1, -1), condition=condition)  # logits (1, P, V)
        for _ in range(length):
            token = sample(out.logits[:, -1])  # (1,)
            yield int(token)
            out = self(token.view(1, 1), out.state, condition=condition)

    @torch.inference_mode()
    def read_prime(self, prime: Tensor, stepper: Stepper, condition: Tensor | None = None) -> tuple[Tensor, list]:
        """Run a prime (P,) from the initial state (a conditioned model's: from `condition`, one label or feature
        vector): the logits (1, V) for the token after it, and the cell states (batch 1) that `stepper.step`
        continues from. A short prime is stepped (cheaper than a layer call), a long one runs through the layers
        in one pass. Call it in eval mode (dropout would apply to the pass)."""
        if prime.numel() == 0:
            raise ValueError("prime must hold at least one token")
        prime = prime.to(self.embedding.weight.device)  # token ids follow the model
        condition = None if condition is None else _batch_of_one(condition)
        if prime.numel() > PRIME_PASS_MIN:
            out = self(prime.view(1, -1), condition=condition)
            return out.logits[:, -1], stepper.from_layer_states(out.state)
        c = self.embed_condition(condition)
        states = stepper.initial_states(1) if c is None else stepper.from_layer_states(self.condition_state(c))
        for token in prime.view(-1, 1):
            logits, states = stepper.step(token, states)
        return logits, states


class Stepper:
    """Runs a LanguageModel one token at a time by calling its cells directly: no unroll, no graph.

    At batch 1 each token is a few matrix-vector products whose weights no cache holds, so the cost is the
    bytes of weight read per token, plus a few microseconds per tensor op. Hence:
    - layer 0's input projection U e_v + b of every vocabulary entry v is computed once (a table lookup);
    - a cell whose step only needs gx + gh (LSTM, Elman: `sums_halves`) gets one product per layer,
      [x_t, s_{t-1}] [U W]ᵀ + b, instead of two;
    - the products use weights packed once for oneDNN (about 1.4x faster than F.linear on CPU), optionally
      in bfloat16 (half the bytes again); states and the pointwise step stay in float32;
    - a stack of plain LSTMCells on the CPU runs the whole step, decoder included, as one native call
      (recurrent/native/step.py: no per-op overhead, products split over two cores) where
      `recurrent.backends.choose_step` says so: `self.plan` says which and why, `self.native` is the packed
      native step (None: the Python path below).
    """

    def __init__(self, model: LanguageModel, dtype: torch.dtype | None = None):
        self.layers = model.layers
        self.cells = [layer.cells[0][0] for layer in model.layers]
        self.embedding, self.decoder, self.dtype = model.embedding, model.decoder, dtype
        self.reset_id = model.config.reset_id  # >= 0: a row reading this token restarts from the initial state
        first = self.cells[0]
        self.table = first.project_input(model.embedding.weight.unsqueeze(0))[0] if first.has_step() else None
        self.plan = backends.choose_step(self.cells, self.table, dtype)
        self.native = backends.NativeStep(self.cells, self.table, model.decoder, dtype) if self.plan.native else None
        self._products = None  # packed on first use: with `native`, only for a batch it does not take

    @property
    def products(self) -> list:
        if self._products is None:
            self._products = [self._pack(cell, l) if _plain(cell) else None for l, cell in enumerate(self.cells)]
        return self._products

    def _pack(self, cell: ProjectedCell, l: int):
        """The products of layer l: (project, recur) with x -> U x + b_ih and h -> W h + b_hh, or for a
        `sums_halves` cell above layer 0 (None, joint) with [x, h] -> [U W] [x, h] + b_ih + b_hh."""
        cast = (lambda t: t) if self.dtype is None else (lambda t: None if t is None else t.to(self.dtype))
        io = cell.weight_ih.dtype  # states and steps keep the model's dtype; only the products run in self.dtype
        W, b_hh = cell.recurrence()
        if l > 0 and cell.sums_halves:
            bias = None if b_hh is None else cell.bias_ih + b_hh
            return None, kernels.linear(cast(torch.cat([cell.weight_ih, W], 1)), cast(bias), 1, io)
        return (kernels.linear(cast(cell.weight_ih), cast(cell.bias_ih), 1, io),
                kernels.linear(cast(W), cast(b_hh), 1, io))

    @staticmethod
    def from_layer_states(layer_states: tuple) -> list:
        """Layer states with fields (1, 1, B, H) -> cell states with fields (B, H)."""
        return [type(s)(*(f[0, 0] for f in s)) for s in layer_states]

    def initial_states(self, batch_size: int) -> list:
        """Each layer's initial state (zeros or learned) as cell states with fields (B, H)."""
        like = self.embedding.weight
        return self.from_layer_states(tuple(layer.initial_state(batch_size, like) for layer in self.layers))

    def step(self, token: Tensor, states: list) -> tuple[Tensor, list]:
        """token (B,) -> logits (B, V) for the next token, and the new cell states. With reset_id, a row whose
        token is reset_id restarts from the initial state before reading it, as the forward pass does."""
        if self.reset_id >= 0:
            states = self._reset(token, states)
        if self.native is not None and self.native.takes(token, states):
            return self.native.step(token, states)
        x = self.embedding(token) if self.table is None else None  # (B, E)
        new_states = []
        for l, (cell, state, products) in enumerate(zip(self.cells, states, self.products)):
            if not cell.has_step():
                state = cell(x, state)
            elif products is None:  # any other cell with the fast-path protocol
                gx = self._table_rows(token) if l == 0 else cell.project_input(x.unsqueeze(0))[0]  # (B, G)
                W, b_hh = cell.recurrence()
                gh = None if W is None else F.linear(state.h, W, b_hh)
                state = cell.step(gx, gh, state, *cell.extra_params())[0]
            elif l == 0:
                state = cell.step(self._table_rows(token), products[1](state.h), state)[0]
            elif products[0] is None:  # one product for the whole pre-activation: gh is folded into gx
                state = cell.step(products[1](torch.cat([x, state.h], 1)), None, state)[0]
            else:
                state = cell.step(products[0](x), products[1](state.h), state)[0]
            new_states.append(state)
            x = state.h
        return F.linear(x, self.decoder.weight, self.decoder.bias), new_states  # (B, V): small, so not packed

    def _reset(self, token: Tensor, states: list) -> list:
        """The states with the rows whose token is reset_id set to the initial state (a new document starts)."""
        starts = token == self.reset_id  # (B,)
        if not bool(starts.any()):
            return states
        rows = starts.unsqueeze(1)  # (B, 1)
        return [type(s)(*(torch.where(rows, f0, f) for f, f0 in zip(s, s0)))
                for s, s0 in zip(states, self.initial_states(token.numel()))]

    def _table_rows(self, token: Tensor) -> Tensor:
        """Layer 0's U e + b_ih for tokens (B,) -> (B, G). One token on the CPU is a row view, not a gather; on a GPU,
        int(token) would wait for the device, so there it is a gather."""
        if token.numel() == 1 and token.device.type == "cpu":
            return self.table[int(token)].unsqueeze(0)
        return self.table[token]


def _batch_of_one(condition: Tensor) -> Tensor:
    """One label () or (1,) -> (1,); one feature vector (F,) or (1, F) -> (1, F)."""
    if condition.dtype in (torch.long, torch.int32, torch.int64):
        return condition.reshape(1)
    return condition.reshape(1, -1)


def _plain(cell) -> bool:
    """True for a cell whose projections are the plain products of ProjectedCell (so they can be packed) and whose
    step takes no parameters besides them (the packed stepper passes none)."""
    return (isinstance(cell, ProjectedCell) and type(cell).project_input is ProjectedCell.project_input
            and not cell.extra_params())
