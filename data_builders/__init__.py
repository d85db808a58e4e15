"""The algorithmic tasks as `datasets` builders, one module per task family, with their registry, dataset card and
Parquet export. Depends on `modeling_llama_delta` (the library's accounts, the reference semantics) only.

    from data_builders import load_task
    ds = load_task("sort", cache_dir="cache", examples_per_length=1000)  # a DatasetDict
    ds["train"][0]["question"]  # 'Sort the string "drslxjlq"'

| module | what |
|---|---|
| `common` | the column schema, the base config, seeded sampling, leakage-free splits, the cache key |
| `arithmetic`, `fibonacci`, `sequences` | the task families: how problems are drawn and phrased |
| `mixture` | `all`: every task the one model serves, in one dataset with a `task` column |
| `own_words` | `own_words()`: an evaluation set, the mixture's tasks in wordings no builder uses, 1x-4x sizes |
| `composition` | `compose`: two- and three-call questions, a main() of library calls, with a compositional split |
| `registry` | task name -> builder: `TASKS`, `get_builder`, `load_task` |
| `card`, `parquet` | the dataset card and the Parquet export (`export_dataset`, to disk or Hub): a config per task |
| `export` | its command line: `python -m data_builders.export --task sort --task arithmetic --out DIR` |
"""

from .arithmetic import ArithmeticBuilder, ArithmeticConfig
from .card import dataset_card
from .common import FEATURES, HELDOUT_SPLIT, AlgorithmicBuilder, AlgorithmicConfig, generator_hash, read_answer
from .fibonacci import FibonacciBuilder, FibonacciConfig
from .mixture import MIXTURE_TASKS, MixtureBuilder, MixtureConfig
from .own_words import OWN_WORDS_TEMPLATES, own_words
from .parquet import export_dataset
from .registry import TASKS, get_builder, load_task
from .sequences import NeuralComprehensionBuilder, SequenceConfig, SortBuilder, StringQuestionBuilder

__all__ = [
    "FEATURES",
    "HELDOUT_SPLIT",
    "MIXTURE_TASKS",
    "OWN_WORDS_TEMPLATES",
    "TASKS",
    "AlgorithmicBuilder",
    "AlgorithmicConfig",
    "ArithmeticBuilder",
    "ArithmeticConfig",
    "FibonacciBuilder",
    "FibonacciConfig",
    "MixtureBuilder",
    "MixtureConfig",
    "NeuralComprehensionBuilder",
    "SequenceConfig",
    "SortBuilder",
    "StringQuestionBuilder",
    "dataset_card",
    "export_dataset",
    "generator_hash",
    "get_builder",
    "load_task",
    "own_words",
    "read_answer",
]
