"""On a CUDA GPU: our layers against torch.nn on cuDNN (copied weights), and every model on the GPU against the
same model on the CPU. Every test here is skipped where torch finds no GPU (CI has none).

Key: B batch, T time, I input, H hidden, L layers, D directions, V vocab, K tags.

Most comparisons run in float64, which cuDNN's RNN kernels accept (`torch.backends.cudnn.is_acceptable`), so
they agree to float64 rounding and the default float64 tolerances of `assert_close` hold (rtol 1e-7, atol 1e-7).
Where float32 or bfloat16 is the point, the tolerance is justified where it is used.
"""
from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.testing import assert_close

import recurrent as rc
from recurrent.checkpoint import load_checkpoint
from recurrent.cli.main import main
from recurrent.data.labelled import parse_tree
from recurrent.data.parallel import PAD_ID
from recurrent.decoding import beam_search, greedy_search
from recurrent.models.classifier import ClassifierConfig, SequenceClassifier
from recurrent.models.crf import CRF, bio_constraints
from recurrent.models.lm import PRIME_PASS_MIN, LanguageModel, LMConfig
from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig
from recurrent.models.tagger import SequenceTagger, TaggerConfig
from recurrent.models.tree import TreeClassifier, batch_trees, encode_tree
from recurrent.sampling import Sampler
from recurrent.devices import model_device, to_device
from recurrent.inference.classify import evaluate_classifier, load_classifier
from recurrent.inference.lm import evaluate_loss, load_lm
from recurrent.inference.tag import evaluate_tagger, load_tagger
from recurrent.inference.translate import load_translator
from recurrent.train.classify import TrainClassifyConfig, train_classify
from recurrent.train.lm import TrainLMConfig, train_lm
from recurrent.train.loop import flat_replace
from recurrent.train.tag import TrainTagConfig, train_tag
from recurrent.train.translate import TrainTranslateConfig, train_translate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")

# --- layers against torch.nn on cuDNN ---------------------------------------------------------------------

KINDS = {  # ours, torch's, their shared keyword arguments
    "lstm": (rc.LSTM, nn.LSTM, {}),
    "gru": (rc.GRU, nn.GRU, {}),
    "rnn_tanh": (rc.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rc.RNN, nn.RNN, {"nonlinearity": "relu"}),
}
B, T, I, H, L = 4, 7, 5, 6, 2
LENGTHS = torch.tensor([7, 3, 5, 1])  # on the CPU, as a user passes them; not sorted


def torch_forward(ref: nn.RNNBase, x, hx, lengths):
    """torch.nn's output (B, T, D*H) and final state (L*D, B, H), packing a padded batch as torch users do."""
    if lengths is None:
        return ref(x, hx)
    out, final = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), hx)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], final


def as_tuple(state) -> tuple:
    return state if isinstance(state, tuple) else (state,)


def pair(kind: str, backend: str, bidirectional: bool, dtype=torch.float64):
    """A torch.nn layer on the GPU and ours built from it with `backend` (a copy of its weights)."""
    ours_class, torch_class, kwargs = KINDS[kind]
    ref = torch_class(I, H, num_layers=L, bidirectional=bidirectional, batch_first=True, **kwargs).to(CUDA, dtype)
    ours = ours_class.from_torch(ref, backend=backend)
    assert ours.backend == backend and next(ours.parameters()).device.type == "cuda"
    return ref, ours


def inputs(kind: str, D: int, dtype=torch.float64):
    """x (B, T, I) and a non-zero initial state in torch's layout, fields (L*D, B, H), all on the GPU."""
    x = torch.randn(B, T, I, device=CUDA, dtype=dtype, requires_grad=True)
    fields = 2 if kind == "lstm" else 1
    hx = tuple(torch.randn(L * D, B, H, device=CUDA, dtype=dtype, requires_grad=True) for _ in range(fields))
    return x, hx


