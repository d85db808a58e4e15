"""What every algorithmic data builder shares: the column schema, the base config, seeded sampling,
leakage-free splitting and the `datasets.GeneratorBasedBuilder` plumbing.

A family module (`arithmetic`, `fibonacci`, `sequences`) only says how to draw problems and phrase them;
everything about splits, caching and validation lives here so that every task gets the same guarantees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import random
from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence

import datasets

# Every task has the same columns, so task datasets can be concatenated for multi-task training.
# `answer_ids` is what Δ must produce: read it from registers (`answer_in == "register"`) or memory,
# starting at `answer_offset`, `len(answer_ids)` values. `memory` / `registers` are the values given to
# Δ at the start (the rest take ISA start values). Breakdown keys are -1 where they do not apply.
FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "answer_ids": datasets.List(datasets.Value("int32")),
        "program": datasets.Value("string"),
        "memory": datasets.List(datasets.Value("int32")),
        "registers": datasets.List(datasets.Value("int32")),
        "answer_in": datasets.Value("string"),
        "answer_offset": datasets.Value("int32"),
        "operation": datasets.Value("string"),
        "length": datasets.Value("int32"),
        "depth": datasets.Value("int32"),
        "task": datasets.Value("string"),
    }
)
ANSWER_PLACES = ("register", "memory")
# "fixed": every question uses the family's first (canonical) template as written; "varied": a training template
# per example, with the surface variations of `vary` and `quote`. Either way the `heldout_phrasing` split asks the
# test problems in templates no training question uses (`HELDOUT_SPLIT`).
PHRASINGS = ("fixed", "varied")
HELDOUT_SPLIT = "heldout_phrasing"
QUOTES = ('"', "'", "")  # a quoted input: either kind of quote, or none where that leaves it unambiguous
ENDINGS = ("", ".", "?", "!")  # a question's trailing punctuation


def make_example(
    question: str,
    answer: str,
    answer_ids: Sequence[int],
    program: str,
    memory: Sequence[int],
    registers: Sequence[int],
    answer_in: str,
    answer_offset: int,
    operation: str,
    length: int = -1,
    depth: int = -1,
) -> dict:
    """One row of `FEATURES`."""
    return {
        "question": question,
        "answer": answer,
        "answer_ids": list(answer_ids),
        "program": program,
        "memory": list(memory),
        "registers": list(registers),
        "answer_in": answer_in,
        "answer_offset": answer_offset,
        "operation": operation,
        "length": length,
        "depth": depth,
        "task": "",  # set by `AlgorithmicBuilder.make_splits`: the task (config) name
    }


def quote(value: str, rng: random.Random, bare: bool = True) -> str:
    """`value` in either kind of quote, or (when `bare` and it has no spaces) none."""
    kinds = QUOTES if bare and value and " " not in value else QUOTES[:2]
    mark = rng.choice(kinds)
    return f"{mark}{value}{mark}"


def vary(question: str, rng: random.Random) -> str:
    """Surface variation that keeps the input: the first letter's case and the trailing punctuation."""
    if rng.random() < 0.3 and question[:1].isupper():
        question = question[0].lower() + question[1:]
    if question[-1:] in ".?!" and question[-2:-1] != " ":  # "= ?" keeps its mark
        question = question[:-1] + rng.choice(ENDINGS)
    return question


def phrase(template: str, fields: dict, rng: random.Random, varied: bool, quoted: Sequence[str] = ("s",)) -> str:
    """`template` with `fields`; the `quoted` fields in quotes: double ones when not `varied` (the canonical
    form), else per `quote` (a field named in `quoted` that is a single character is always quoted)."""
    values = dict(fields)
    for name in quoted:
        if name in values:
            text = str(values[name])
            values[name] = f'"{text}"' if not varied else quote(text, rng, bare=len(text) > 1)
    question = template.format(**values)
    return vary(question, rng) if varied else question


def read_answer(example: dict, memory: Sequence[int], registers: Sequence[int]) -> list[int]:
    """The answer values of a final machine state, read where `example` says Δ leaves them."""
    if example["answer_in"] not in ANSWER_PLACES:
        raise ValueError(f"answer_in = {example['answer_in']!r}; allowed: {ANSWER_PLACES}")
    source = registers if example["answer_in"] == "register" else memory
    start = example["answer_offset"]
    return list(source[start : start + len(example["answer_ids"])])


def stream(seed: int, purpose: str) -> random.Random:
    """An independent seeded random stream per purpose, so that adding a draw in one place (say,
    phrasing) does not change what another (the problems, the splits) draws."""
    return random.Random(f"{seed}:{purpose}")


