"""Language-model speed against torch.nn, measured in one run (the LM issue's speed targets).

1. Training tok/s (forward + backward + AdamW step) of the 2x512 char LSTM LM, B=32 T=128:
   ours fp32 (auto: the fused backend, oneDNN's LSTM), ours bf16 (autocast; auto: our bptt engine, bf16
   products and float32 steps, its LSTM time loop in C++ from recurrent/native), ours bf16 forced onto the
   fused backend (oneDNN's bf16 LSTM), and the same model built from torch.nn.Embedding/LSTM/Linear in fp32
   (the peer), with ours under `auto` (the precision and backend `recurrent train lm` picks on this machine) and
   the fp32 bptt backend (the C++ loop). Targets: bf16 >= 1.8x the peer where bf16 is native; auto >= 1.0x.
2. Generation tok/s at batch 1: our `LanguageModel.generate` (cells stepped directly, layer-0
   projection table, weights packed once; fp32 and bf16 weights) against stepping torch.nn.LSTM one
   token at a time. Target: >= 15x.

Rounds are interleaved and medians taken, since this machine is shared and noisy.

At batch 1 a token reads every weight once: 12.6 MB in fp32 for the 2x512 model (half in bf16), so generation is
bound by memory bandwidth. On a 2-vCPU AVX2-only EPYC VM the native step alone took 0.21 ms (60 GB/s over two
cores; torch's own MKL mv reads 27 GB/s on one), generate 0.23-0.30 ms a token with sampling, against 3.4 ms for
stepping nn.LSTM: 11.5-14.8x, short of 15x there; on the Zen 4 machine of the README's status table, 15-23x.

    python benchmarks/lm_speed.py [--rounds 5] [--tokens 300] [--threads N]
    RECURRENT_NATIVE_ISA=avx2 python benchmarks/lm_speed.py      # the native kernels built for AVX2+FMA only
"""
import argparse
import statistics
import time

import torch
from torch import nn

from recurrent import hardware, native
from recurrent.precision import choose
from recurrent.models import LanguageModel, LMConfig

V, E, H, L, B, T = 65, 512, 512, 2, 32, 128  # tinyshakespeare-sized vocabulary


class TorchLM(nn.Module):
    """The peer: the same model from torch.nn parts, with our model's weights."""

    def __init__(self, ours: LanguageModel):
        super().__init__()
        self.embedding, self.decoder = ours.embedding, ours.decoder  # shared modules: identical weights
        self.lstm = nn.LSTM(E, H, L, batch_first=True)
        for l, layer in enumerate(ours.layers):
            for name, p in layer.to_torch().named_parameters():  # weight_ih_l0 -> weight_ih_l{l}
                getattr(self.lstm, name.replace("_l0", f"_l{l}")).data.copy_(p)

    def forward(self, tokens, state=None):
        out, state = self.lstm(self.embedding(tokens), state)
        return self.decoder(out), state