def run_both(ref, ours, x, hx, lengths):
    """(outputs, finals, gradients) of torch.nn and of ours, for the same random projection of every output."""
    D = 2 if ref.bidirectional else 1
    ref_out, ref_final = torch_forward(ref, x, hx if len(hx) == 2 else hx[0], lengths)
    our_out, our_state = ours(x, rc.from_torch_state(hx if len(hx) == 2 else hx[0], ours.state_type, D),
                              lengths=lengths)
    our_final = rc.to_torch_state(our_state)
    weights = [p for _, p in ours._torch_names()]
    ref_weights = [getattr(ref, name) for name, _ in ours._torch_names()]
    g_out = torch.randn_like(ref_out)
    g_final = [torch.randn_like(f) for f in as_tuple(ref_final)]

    def grads(out, final, params):
        loss = (out * g_out).sum() + sum((f * g).sum() for f, g in zip(as_tuple(final), g_final))
        return torch.autograd.grad(loss, [x, *hx, *params])

    return ((ref_out, as_tuple(ref_final), grads(ref_out, ref_final, ref_weights)),
            (our_out, as_tuple(our_final), grads(our_out, our_final, weights)))


def grad_fn_names(t: torch.Tensor) -> set[str]:
    """The names of every autograd node behind t."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack += [f for f, _ in fn.next_functions]
    return {type(fn).__name__ for fn in seen}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_the_reference_and_our_fused_backend_run_on_cudnn_in_float64(kind):
    ref, ours = pair(kind, "fused", bidirectional=True)
    x, hx = inputs(kind, 2)
    assert torch.backends.cudnn.is_acceptable(x)
    for model in (ref, ours):
        out = model(x)[0]
        assert out.dtype == torch.float64 and "CudnnRnnBackward0" in grad_fn_names(out)


@pytest.mark.parametrize("variable", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("backend", ["fused", "bptt", "autograd"])
@pytest.mark.parametrize("kind", KINDS)
def test_layer_matches_cudnn_in_float64(kind, backend, bidirectional, variable):
    """Outputs, final states and the gradients of x, the initial state and every weight, from a non-zero
    initial state, two layers deep."""
    ref, ours = pair(kind, backend, bidirectional)
    x, hx = inputs(kind, 2 if bidirectional else 1)
    lengths = LENGTHS if variable else None
    (ref_out, ref_final, ref_grads), (our_out, our_final, our_grads) = run_both(ref, ours, x, hx, lengths)
    assert_close(our_out, ref_out)
    for ours_f, ref_f in zip(our_final, ref_final):
        assert_close(ours_f, ref_f)
    for ours_g, ref_g in zip(our_grads, ref_grads):
        assert_close(ours_g, ref_g)


@pytest.fixture
def no_tf32():
    """cuDNN may run float32 RNNs in TF32 (10-bit mantissa); the float32 test below compares true float32."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("backend", ["fused", "bptt", "autograd"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_matches_cudnn_in_float32(no_tf32, kind, backend):
    # float32 rounds at 6e-8 relative; cuDNN and cuBLAS sum the H + I products of each step in other orders,
    # and the differences grow through T = 7 steps and two layers: 1e-5 absolute and relative covers that with
    # room, and is still 100x below what a wrong gate or a missing step would give.
    ref, ours = pair(kind, backend, bidirectional=True, dtype=torch.float32)
    x, hx = inputs(kind, 2, torch.float32)
    (ref_out, ref_final, ref_grads), (our_out, our_final, our_grads) = run_both(ref, ours, x, hx, LENGTHS)
    for a, b in zip([our_out, *our_final, *our_grads], [ref_out, *ref_final, *ref_grads]):
        assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["fused", "bptt"])
def test_layer_under_bf16_autocast_stays_near_float32(backend):
    # bfloat16 keeps 8 bits of mantissa (relative rounding 4e-3): the products of each step are rounded there,
    # while our bptt engine keeps states and pointwise steps in float32. Outputs in (-1, 1) then stay within
    # 0.05 of the float32 result over 7 steps; a wrong cast (bf16 states, or no autocast at all) shows as NaN,
    # a wrong dtype or a larger error.
    ref, ours = pair("lstm", backend, bidirectional=False, dtype=torch.float32)
    x, hx = inputs("lstm", 1, torch.float32)
    expected = ref(x, hx)[0]
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, _ = ours(x, rc.from_torch_state(hx, rc.LSTMState, 1))
    except RuntimeError as e:  # torch's own fused kernels: bf16 RNNs need cuDNN >= 9.13 (pytorch#164411)
        if backend == "fused" and "BFloat16" in str(e):
            pytest.skip(f"torch {torch.__version__} (cuDNN {torch.backends.cudnn.version()}) has no bf16 RNN: {e}")
        raise
    # fused: bfloat16, not the float16 torch's autocast gives cuDNN RNNs; bptt keeps its states in float32
    assert out.dtype == (torch.bfloat16 if backend == "fused" else torch.float32)
    assert_close(out.float(), expected, atol=0.05, rtol=0)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in ours.parameters())