def sample_distinct(rng: random.Random, space: int, k: int) -> list[int]:
    """`k` distinct indices into `range(space)`, in draw order (works for spaces past 2**63)."""
    if k > space:
        raise ValueError(f"asked for {k} distinct problems, only {space} exist")
    if space <= 4 * k:
        return rng.sample(range(space), k)
    seen: set[int] = set()
    drawn: list[int] = []
    while len(drawn) < k:
        index = rng.randrange(space)
        if index not in seen:
            seen.add(index)
            drawn.append(index)
    return drawn


def assign_splits(
    groups: Sequence[Hashable], strata: Sequence[Hashable], fractions: dict[str, float], rng: random.Random
) -> list[str]:
    """A split name per item. Items sharing a group (the same question, or the same problem in another
    wording) always land in the same split, so nothing leaks; each stratum (operation, length, depth)
    is cut by `fractions` on its own, so every split sees every stratum in the same proportions."""
    members: dict[Hashable, dict[Hashable, list[int]]] = defaultdict(dict)
    for i, (group, stratum) in enumerate(zip(groups, strata, strict=True)):
        members[stratum].setdefault(group, []).append(i)
    names = list(fractions)
    out = [""] * len(groups)
    for stratum in sorted(members, key=repr):  # sorted: dict order must not depend on hashing
        stratum_groups = list(members[stratum].values())
        rng.shuffle(stratum_groups)
        total = sum(len(g) for g in stratum_groups)
        # Cumulative targets: the first split takes groups until it holds its share, and so on.
        targets = [round(total * sum(fractions[s] for s in names[: j + 1])) for j in range(len(names))]
        filled, j = 0, 0
        for group in stratum_groups:
            while j < len(names) - 1 and filled >= targets[j]:
                j += 1
            for i in group:
                out[i] = names[j]
            filled += len(group)
    return out


def check_int(name: str, value, low: int, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        allowed = f">= {low}" if high == math.inf else f"{low}..{high}"
        raise ValueError(f"{name} = {value!r} is not allowed: an integer {allowed}")


def check_choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name} = {value!r} is not allowed; choose from {tuple(allowed)}")