def train_step(model, opt, x, y, bf16=False) -> float:
    """Seconds for one step on x's device (on a GPU the clock waits for the device: benchmarks/gpu_speed.py)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)[0] if isinstance(model, TorchLM) else model(x).logits
        loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    sync()
    return time.perf_counter() - start


@torch.inference_mode()
def torch_generate(model: TorchLM, prime, n, gen, stream: bool = False):
    """n tokens sampled by stepping nn.LSTM one token at a time; stream: read each token on the host as it comes
    (as a program printing them does, and as our generate's iterator does), which on a GPU waits for the device."""
    logits, state = model(prime.view(1, -1))
    logits = logits[:, -1]
    for _ in range(n):
        token = torch.multinomial(logits.softmax(-1), 1, generator=gen)  # (1, 1)
        if stream:
            int(token)
        logits, state = model(token, state)  # one token through nn.LSTM
        logits = logits[:, -1]


def timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=300, help="tokens generated per generation round")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--bf16-rows", action="store_true",
                        help="time bf16 training where this CPU only emulates it (slow: seconds per step)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = LanguageModel(LMConfig(vocab_size=V, embedding_size=E, hidden_size=H, num_layers=L))
    peer = TorchLM(ours)
    fused = LanguageModel(LMConfig(vocab_size=V, embedding_size=E, hidden_size=H, num_layers=L, backend="fused"))
    fused.load_state_dict(ours.state_dict())
    bptt = LanguageModel(LMConfig(vocab_size=V, embedding_size=E, hidden_size=H, num_layers=L, backend="bptt"))
    bptt.load_state_dict(ours.state_dict())
    x, y = torch.randint(V, (B, T)), torch.randint(V, (B, T))
    auto = choose("auto", "cpu")  # what `recurrent train lm` picks here: fp32 or bf16, and the backend per call
    with auto.autocast("cpu"):
        backend = ours.layers[0]._backend_for(torch.zeros(1, 1, E)).name
    loop = "C++ loop" if native.load() is not None else f"Python loop; native: {native.status()}"
    runs = {"torch.nn fp32": (peer, False), f"recurrent auto ({auto.name}, {backend})": (ours, auto.bf16),
            "recurrent fp32, fused backend": (fused, False), f"recurrent fp32, bptt backend ({loop})": (bptt, False)}
    bf16_rows = args.bf16_rows or hardware.cpu().native_bf16
    if bf16_rows:
        runs.update({"recurrent bf16 (auto backend)": (ours, True), "recurrent bf16, fused backend": (fused, True)})
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in runs.items()}
    train = {k: [] for k in runs}
    for k, (m, bf16) in runs.items():
        train_step(m, opts[k], x, y, bf16)  # warm-up
    for _ in range(args.rounds):
        for k, (m, bf16) in runs.items():
            train[k].append(train_step(m, opts[k], x, y, bf16))

    ours.eval(), peer.eval()
    prime, n = torch.tensor([1, 2, 3]), args.tokens
    gen = {"torch.nn.LSTM stepped": [], "recurrent generate (fp32)": [], "recurrent generate --bf16": []}
    for _ in range(args.rounds):
        gen["torch.nn.LSTM stepped"].append(timed(lambda: torch_generate(peer, prime, n, torch.Generator())))
        gen["recurrent generate (fp32)"].append(timed(lambda: list(ours.generate(prime, n, generator=torch.Generator()))))
        gen["recurrent generate --bf16"].append(
            timed(lambda: list(ours.generate(prime, n, generator=torch.Generator(), bf16=True))))

    cpu = hardware.cpu()
    print(f"machine: {cpu.name} ({cpu.capability}; native bf16: {cpu.native_bf16}); native kernels: "
          f"{native.info()['isa']}; auto precision: {auto.name} ({auto.reason})")
    print(f"training: 2x{H} LSTM LM, V={V}, B={B} T={T}, AdamW; {torch.get_num_threads()} threads, torch {torch.__version__}")
    print_table(train, "torch.nn fp32", "step", 1e3, 0, B * T)
    if not bf16_rows:
        print("(bf16 training rows left out: this CPU emulates bf16 products; --bf16-rows times them anyway)")
    print(f"\ngeneration: batch 1, {n} tokens per round after a 3-token prime")
    print_table(gen, "torch.nn.LSTM stepped", "token", 1e3 / n, 2, n)


def print_table(times: dict, peer: str, unit: str, ms_per_second: float, digits: int, tokens: int) -> None:
    """One row per implementation: median ms per `unit`, tok/s, and the ratio to `peer` timed in the same rounds."""
    print(f"| implementation | ms / {unit} | tok/s | × {peer} |\n|---|---:|---:|---:|")
    ref = statistics.median(times[peer])
    for k, ts in times.items():
        s = statistics.median(ts)
        print(f"| {k} | {s * ms_per_second:.{digits}f} | {tokens / s:,.0f} | {ref / s:.2f} |")

if __name__ == "__main__":
    main()
