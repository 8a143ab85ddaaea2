"""One test utterance of a trained speech run, drawn so its CTC alignment can be seen: the log-mel spectrogram the
model reads (top), and below it, on the same time axis, the per-frame character posteriors with the greedy CTC path
(the argmax symbol of each output frame; blanks grey, characters labelled where they start).

    python benchmarks/speech_alignment.py runs/speech-bench/full/digits-bi --data runs/speech-bench/full/digits/test.tsv \\
        --index 0 --out docs/speech_alignment.png
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import parser  # noqa: E402

from recurrent.speech.ctc import collapse  # noqa: E402
from recurrent.speech.data import load_audio, read_manifest  # noqa: E402
from recurrent.speech.inference import load_recognizer  # noqa: E402


def main() -> None:
    p = parser(__doc__)
    p.add_argument("run")
    p.add_argument("--data", required=True, help="a manifest (path<TAB>transcript)")
    p.add_argument("--index", type=int, default=0, help="which line of the manifest")
    p.add_argument("--out", default="speech_alignment.png")
    args = p.parse_args()
    rec = load_recognizer(args.run)
    utterance = read_manifest(args.data)[args.index]
    audio = load_audio(utterance, rec.features.sample_rate)
    feats = rec.feats(audio)  # (T, M)
    log_probs = rec.log_probs(audio)  # (T', C)
    path = log_probs.argmax(-1).tolist()  # the greedy path, one symbol per output frame
    hypothesis = rec.vocab.decode(collapse(path))
    hop_s = rec.features.hop / rec.features.sample_rate
    stride = feats.shape[0] / max(1, log_probs.shape[0])  # input frames per output frame (the convolution's stride)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [1, 1.2]})
    seconds = feats.shape[0] * hop_s
    top.imshow(feats.T.numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, feats.shape[1]), cmap="magma")
    top.set_ylabel("mel bin")
    top.set_title(f"{Path(utterance.path).name}: reference {utterance.text!r}\ngreedy CTC {hypothesis!r}", fontsize=10)
    frame_s = stride * hop_s
    bottom.imshow(log_probs.exp().T.numpy(), origin="lower", aspect="auto", cmap="Greys",
                  extent=(0, log_probs.shape[0] * frame_s, -0.5, log_probs.shape[1] - 0.5), vmin=0, vmax=1)
    times = [(i + 0.5) * frame_s for i in range(len(path))]
    blank = [(t, s) for t, s in zip(times, path) if s == 0]
    chars = [(t, s) for t, s in zip(times, path) if s != 0]
    bottom.scatter([t for t, _ in blank], [0] * len(blank), s=6, color="0.6", label="blank")
    bottom.scatter([t for t, _ in chars], [s for _, s in chars], s=14, color="tab:red", label="greedy path: a character")
    previous = 0
    for t, s in zip(times, path):  # label a character where its run starts
        if s != 0 and s != previous:
            bottom.annotate(repr(rec.vocab.itos[s])[1:-1] or "␣", (t, s), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8, color="tab:red")
        previous = s
    bottom.set_yticks(range(log_probs.shape[1]))
    bottom.set_yticklabels(["blank" if i == 0 else repr(c)[1:-1] for i, c in enumerate(rec.vocab.itos)], fontsize=6)
    bottom.set_ylabel("symbol (posterior, grey)")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: {log_probs.shape[0]} output frames of {frame_s * 1000:.0f} ms; {hypothesis!r}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