def check_int_tuple(name: str, values, low: int, high: float = math.inf, allow_empty: bool = False) -> tuple:
    """Validate a tuple of distinct integers (lists accepted) and return it as a tuple."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} = {values!r} is not allowed: a tuple of integers")
    values = tuple(values)
    if not values and not allow_empty:
        raise ValueError(f"{name} is empty: give at least one value")
    for i, v in enumerate(values):
        check_int(f"{name}[{i}]", v, low, high)
    if len(set(values)) != len(values):
        raise ValueError(f"{name} = {values!r} repeats a value")
    return values


@dataclasses.dataclass
class AlgorithmicConfig(datasets.BuilderConfig):
    """Knobs every task shares. Validated on construction, and again for overrides (see
    `AlgorithmicBuilder._create_builder_config`): a bad setting fails before anything is generated.

    Args:
        seed: every random draw (problems, wording, splits) derives from it.
        n: Δ's word size; answers are mod n and every value given to Δ is in 0..n-1.
        train_fraction, validation_fraction: shares of the in-distribution problems; the test split
            takes the rest (defaults 0.6 / 0.1 / 0.3: the paper's 70/30 train/test, with validation
            carved from the training share).
        phrasing: "varied" draws a question template per example, "fixed" uses the canonical one.
        heldout_phrasing_size: test problems asked again in held-out templates (the `heldout_phrasing` split; at
            most the test split's size). 0, the default for a single task, leaves the split out, so that a task's
            splits (and the runs evaluated on them) stay as they were; the `all` mixture asks for it.
    """

    seed: int = 0
    n: int = 128
    train_fraction: float = 0.6
    validation_fraction: float = 0.1
    phrasing: str = "varied"
    heldout_phrasing_size: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_int("seed", self.seed, 0)
        check_int("n", self.n, 2)
        check_choice("phrasing", self.phrasing, PHRASINGS)
        check_int("heldout_phrasing_size", self.heldout_phrasing_size, 0)
        for name in ("train_fraction", "validation_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} = {value!r} is not allowed: a number in [0, 1)")
        if self.train_fraction <= 0 or self.train_fraction + self.validation_fraction >= 1:
            raise ValueError(
                f"train_fraction = {self.train_fraction} and validation_fraction = {self.validation_fraction} "
                "leave no test split: need train_fraction > 0 and train + validation < 1"
            )

    @property
    def fractions(self) -> dict[str, float]:
        test = 1.0 - self.train_fraction - self.validation_fraction
        return {"train": self.train_fraction, "validation": self.validation_fraction, "test": test}

    def settings(self) -> dict:
        """The knobs (not datasets' bookkeeping fields), e.g. for the dataset card."""
        skip = {f.name for f in dataclasses.fields(datasets.BuilderConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


class AlgorithmicBuilder(datasets.GeneratorBasedBuilder):
    """Generates a task from its config; subclasses implement `generate`.

    `generate` returns (in-distribution items, out-of-distribution splits). An item is
    (group, stratum, example, heldout_question): `group` identifies the question up to wording (items of one
    group share a split), `stratum` is what the split is stratified by, `heldout_question` asks the same problem
    in a held-out template, or None where questions have no wording (the `heldout_phrasing` split draws from the
    test items). Out-of-distribution splits are used whole.
    """

    BUILDER_CONFIG_CLASS = AlgorithmicConfig
    VERSION = datasets.Version("1.0.0")
    TASK_NAME = "algorithmic"  # the cache folder name
    # What generates a family's rows beyond `SHARED_GENERATOR`: its functions, and the tables they read (templates,
    # operation sets). The cache key hashes exactly these and the config's settings (`generator_hash`).
    GENERATOR: tuple = ()

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("dataset_name", self.TASK_NAME)
        super().__init__(*args, **kwargs)

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        # datasets applies overrides to a named config with setattr, skipping __post_init__; rebuilding the
        # dataclass runs the checks again, so `Builder(config_name="sort", lengths=(0,))` fails right here.
        config, config_id = super()._create_builder_config(config_name, custom_features, config_id, **config_kwargs)
        config = dataclasses.replace(config)
        # The cache folder is name/config-id/version/hash. datasets' config id covers only the overrides, so the
        # hash covers every setting and the generating code: a change to either regenerates instead of serving
        # stale data, while moving a module or editing card text does not. (`_build_cache_dir` runs after this.)
        self.hash = generator_hash(type(self), config)
        return config, config_id

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=type(self).__doc__, features=FEATURES)

    def generate(self, config) -> tuple[list[tuple[Hashable, Hashable, dict]], dict[str, list[dict]]]:
        raise NotImplementedError

    def make_splits(self) -> dict[str, list[dict]]:
        """All splits as lists of rows, in generation order; every row's `task` is the config's name."""
        items, ood = self.generate(self.config)
        names = assign_splits(
            [group for group, _, _, _ in items],
            [stratum for _, stratum, _, _ in items],
            self.config.fractions,
            stream(self.config.seed, "splits"),
        )
        splits: dict[str, list[dict]] = {name: [] for name in self.config.fractions}
        for name, (_, _, example, _) in zip(names, items, strict=True):
            splits[name].append(example)
        if not splits["validation"]:
            del splits["validation"]  # validation_fraction = 0
        # Test problems in held-out wordings: the same groups as the test split, so no problem leaks into training.
        tests = [
            (example, heldout)
            for name, (_, _, example, heldout) in zip(names, items, strict=True)
            if name == "test" and heldout is not None  # None: a task without wording (the minimal network's)
        ]
        picked = stream(self.config.seed, HELDOUT_SPLIT).sample(
            range(len(tests)), min(self.config.heldout_phrasing_size, len(tests))
        )
        heldout = {HELDOUT_SPLIT: [{**tests[i][0], "question": tests[i][1]} for i in sorted(picked)]}
        out = {**splits, **({} if not heldout[HELDOUT_SPLIT] else heldout), **ood}
        task = self.config.name
        return {name: [{**row, "task": task} for row in rows] for name, rows in out.items()}

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        return [
            datasets.SplitGenerator(name=name, gen_kwargs={"examples": examples})
            for name, examples in self.make_splits().items()
        ]

    def _generate_examples(self, examples: list[dict]) -> Iterator[tuple[int, dict]]:
        yield from enumerate(examples)


# What every family's rows come from: the schema, the row maker, the seeded draws and the split assignment.
SHARED_GENERATOR = (
    FEATURES,
    make_example,
    stream,
    sample_distinct,
    quote,
    vary,
    phrase,
    QUOTES,
    ENDINGS,
    assign_splits,
    AlgorithmicConfig.fractions.fget,
    AlgorithmicBuilder.make_splits,
)


def generator_hash(builder: type[AlgorithmicBuilder], config: AlgorithmicConfig) -> str:
    """The datasets cache key of `config`'s data: a digest of the code that generates it (`SHARED_GENERATOR` and the
    family's `builder.GENERATOR`: functions by their source, tables by their repr) and of every setting.

    Neither file names nor the builders' docstrings (the dataset card's text) enter it, so moving or renaming a
    module, or editing a card, keeps the cached data; editing a template or a generating function regenerates it.
    """
    digest = hashlib.sha256()
    for part in (*SHARED_GENERATOR, *builder.GENERATOR):
        text = inspect.getsource(part) if inspect.isfunction(part) else repr(part)
        digest.update(text.encode())
    digest.update(json.dumps(config.settings(), sort_keys=True, default=list).encode())
    return digest.hexdigest()[:16]
