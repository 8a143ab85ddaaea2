"""The embedded default corpus: the standard library's source, in a fixed order, cut at a fixed size."""
from recurrent.data import load_corpus
from recurrent.data.stdlib import stdlib_files, stdlib_text


def test_files_in_sorted_order_without_tests_or_packages(tmp_path):
    for rel in ["b.py", "a/z.py", "a/b.py", "test/test_x.py", "site-packages/pkg/m.py", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    assert [p.relative_to(tmp_path).as_posix() for p in stdlib_files(tmp_path)] == ["a/b.py", "a/z.py", "b.py"]


def test_text_is_cut_at_the_cap_and_skips_non_utf8(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n" * 10)
    (tmp_path / "b.py").write_bytes(b"\xff\xfe bad")
    (tmp_path / "c.py").write_text("y = 2\n" * 10)
    assert stdlib_text(max_chars=1000, root=tmp_path) == "x = 1\n" * 10 + "y = 2\n" * 10
    assert stdlib_text(max_chars=9, root=tmp_path) == "x = 1\nx ="


def test_the_real_default_is_python_and_reproducible():
    text = stdlib_text(max_chars=200_000)
    assert len(text) == 200_000 and text == stdlib_text(max_chars=200_000)
    assert "def " in text and "import " in text
    corpus = load_corpus()  # no data at all: the embedded default, split like any other text
    assert len(corpus.valid) > 0 and corpus.train.startswith(stdlib_text(max_chars=1000))