def test_a_state_on_the_wrong_device_is_named():
    layer = rc.LSTM(I, H).to(CUDA)
    state = rc.LSTMState(torch.zeros(1, 1, B, H), torch.zeros(1, 1, B, H))  # on the CPU
    with pytest.raises(ValueError, match="state.h must be on x's device cuda:0, got cpu"):
        layer(torch.randn(B, T, I, device=CUDA), state)


# --- models: the GPU against the CPU ----------------------------------------------------------------------


def on_gpu(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).to(CUDA)


@pytest.mark.parametrize("backend", ["auto", "bptt", "autograd"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_lm_forward_loss_state_and_gradients_agree_on_cpu_and_gpu(cell, backend):
    cpu = LanguageModel(LMConfig(vocab_size=11, hidden_size=16, num_layers=2, cell=cell, backend=backend)).double()
    gpu = on_gpu(cpu)
    tokens, targets = torch.randint(11, (3, 2, 9)), torch.randint(11, (3, 2, 9))  # two windows, B = 3
    state_c = state_g = None
    for w in range(2):  # the second window starts from the first one's state
        out_c = cpu(tokens[:, w], state_c, targets=targets[:, w])
        out_g = gpu(tokens[:, w].to(CUDA), state_g, targets=targets[:, w].to(CUDA))
        assert_close(out_g.logits.cpu(), out_c.logits)
        assert_close(out_g.loss.cpu(), out_c.loss)
        for s_g, s_c in zip(out_g.state, out_c.state):
            for f_g, f_c in zip(s_g, s_c):
                assert_close(f_g.cpu(), f_c)
        state_c, state_g = out_c.state, out_g.state
    out_c.loss.backward()
    out_g.loss.backward()
    for (name, p_c), p_g in zip(cpu.named_parameters(), gpu.parameters()):
        assert_close(p_g.grad.cpu(), p_c.grad, msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_the_stepper_on_the_gpu_gives_the_layers_logits(cell):
    model = on_gpu(LanguageModel(LMConfig(vocab_size=13, hidden_size=32, num_layers=2, cell=cell)).double()).eval()
    tokens = torch.randint(13, (2, 12), device=CUDA)  # (B, T)
    with torch.no_grad():
        expected = model(tokens).logits  # (B, T, V)
        stepper, logits = model.stepper(), []
        states = stepper.initial_states(2)
        for t in range(tokens.shape[1]):
            step_logits, states = stepper.step(tokens[:, t], states)  # (B, V)
            logits.append(step_logits)
    assert_close(torch.stack(logits, dim=1), expected)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_generation_is_the_same_on_cpu_and_gpu(cell):
    cpu = LanguageModel(LMConfig(vocab_size=13, hidden_size=32, num_layers=2, cell=cell)).double()
    gpu = on_gpu(cpu)
    for prime in (torch.tensor([1, 2, 3]), torch.randint(13, (PRIME_PASS_MIN + 16,))):  # stepped, one pass
        greedy = [list(m.generate(prime, 40, greedy=True)) for m in (cpu, gpu)]
        assert greedy[0] == greedy[1]
        sampled = [list(m.generate(prime, 40, top_k=5, generator=torch.Generator().manual_seed(3)))
                   for m in (cpu, gpu)]  # a CPU generator: the same noise whatever the model's device
        assert sampled[0] == sampled[1]


def test_generation_on_the_gpu_with_bf16_weights_and_a_cuda_generator():
    model = on_gpu(LanguageModel(LMConfig(vocab_size=13, hidden_size=32, num_layers=2)))
    for bf16 in (False, True):
        tokens = list(model.generate(torch.tensor([1, 2]), 50, generator=torch.Generator(CUDA).manual_seed(0),
                                     bf16=bf16))
        assert len(tokens) == 50 and all(0 <= t < 13 for t in tokens)


def test_sampler_with_a_cpu_generator_draws_the_same_tokens_for_gpu_logits():
    logits = torch.randn(2, 50, dtype=torch.float64)
    for options in ({}, {"top_k": 7}, {"top_p": 0.8, "temperature": 0.7}):
        cpu = Sampler(generator=torch.Generator().manual_seed(1), block=16, **options)
        gpu = Sampler(generator=torch.Generator().manual_seed(1), block=16, **options)
        drawn = [(cpu(logits), gpu(logits.to(CUDA))) for _ in range(40)]  # crosses two noise blocks
        assert all(g.device.type == "cuda" and torch.equal(c, g.cpu()) for c, g in drawn)


def test_crf_log_partition_viterbi_and_gradients_agree_on_cpu_and_gpu():
    tags = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    cpu = CRF(len(tags), bio_constraints(tags)).double()
    gpu = on_gpu(cpu)
    lengths = torch.tensor([7, 4, 1, 6])
    mask = torch.arange(7) < lengths.unsqueeze(1)  # (B, T), on the CPU: the CRF moves it to the emissions
    emissions = torch.randn(4, 7, len(tags), dtype=torch.float64)  # (B, T, K)
    gold = torch.randint(len(tags), (4, 7))
    assert_close(gpu.log_partition(emissions.to(CUDA), mask).cpu(), cpu.log_partition(emissions, mask))
    assert torch.equal(gpu.decode(emissions.to(CUDA), mask).cpu(), cpu.decode(emissions, mask))
    cpu.log_likelihood(emissions, gold, mask).sum().backward()
    gpu.log_likelihood(emissions.to(CUDA), gold, mask).sum().backward()
    for p_c, p_g in zip(cpu.parameters(), gpu.parameters()):
        assert_close(p_g.grad.cpu(), p_c.grad)


@pytest.mark.parametrize("char_encoder", ["lstm", "cnn"])
def test_tagger_agrees_on_cpu_and_gpu_with_lengths_left_on_the_cpu(char_encoder):
    config = TaggerConfig(vocab_size=20, num_chars=10, num_tags=5, embedding_size=8, hidden_size=8,
                          char_encoder=char_encoder, char_embedding_size=4, char_hidden_size=4, crf=True)
    cpu = SequenceTagger(config, ["O", "B-X", "I-X", "B-Y", "I-Y"]).double().eval()
    gpu = on_gpu(cpu)
    lengths = torch.tensor([5, 2, 4])
    words = torch.randint(2, 20, (3, 5)) * (torch.arange(5) < lengths.unsqueeze(1))  # (B, T), 0 = padding
    chars = torch.randint(1, 10, (3, 5, 6))  # (B, T, C)
    char_lengths = torch.randint(1, 7, (3, 5)) * (torch.arange(5) < lengths.unsqueeze(1))
    tags = torch.randint(5, (3, 5))
    with torch.no_grad():
        out_c = cpu(words, lengths, chars, char_lengths, tags)
        out_g = gpu(words.to(CUDA), lengths, chars.to(CUDA), char_lengths.to(CUDA), tags.to(CUDA))
    assert_close(out_g.emissions.cpu(), out_c.emissions)
    assert_close(out_g.loss.cpu(), out_c.loss)
    assert gpu.decode(out_g.emissions, lengths) == cpu.decode(out_c.emissions, lengths)


@pytest.mark.parametrize("attention", ["bahdanau", "dot", "general", "none"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_seq2seq_loss_and_decoding_agree_on_cpu_and_gpu(cell, attention):
    config = Seq2SeqConfig(src_vocab_size=12, tgt_vocab_size=12, cell=cell, embedding_size=8, hidden_size=16,
                           attention=attention, dropout=0.0)
    cpu = Seq2Seq(config).double().eval()
    gpu = on_gpu(cpu)
    lengths = torch.tensor([6, 4, 2])  # left on the CPU: the model and the searches move what they need
    src = torch.randint(4, 12, (3, 6)).masked_fill(torch.arange(6) >= lengths.unsqueeze(1), PAD_ID)  # (B, S)
    tgt = torch.randint(4, 12, (3, 5))
    with torch.no_grad():
        loss_c = cpu(src, lengths, tgt, tgt).loss
        loss_g = gpu(src.to(CUDA), lengths, tgt.to(CUDA), tgt.to(CUDA)).loss
    assert_close(loss_g.cpu(), loss_c)
    for search, kwargs in ((greedy_search, {}), (beam_search, {"beam_size": 3})):
        hyps_c = search(cpu, src, lengths, max_len=12, **kwargs)
        hyps_g = search(gpu, src.to(CUDA), lengths, max_len=12, **kwargs)
        assert [h.tokens for h in hyps_g] == [h.tokens for h in hyps_c]
        assert [h.score for h in hyps_g] == pytest.approx([h.score for h in hyps_c], rel=1e-9)
        if attention != "none":  # hypotheses carry their attention on the CPU, ready to plot
            for h_g, h_c in zip(hyps_g, hyps_c):
                assert h_g.attention.device.type == "cpu"
                assert_close(h_g.attention, h_c.attention)


# --- trainers on the GPU ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "café"]
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) for _ in range(100)) + "\n")
    return path


def lm_config(text, out, **overrides) -> TrainLMConfig:
    config = TrainLMConfig(data=str(text), model=LMConfig(hidden_size=16, num_layers=2))
    defaults = dict(out=str(out), batch_size=4, bptt=16, max_steps=2, eval_every=1, log_every=1, progress=False)
    return flat_replace(config, **{**defaults, **overrides})


def val_losses(run) -> list[float]:
    return [r["val_loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_train_lm_on_cuda_follows_the_cpu_run_and_saves_cpu_tensors(no_tf32, text, tmp_path):
    cpu_run = train_lm(lm_config(text, tmp_path / "cpu"))
    gpu_run = train_lm(lm_config(text, tmp_path / "gpu", device="cuda"))
    # same seed, same initial weights (built on the CPU, then moved), no dropout, no TF32: the two runs differ
    # only by float32 rounding in the order of sums (~1e-6 relative), far below 1e-4 after two AdamW steps
    assert val_losses(gpu_run) == pytest.approx(val_losses(cpu_run), rel=1e-4)
    for name in ("model", "last"):
        tensors, _ = load_checkpoint(gpu_run, name=name)
        assert {t.device.type for t in tensors.values()} == {"cpu"}
    lm = load_lm(gpu_run)  # a GPU run on the CPU
    model, vocab = lm.model, lm.vocab
    assert model_device(model).type == "cpu" and len(list(model.generate(torch.tensor([1]), 5))) == 5
    model = load_lm(gpu_run, "cuda").model
    assert model_device(model).type == "cuda"
    assert evaluate_loss(model, vocab.encode(text.read_text())) == pytest.approx(
        evaluate_loss(load_lm(gpu_run).model, vocab.encode(text.read_text())), rel=1e-5)


def test_train_lm_on_cuda_resumes_and_runs_bf16(text, tmp_path):
    model = LMConfig(hidden_size=16, num_layers=2, backend="bptt")  # our engine: bf16 products on any cuDNN
    config = lm_config(text, tmp_path / "run", device="cuda", precision="bf16", model=model)
    run = train_lm(config)
    run = train_lm(flat_replace(config, resume=True, max_steps=3))  # the carried state goes to the GPU
    losses = val_losses(run)
    assert len(losses) == 3 and all(v == v for v in losses)  # no NaN


def test_cli_trains_generates_and_evaluates_on_cuda(no_tf32, text, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(text), "--out", str(out), "--hidden-size", "16", "--num-layers", "1",
                 "--batch-size", "4", "--bptt", "8", "--max-steps", "2", "--no-progress", "--device", "cuda"]) == 0
    capsys.readouterr()
    args = [str(out), "--prime", "the", "--length", "30", "--seed", "4"]
    assert main(["generate", *args, "--device", "cuda"]) == 0
    on_gpu = capsys.readouterr().out
    assert main(["generate", *args]) == 0
    # the same seeded noise on both devices; float32 logits that differ in their last bits pick the same tokens
    assert on_gpu == capsys.readouterr().out and len(on_gpu) == len("the") + 30 + 1
    assert main(["evaluate", str(out), "--data", str(text), "--device", "cuda"]) == 0
    assert capsys.readouterr().out.startswith("test bits/char ")


def test_train_translate_on_cuda_two_steps_then_translate_on_either_device(tmp_path):
    config = flat_replace(TrainTranslateConfig(), synthetic="reverse", task_min_len=3, task_max_len=6, task_size=200,
                                  out=str(tmp_path / "run"), max_steps=2, eval_every=1, progress=False,
                                  device="cuda", model=Seq2SeqConfig(embedding_size=8, hidden_size=16))
    run = train_translate(config)
    tensors, _ = load_checkpoint(run)
    assert {t.device.type for t in tensors.values()} == {"cpu"}
    for device in ("cuda", "cpu"):
        translator = load_translator(run, device)
        assert model_device(translator.model).type == device
        for beam in (1, 3):
            results = translator.translate(["a b c", "", "d e"], beam_size=beam)
            assert len(results) == 3 and results[1].text == ""
            assert results[0].hypothesis.attention.device.type == "cpu"
        assert translator.perplexity(["a b c"], ["c b a"]) > 1.0


def test_train_tag_on_cuda_two_steps_then_predict_and_evaluate_there(no_tf32, tmp_path):
    data = tmp_path / "pos.conll"
    data.write_text("a DET\ncat NOUN\nsat VERB\n\nthe DET\ndog NOUN\nran VERB\n")
    config = flat_replace(TrainTagConfig(), train=str(data), valid=str(data), out=str(tmp_path / "run"), max_steps=2,
                            progress=False, device="cuda",
                            model=TaggerConfig(embedding_size=4, hidden_size=4, crf=True, char_encoder="lstm"))
    run = train_tag(config)
    tensors, _ = load_checkpoint(run)
    assert {t.device.type for t in tensors.values()} == {"cpu"}
    tagger = load_tagger(run, "cuda")
    assert len(tagger.predict([["a", "dog", "sat"]])[0]) == 3
    report = evaluate_tagger(tagger, data)
    assert 0 <= report.accuracy <= 1 and report.accuracy == evaluate_tagger(load_tagger(run), data).accuracy


# --- classifiers: sequence and tree ------------------------------------------------------------------------

TREES = ["(3 (2 a) (4 (3 good) (2 film)))", "(1 (1 (2 not) (3 good)) (2 .))", "(0 bad)",
         "(4 (2 a) (4 (4 (3 good) (4 (3 good) (2 film))) (2 .)))"]


def test_sequence_classifier_agrees_on_cpu_and_gpu_with_lengths_left_on_the_cpu():
    cpu = SequenceClassifier(ClassifierConfig(vocab_size=20, num_classes=3, embedding_size=6, hidden_size=5,
                                              pooling="attention")).double().eval()
    gpu = on_gpu(cpu)
    lengths = torch.tensor([5, 2, 4])
    words = torch.randint(2, 20, (3, 5)) * (torch.arange(5) < lengths.unsqueeze(1))  # (B, T), 0 = padding
    labels = torch.tensor([0, 2, 1])
    out_c, out_g = cpu(words, lengths, labels), gpu(words.to(CUDA), lengths, labels.to(CUDA))
    assert_close(out_g.logits.cpu(), out_c.logits)
    assert_close(out_g.loss.cpu(), out_c.loss)


@pytest.mark.parametrize("cell", ["lstm", "elman"])
def test_tree_classifier_agrees_on_cpu_and_gpu(cell):
    words = {"a": 2, "good": 3, "film": 4, "bad": 5, ".": 6, "not": 7}
    batch = batch_trees([encode_tree(parse_tree(t), words.__getitem__, int) for t in TREES])
    cpu = TreeClassifier(ClassifierConfig(vocab_size=8, num_classes=5, structure="tree", cell=cell,
                                          embedding_size=4, hidden_size=3, dropout=0.0)).double()
    gpu = on_gpu(cpu)
    out_c, out_g = cpu(batch), gpu(to_device(batch, CUDA))
    assert_close(out_g.logits.cpu(), out_c.logits)
    assert_close(out_g.loss.cpu(), out_c.loss)
    out_c.loss.backward()
    out_g.loss.backward()
    for (name, p_c), p_g in zip(cpu.named_parameters(), gpu.parameters()):
        assert_close(p_g.grad.cpu(), p_c.grad, msg=name)


@pytest.mark.parametrize("structure", ["sequence", "tree"])
def test_train_classify_on_cuda_two_steps_then_predict_and_evaluate_there(no_tf32, tmp_path, structure):
    data = tmp_path / "sst.txt"
    data.write_text("\n".join(TREES) + "\n")
    config = flat_replace(TrainClassifyConfig(), train=str(data), valid=str(data), out=str(tmp_path / "run"), format="sst",
                                 phrases=True, max_steps=2, batch_size=2, progress=False, device="cuda",
                                 model=ClassifierConfig(structure=structure, embedding_size=4, hidden_size=4))
    run = train_classify(config)
    tensors, _ = load_checkpoint(run)
    assert {t.device.type for t in tensors.values()} == {"cpu"}
    classifier = load_classifier(run, "cuda")
    assert len(classifier.predict([parse_tree(TREES[0])] if structure == "tree" else [["a", "film"]])) == 1
    report = evaluate_classifier(classifier, data)
    assert report.accuracy == evaluate_classifier(load_classifier(run), data).accuracy
