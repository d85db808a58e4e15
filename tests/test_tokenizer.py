"""The converted Llama 3 tokenizer must agree token for token with Meta's tiktoken reference."""

from pathlib import Path

import pytest

from llama_delta import tokenizer as llama3

PARITY_STRINGS = [
    "",
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    'Sort the string "dlifdbabejld"',
    "What is 17 times 5?",
    "What is 123456789 plus 987654321?",
    "Reverse the string 'abc' and count the letter 'a' in \"banana\".",
    "3.14159 2.71828 1e-10 -42 +7 0x1F 1,000,000",
    "I'm sure they'll say it's what we'd've done; DON'T SHOUT, I'M HERE.",
    "    leading spaces and trailing spaces    ",
    "tabs\tand\t\tnewlines\n\nand\r\nwindows line endings\r\n",
    "a" + " " * 17 + "b" + "\n" * 5 + "c",
    "\n\n\n",
    "          ",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product",
    "x = {'key': [1, 2, 3], \"other\": None}  # dict literal",
    "Ünïcödé: café naïve façade résumé Zürich",
    "中文文本：今天天气很好。日本語のテキストです。한국어 텍스트",
    "Emoji: 🦙🚀🔥 and a family 👨‍👩‍👧‍👦 with ZWJ",
    "Русский текст и ελληνικά γράμματα",
    "عربى نص من اليمين إلى اليسار עברית",
    "Math: ∑_{i=1}^{n} i² = n(n+1)/2, ∀x ∈ ℝ, √2 ≈ 1.414",
    "URL https://example.com/path?query=1&other=two#frag and email a.b@c.org",
    '<html><body><p class="x">Tags &amp; entities</p></body></html>',
    "mov r0, r1\nadd r0, r0, r2\njz r3, loop\nret r7",
    'fib(0, 1, 10) = 89; strlen("hello") = 5; sort([3, 1, 2]) = [1, 2, 3]',
    "Compute the parity of the bits 1 0 1 1 0 1.",
    "Add the numbers 5821 and 4179, digit by digit.",
    "   \t  \n  mixed   whitespace\u00a0non-breaking\u2009thin\u3000ideographic",
    "0123456789" * 5,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "A sentence with a trailing space ",
    "!!!???...---___***",
]


@pytest.fixture(scope="module")
def reference():
    return llama3.reference_tokenizer()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("llama3_tokenizer")


@pytest.fixture(scope="module")
def converted(cache_dir):
    return llama3.load_llama3_tokenizer(cache_dir)  # empty folder: converts and saves


@pytest.fixture(scope="module")
def reloaded(cache_dir, converted):
    return llama3.load_llama3_tokenizer(cache_dir)  # saved folder: reloads


@pytest.fixture(params=["converted", "reloaded"])
def fast(request):
    return request.getfixturevalue(request.param)


def test_vocab_and_special_tokens(fast, reference):
    assert len(fast) == llama3.LLAMA3_VOCAB_SIZE == reference.n_words
    assert fast.bos_token_id == reference.bos_id
    assert fast.eos_token_id == reference.eos_id
    assert fast.pad_token_id == reference.pad_id
    assert fast.add_bos_token
    for token, token_id in reference.special_tokens.items():
        assert fast.convert_tokens_to_ids(token) == token_id


@pytest.mark.parametrize("text", PARITY_STRINGS)
def test_token_parity_with_reference(fast, reference, text):
    assert fast(text).input_ids == reference.encode(text, bos=True, eos=False)
    ids = fast(text, add_special_tokens=False).input_ids
    assert ids == reference.encode(text, bos=False, eos=False)
    assert fast.decode(ids) == reference.decode(ids) == text


def test_batch_parity_and_bos_decode(fast, reference):
    batch = fast(PARITY_STRINGS).input_ids
    assert batch == [reference.encode(text, bos=True, eos=False) for text in PARITY_STRINGS]
    assert [fast.decode(ids, skip_special_tokens=True) for ids in batch] == PARITY_STRINGS
    assert fast.decode(batch[1]) == "<|begin_of_text|>" + PARITY_STRINGS[1]


def test_bos_toggle(fast):
    fast.add_bos_token = False
    try:
        assert fast("What is 17 times 5?").input_ids[0] != fast.bos_token_id
    finally:
        fast.add_bos_token = True
    assert fast("What is 17 times 5?").input_ids[0] == fast.bos_token_id


def test_cached_folder_is_reused(cache_dir, converted, monkeypatch):
    assert (cache_dir / "tokenizer.json").stat().st_size > 10_000_000
    assert not [path for path in cache_dir.iterdir() if path.name.startswith(".staging-")]

    def fail():
        raise AssertionError("a saved tokenizer must be reloaded, not converted again")

    monkeypatch.setattr(llama3, "convert_llama3_tokenizer", fail)
    assert len(llama3.load_llama3_tokenizer(cache_dir)) == llama3.LLAMA3_VOCAB_SIZE


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(llama3.CACHE_ENV, str(tmp_path))
    assert llama3.default_cache_dir() == tmp_path / "llama3_tokenizer"
    monkeypatch.delenv(llama3.CACHE_ENV)
    assert llama3.default_cache_dir() == Path.home() / ".cache" / "llama_delta" / "llama3_tokenizer"
