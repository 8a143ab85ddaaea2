"""The manifest and audio readers: good files read back, bad ones give one line naming the manifest line."""
import numpy as np
import pytest
import soundfile as sf

from recurrent.errors import UserError
from recurrent.speech.data import Conversions, Vocab, load_audio, read_manifest


def tone(seconds=0.25, rate=16000, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def manifest(tmp_path, text: str):
    path = tmp_path / "m.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_paths_relative_to_the_manifest(tmp_path):
    (tmp_path / "wav").mkdir()
    sf.write(tmp_path / "wav" / "a.wav", tone(), 16000)
    sf.write(tmp_path / "wav" / "b.wav", tone(), 16000)
    utts = read_manifest(manifest(tmp_path, "wav/a.wav\tone  two\n\nwav/b.wav\toh\n"))
    assert [u.text for u in utts] == ["one two", "oh"]
    assert utts[1].path == tmp_path / "wav" / "b.wav" and utts[1].where.endswith("m.tsv:3")
    audio = load_audio(utts[0], 16000)
    assert audio.dtype == np.float32 and np.allclose(audio, tone(), atol=1e-4)  # 16-bit PCM round trip


def test_resamples_and_downmixes_and_says_so(tmp_path):
    stereo = np.stack([tone(rate=8000), np.zeros(2000, np.float32)], 1)  # (N, 2): a tone left, silence right
    sf.write(tmp_path / "s.wav", stereo, 8000)
    utt = read_manifest(manifest(tmp_path, "s.wav\thi\n"))[0]
    conversions = Conversions()
    audio = load_audio(utt, 16000, conversions)
    assert len(audio) == 4000  # 0.25 s at 16 kHz
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 8  # still the tone, at half amplitude
    assert 0.1 < np.abs(audio[500:-500]).max() < 0.2
    said = conversions.describe(16000)
    assert "1 file at 8000 Hz resampled to 16000 Hz" in said and "1 file with several channels downmixed" in said
    assert Conversions().describe(16000) is None


@pytest.mark.parametrize("text, message", [
    ("", "holds no utterances"),
    ("a.wav one two\n", "m.tsv:1: expected path<TAB>transcript, found no tab"),
    ("\n\nmissing.wav\tone\n", "m.tsv:3: audio file missing.wav does not exist"),
    ("a.wav\t  \n", "m.tsv:1: the transcript of a.wav is empty"),
    ("\tone\n", "m.tsv:1: the audio path is empty"),
])
def test_malformed_manifests(tmp_path, text, message):
    sf.write(tmp_path / "a.wav", tone(), 16000)
    with pytest.raises(UserError, match=message):
        read_manifest(manifest(tmp_path, text))


def test_missing_manifest(tmp_path):
    with pytest.raises(UserError, match="no such manifest file"):
        read_manifest(tmp_path / "none.tsv")


def test_not_audio_and_empty_audio(tmp_path):
    (tmp_path / "text.wav").write_text("this is not a wav file\n")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    utts = read_manifest(manifest(tmp_path, "text.wav\tone\nempty.wav\ttwo\n"))
    with pytest.raises(UserError, match=r"m.tsv:1: .*text.wav is not audio"):
        load_audio(utts[0], 16000)
    with pytest.raises(UserError, match=r"m.tsv:2: .*empty.wav holds no samples"):
        load_audio(utts[1], 16000)


def test_vocab_encodes_and_names_characters_outside_it():
    vocab = Vocab.from_texts(["one two", "three"])
    assert vocab.itos[0] == "<blank>" and vocab.itos[1] == " "
    assert vocab.decode(vocab.encode("two one")) == "two one"
    with pytest.raises(UserError, match=r"test.tsv:4: the transcript has characters '9', 'z' outside"):
        vocab.encode("one 9 z", where="test.tsv:4")
