"""The real Llama 3 tokenizer as a `PreTrainedTokenizerFast`, built offline from the `llama-models` wheel.

`pip install --no-deps llama-models` ships Meta's tiktoken BPE file (`llama_models/llama3/tokenizer.model`, 128,000
ranks) and the reference `Tokenizer` class, which defines the split regex and the 256 special tokens (ids 128,000 ..
128,255). We take all three from the reference class rather than copying them, convert with transformers'
`TikTokenConverter`, and let transformers install the BOS template post-processor (`add_bos_token=True`).

Converting takes ~2 s (the BPE merges are rebuilt from 128k ranks), so the result is saved once (`tokenizer.json`
is ~17 MB) and later calls reload it in about a second. The cache root is `$LLAMA_DELTA_CACHE` when set, else
`~/.cache/llama_delta`; the tokenizer lives in its `llama3_tokenizer/` folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

CACHE_ENV = "LLAMA_DELTA_CACHE"
LLAMA3_VOCAB_SIZE = 128_256
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
# Llama 3.1+ reserves this id for padding in fine-tuning (`Tokenizer.pad_id` in llama-models).
PAD_TOKEN = "<|finetune_right_pad_id|>"
MODEL_MAX_LENGTH = 131_072  # Llama 3.1/3.2 context length
_SAVED_FILE = "tokenizer.json"


def default_cache_dir() -> Path:
    """Folder holding the converted tokenizer: `$LLAMA_DELTA_CACHE/llama3_tokenizer` or `~/.cache/llama_delta/...`."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "llama_delta"
    return base / "llama3_tokenizer"


def _reference_module():
    """`llama_models.llama3.tokenizer`, imported lazily: `llama-models` is installed without its dependencies and
    only its tokenizer module (tiktoken) is safe to import here."""
    try:
        from llama_models.llama3 import tokenizer as reference_module
    except ImportError as error:
        raise ImportError(
            "The Llama 3 tokenizer needs the `llama-models` wheel: `pip install --no-deps llama-models`."
        ) from error
    return reference_module


def reference_tokenizer():
    """Meta's own tiktoken tokenizer (`llama_models.llama3.tokenizer.Tokenizer`), the parity reference."""
    return _reference_module().Tokenizer.get_instance()


def convert_llama3_tokenizer() -> PreTrainedTokenizerFast:
    """Build the fast tokenizer from `llama_models/llama3/tokenizer.model` (slow: rebuilds the BPE merges)."""
    reference = reference_tokenizer()
    model_path = Path(_reference_module().__file__).parent / "tokenizer.model"  # what `get_instance` reads
    # The special tokens in id order: the converter appends them after the 128,000 BPE ranks in list order.
    special_tokens = sorted(reference.special_tokens, key=reference.special_tokens.__getitem__)
    converter = TikTokenConverter(
        vocab_file=str(model_path), pattern=reference.pat_str, extra_special_tokens=special_tokens
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=converter.converted(),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        add_bos_token=True,  # transformers rebuilds the post-processor as the template "<|begin_of_text|> $A"
        add_eos_token=False,
        # The reference decodes bytes verbatim; clean-up (" ." -> ".") would break that (transformers also warns).
        clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
    )
    if len(tokenizer) != reference.n_words:
        raise RuntimeError(f"converted Llama 3 tokenizer has {len(tokenizer)} tokens, expected {reference.n_words}")
    for token, token_id in reference.special_tokens.items():
        if tokenizer.convert_tokens_to_ids(token) != token_id:
            raise RuntimeError(
                f"special token {token!r} got id {tokenizer.convert_tokens_to_ids(token)}, not {token_id}"
            )
    return tokenizer


def load_llama3_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """The Llama 3 tokenizer (128,256 tokens, prepends `<|begin_of_text|>`), converted once and then cached.

    `cache_dir` defaults to `default_cache_dir()`. The saved folder is a normal `save_pretrained` folder, so
    `AutoTokenizer.from_pretrained(cache_dir)` works too.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if (folder / _SAVED_FILE).is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        # transformers drops `add_bos_token` from saved configs (the template in tokenizer.json is the truth) and
        # reloads it as False; set it back so the attribute tells the truth (this rebuilds the same template).
        tokenizer.add_bos_token = True
        return tokenizer
    tokenizer = convert_llama3_tokenizer()
    # Save into a staging folder, then move the files in with tokenizer.json last: a concurrent reader takes the
    # presence of tokenizer.json to mean the folder is complete.
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    tokenizer.save_pretrained(staging)
    for child in sorted(staging.iterdir(), key=lambda path: path.name == _SAVED_FILE):
        os.replace(child, folder / child.name)
    staging.rmdir()
    return tokenizer
