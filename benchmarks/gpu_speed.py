"""Language-model speed on a CUDA GPU against torch.nn on cuDNN, measured in one run (lm_speed.py is the CPU one).

1. Training tok/s (forward + backward + AdamW step) of the 2x512 char LSTM LM, V=65, T=128, at B=32 and B=128,
   in fp32 and under bf16 autocast: our model on each backend (fused = cuDNN through our parameters, bptt = our
   engine with the hand-derived backward, autograd = the same loop differentiated by autograd) against the same
   model built from torch.nn.Embedding/LSTM/Linear (the peer), with our model's weights.
2. Generation tok/s at batch 1: our `LanguageModel.generate` (cells stepped directly; fp32 and bf16 weights)
   against stepping torch.nn.LSTM one token at a time, with and without reading each token on the host.

Every step is timed between torch.cuda.synchronize() calls after warm-up steps; rounds are interleaved (every
contender once per round) and medians taken. Under bf16 autocast torch runs cuDNN's LSTM in float16 (its
_cudnn_rnn autocast wrapper), our fused layer runs it in bfloat16, and bptt keeps float32 states with bf16
products: each bf16 table says which dtype each LSTM produced. A contender that torch cannot run (e.g. bf16
on a cuDNN without bf16 RNNs) is listed under its table with the error instead of a time.

    python benchmarks/gpu_speed.py [--rounds 10] [--warmup 3] [--tokens 500]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lm_speed import E, H, L, T, V, TorchLM, print_table, timed, torch_generate, train_step  # noqa: E402

from recurrent.models import LanguageModel, LMConfig  # noqa: E402

BACKENDS = ("fused", "bptt", "autograd")


def contenders(device: torch.device) -> dict:
    """The peer and our model on each backend, all with the same weights, on `device`."""
    torch.manual_seed(0)
    ours = {b: LanguageModel(LMConfig(vocab_size=V, embedding_size=E, hidden_size=H, num_layers=L, backend=b))
            for b in BACKENDS}
    for model in ours.values():
        model.load_state_dict(ours["fused"].state_dict())
    peer = TorchLM(ours["fused"])  # built on the CPU from our weights (it shares our embedding and decoder)
    return {"torch.nn (cuDNN)": peer.to(device), **{f"recurrent {b}": m.to(device) for b, m in ours.items()}}


def time_training(models: dict, B: int, bf16: bool, rounds: int, warmup: int) -> tuple[dict, dict]:
    """Seconds per step of each model, and the error of each one torch could not run."""
    x = torch.randint(V, (B, T), device="cuda")
    y = torch.randint(V, (B, T), device="cuda")
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    times, failed = {}, {}
    for k, m in models.items():
        try:
            for _ in range(warmup):
                train_step(m, opts[k], x, y, bf16)
            times[k] = []
        except RuntimeError as e:
            failed[k] = str(e).splitlines()[0]
            torch.cuda.synchronize()
    for _ in range(rounds):
        for k in times:
            times[k].append(train_step(models[k], opts[k], x, y, bf16))
    return times, failed


@torch.no_grad()
def lstm_dtypes(models: dict) -> str:
    """The dtype of each model's first LSTM output under CUDA bf16 autocast."""
    x = torch.randint(V, (2, 4), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        dtypes = {k: (m.lstm(m.embedding(x)) if k.startswith("torch") else m.layers[0](m.embedding(x)))[0].dtype
                  for k, m in models.items()}
    return ", ".join(f"{k} {str(d).removeprefix('torch.')}" for k, d in dtypes.items())


def time_generation(models: dict, n: int, rounds: int) -> dict:
    """Seconds to generate n tokens at batch 1 after a 3-token prime, for each way of generating."""
    peer, ours = models["torch.nn (cuDNN)"].eval(), models["recurrent fused"].eval()
    prime = torch.tensor([1, 2, 3], device="cuda")
    gen = torch.Generator("cuda")
    runs = {
        "torch.nn.LSTM stepped": lambda: torch_generate(peer, prime, n, gen),
        "torch.nn.LSTM stepped, each token read": lambda: torch_generate(peer, prime, n, gen, stream=True),
        "recurrent generate": lambda: list(ours.generate(prime, n, generator=gen)),
        "recurrent generate --bf16": lambda: list(ours.generate(prime, n, generator=gen, bf16=True)),
    }
    times = {k: [] for k in runs}
    for _ in range(rounds + 1):  # the first round warms up
        for k, run in runs.items():
            times[k].append(timed(lambda: (run(), torch.cuda.synchronize())))
    return {k: ts[1:] for k, ts in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per contender before the rounds")
    parser.add_argument("--tokens", type=int, default=500, help="tokens generated per generation round")
    parser.add_argument("--batch-sizes", default="32,128")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(f"gpu_speed.py needs a CUDA GPU, and torch {torch.__version__} finds none here "
                 f"(benchmarks/lm_speed.py measures the CPU)")
    models = contenders(torch.device("cuda"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}; TF32 in cuDNN: {torch.backends.cudnn.allow_tf32}, "
          f"in matmul: {torch.backends.cuda.matmul.allow_tf32}")
    for B in map(int, args.batch_sizes.split(",")):
        for bf16 in (False, True):
            times, failed = time_training(models, B, bf16, args.rounds, args.warmup)
            precision = "bf16 autocast" if bf16 else "fp32"
            print(f"\ntraining: 2x{H} LSTM LM, V={V}, B={B} T={T}, AdamW, {precision}; median of {args.rounds} steps")
            peer = "torch.nn (cuDNN)" if "torch.nn (cuDNN)" in times else next(iter(times))
            print_table(times, peer, "step", 1e3, 2, B * T)
            for k, error in failed.items():
                print(f"- {k}: not run: {error}")
            if bf16:
                print(f"- LSTM output dtype under this autocast: {lstm_dtypes(models)}")
    n = args.tokens
    print(f"\ngeneration: batch 1, {n} tokens per round after a 3-token prime, median of {args.rounds} rounds")
    print_table(time_generation(models, n, args.rounds), "torch.nn.LSTM stepped", "token", 1e3 / n, 3, n)


if __name__ == "__main__":
    main()
