"""Task -> Δ settings: which library programs to hold, how big the machine must be, how the head parses the
question and where the answer is read. Everything is derived from the generated data and the library's own
accounts (`library.memory_needed`, `library.step_bound`), so a new length or depth resizes Δ by itself.

    from llama_delta.task_settings import load_task_data, delta_settings
    data = load_task_data("sort", lengths=[8], ood_lengths=[12])
    settings = delta_settings("sort", data, tokenizer)  # a TaskSettings
    settings.delta_config  # {"delta_programs": {...}, "delta_memory_size": 13, ...} for build_delta_model
    settings.max_steps["ood_length_12"]  # Δ steps that split needs (the worst case of its longest input)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets

from data_builders import TASKS, load_task
from data_builders.mixture import MIXTURE_TASKS
from modeling_llama_delta.library import BINARY_PROGRAMS, LIBRARY, memory_needed, step_bound
from modeling_llama_delta.parsing import PARSE_MODES

# task -> the library Λ it gets by default: the program(s) its data needs (Δ runs every held program at every
# step, so each extra program multiplies Δ's cost); `--programs` adds distractors.
TASK_LIBRARY: dict[str, tuple[str, ...]] = {
    "arithmetic": BINARY_PROGRAMS,  # the paper's §4.2 calculator
    "fibonacci": ("fib_recursive",),  # §4.1: recursion through a stack in memory
    "fibonacci_linear": ("fib_linear",),  # reads x0, x1 once: trainable through Δ's soft run at any depth
    "sort": ("sort",),  # §4.3: insertion sort
    "sort_spaced": ("sort",),
    "count": ("count",),
    "strlen": ("strlen",),
    "parity": ("parity",),
    "reverse": ("reverse",),
    "addition": ("add_digits",),
}
# `all`: one model, the whole library its mixture's tasks need (data_builders/mixture.py).
TASK_LIBRARY["all"] = tuple(dict.fromkeys(name for task in MIXTURE_TASKS for name in TASK_LIBRARY[task]))
# The parse mode each task gets unless told otherwise: one vector carries two or three numbers (the paper's
# `last_token`); a string needs one cell per character, which `tokens` reads off the tokens themselves.
# arithmetic: slots that copy the attended numeral token (87.6% test vs ~11% for last_token in the same budget,
# README "Training"); fibonacci keeps the paper's last_token until measured.
# fibonacci_linear states the depth as a numeral, which `slots` copies (not measured yet).
# all: numbers (copied into registers) and sequences (copied into cells) in one pass, `mixed`.
DEFAULT_PARSE_MODE = {task: "tokens" for task in TASK_LIBRARY} | {
    "arithmetic": "slots",
    "fibonacci": "last_token",
    "fibonacci_linear": "slots",
    "all": "mixed",
}
# Δ runs exactly on this many sampled parses per example in training (score-function gradient) for the string
# tasks, whose programs run hundreds of steps: there Δ's soft run turns a 1e-5 parse uncertainty into a wrong
# answer (experiments/README.md); short programs (arithmetic, fibonacci) learn through the soft run.
# `all` samples too: with `enumerate` (its default) each sampled parse runs all 14 programs on the integer
# interpreter (B·S·P runs, about 2x a step of one program per parse).
DEFAULT_PARSE_SAMPLES = {"sort": 8, "sort_spaced": 8, "reverse": 8, "count": 8, "strlen": 8, "all": 4}
# How sampled parses choose their program in training (`delta_program_choice`; the rest: "sample"): with 14
# programs one sampled program per parse does not learn the selection (experiments/mixed_selection.py); every
# program per parse (each sample's marginal likelihood over the selection) learns it, slowly (README "One model").
DEFAULT_PROGRAM_CHOICE = {"all": "enumerate"}
# `delta_min_answer_probability` of the models trained here: of the default sort checkpoint's 30 silently wrong
# answers to the own-words questions, none had probability above 0.06 (README "Asked in other words").
MIN_ANSWER_PROBABILITY = 0.5
# task -> `delta_answer_format` (the rest: "integers"); `all`: each answer as its program writes it
# (`library.RESULTS`), read where that program leaves it (`delta_answer_source = "program"`).
TASK_ANSWER_FORMAT = {
    "sort": "string",
    "sort_spaced": "string",
    "reverse": "string",
    "addition": "digits",
    "all": "program",
}
# Tasks whose memory holds a string's characters, which `tokens` (and `mixed`) parsing copies from the tokens that
# spell them; `all`'s bit strings and numerals are characters too (the calling convention's code points).
SPELLED_TASKS = ("sort", "sort_spaced", "reverse", "count", "strlen", "all")
# Which dataset config fields the generic size knobs map to, per builder family.
_SIZE_FIELDS = {
    "arithmetic": {"dataset_size": "size"},
    "fibonacci": {
        "lengths": "depths",
        "ood_lengths": "ood_depths",
        "dataset_size": "examples_per_depth",
        "ood_size": "ood_examples_per_depth",
    },
    "sequence": {
        "lengths": "lengths",
        "ood_lengths": "ood_lengths",
        "dataset_size": "examples_per_length",
        "ood_size": "ood_examples_per_length",
    },
    # each task of the mixture keeps its own lengths (data_builders/mixture.py): only the sizes are knobs
    "mixture": {"dataset_size": "examples_per_task", "ood_size": "ood_examples"},
}


def task_family(task: str) -> str:
    """`arithmetic`, `fibonacci`, `sequence` (the string and digit tasks) or `mixture` (`all`): which dataset knobs
    apply."""
    if task not in TASK_LIBRARY:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASK_LIBRARY)}")
    if task == "all":
        return "mixture"
    return task if task == "arithmetic" else "fibonacci" if task.startswith("fibonacci") else "sequence"


def dataset_overrides(
    task: str,
    lengths: Sequence[int] | None = None,
    ood_lengths: Sequence[int] | None = None,
    dataset_size: int | None = None,
    ood_size: int | None = None,
    dataset_kwargs: str | dict | None = None,
    seed: int = 0,
    word_size: int = 128,
) -> dict:
    """Builder overrides from the script's generic knobs (`lengths` are depths for fibonacci; `dataset_size` is
    examples per length/depth, or the number of problems for arithmetic) plus `dataset_kwargs` (a JSON object
    of any other config field). A knob that does not apply to the task is an error, not silently ignored."""
    family = task_family(task)
    knobs = {"lengths": lengths, "ood_lengths": ood_lengths, "dataset_size": dataset_size, "ood_size": ood_size}
    overrides: dict = {"seed": seed, "n": word_size}
    for knob, value in knobs.items():
        if value is None:
            continue
        if knob not in _SIZE_FIELDS[family]:
            what = "each of its tasks keeps its own lengths" if family == "mixture" else "it has no lengths or depths"
            raise ValueError(f"--{knob} does not apply to task {task!r} ({what})")
        overrides[_SIZE_FIELDS[family][knob]] = tuple(value) if isinstance(value, (list, tuple)) else value
    if dataset_kwargs:
        extra = json.loads(dataset_kwargs) if isinstance(dataset_kwargs, str) else dict(dataset_kwargs)
        if not isinstance(extra, dict):
            raise ValueError(f"dataset_kwargs = {dataset_kwargs!r} must be a JSON object of dataset config fields")
        overrides.update({key: tuple(v) if isinstance(v, list) else v for key, v in extra.items()})
    return overrides


def load_task_data(task: str, cache_dir: str | None = None, **knobs) -> datasets.DatasetDict:
    """`data_builders.load_task(task)` with the generic knobs of `dataset_overrides` applied."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASK_LIBRARY)}")
    return load_task(task, cache_dir=cache_dir, **dataset_overrides(task, **knobs))


def example_sizes(split: datasets.Dataset) -> list[int]:
    """The `size` the library's accounts take, per row: its depth, its length, or 0 (one-step arithmetic)."""
    return [
        depth if depth >= 0 else max(length, 0) for length, depth in zip(split["length"], split["depth"], strict=True)
    ]


def split_step_bound(split: datasets.Dataset) -> int:
    """Δ steps that let every example of `split` halt: the library's worst case for its longest input."""
    sizes = set(zip(split["program"], example_sizes(split), strict=True))
    return max(step_bound(program, size) for program, size in sizes)


def input_spans(question: str, memory: Sequence[int]) -> list[tuple[int, int]]:
    """Where the sequences of a row's `memory` (zero-terminated, one after another) are written in its question:
    each as the first match not inside a word, allowing one separator (" ") between elements (sort_spaced)."""
    spans, start = [], 0
    for sequence in "".join(chr(v) for v in memory).split("\0")[:-1]:
        pattern = r"\s?".join(re.escape(c) for c in sequence)
        match = re.compile(rf"(?<![A-Za-z0-9])(?:{pattern})(?![A-Za-z0-9])").search(question, start)
        if not sequence or match is None:
            continue
        spans.append(match.span())
        start = match.end()
    return spans


def elements_per_token(split: datasets.Dataset, tokenizer) -> int:
    """The most input elements (the characters of the string, bit string or numerals in memory) that one token of
    the tokenizer spells on `split`: what `tokens` parsing needs as `delta_elements_per_token`."""
    most = 1
    questions = list(split["question"])
    offsets = tokenizer(questions, return_offsets_mapping=True)["offset_mapping"]
    for question, memory, token_spans in zip(questions, split["memory"], offsets, strict=True):
        # Element characters: inside an input span and not a separator (spaces in sort_spaced).
        spans = input_spans(question, memory)
        elements = {i for start, end in spans for i in range(start, end) if question[i] != " " or 32 in memory}
        for start, end in token_spans:
            most = max(most, sum(i in elements for i in range(start, end)))
    return most


@dataclass
class TaskSettings:
    """What a task needs from Δ: `delta_config` (fields for `build_delta_model`), the Δ steps per split, and the
    measurements behind them (reported in the results and the model card)."""

    task: str
    delta_config: dict
    max_steps: dict[str, int] = field(default_factory=dict)
    measured: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """JSON-ready summary (the library as program names, not sources)."""
        # The library as names and the token table as its size (`measured`): both are long, and in config.json.
        config = {k: v for k, v in self.delta_config.items() if k not in ("delta_programs", "delta_token_values")}
        return {
            "programs": sorted(self.delta_config["delta_programs"]),
            **config,
            "max_steps": self.max_steps,
            **self.measured,
        }


def numeral_token_values(tokenizer, n: int) -> dict[str, int]:
    """Token id -> value for every value in 0..n-1 that the tokenizer spells as one token (Llama 3: all of them;
    a digit-by-digit tokenizer: 0..9, which `slots` reads as digits of one numeral). What `slots` parsing copies
    (`delta_token_values`)."""
    table = {}
    for value in range(n):
        ids = tokenizer(str(value), add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            table[str(ids[0])] = value
    return table


def spelled_token_values(tokenizer, n: int, most: int, separators: str = "") -> dict[str, list[int]]:
    """Token id -> the code points it spells, for every token whose text, `separators` removed, is 1..`most`
    characters, all below `n` ("abc" -> [97, 98, 99]; " the" -> [32, 116, 104, 101]; " w" -> [119] with
    separator " "). What `tokens` parsing copies for string tasks (`delta_token_values`): which of these tokens
    are the string's elements (not " the", not the quotes) is what the gates learn."""
    table = {}
    for token_id in range(len(tokenizer)):
        text = "".join(c for c in tokenizer.decode([token_id]) if c not in separators)
        if 1 <= len(text) <= most and all(0 < ord(c) < n for c in text):
            table[str(token_id)] = [ord(c) for c in text]
    return table


def delta_settings(
    task: str,
    data: datasets.DatasetDict,
    tokenizer=None,
    programs: Sequence[str] | None = None,
    parse_mode: str | None = None,
    word_size: int = 128,
    num_registers: int = 8,
    alu: str = "structured",
    checkpoint_steps: int = 0,
    parse_samples: int | None = None,
    program_choice: str | None = None,
) -> TaskSettings:
    """Δ settings for `task` that fit every split of `data` (training and every split evaluated).

    Memory: the library's `memory_needed` for the longest input (the terminator included) and at least the
    input cells and answer. Input cells / registers: the longest `memory` / `registers` row. Answer: where the
    data says (offset 0), as long as the longest answer. `delta_max_steps`: the largest split's step bound (saved
    with the model, so that `solve` handles the held-out lengths); `max_steps` has each split's own bound.
    `tokens` parsing measures `delta_elements_per_token` on the data with `tokenizer`. `parse_samples`: None for
    the task's default (`DEFAULT_PARSE_SAMPLES`); `program_choice`: None for the task's (`DEFAULT_PROGRAM_CHOICE`).
    """
    family = task_family(task)
    programs = tuple(programs) if programs else TASK_LIBRARY[task]
    unknown = [name for name in programs if name not in LIBRARY]
    if unknown:
        raise ValueError(f"unknown library programs {unknown}; known: {', '.join(LIBRARY)}")
    parse_mode = parse_mode or DEFAULT_PARSE_MODE[task]
    if parse_mode not in PARSE_MODES:
        raise ValueError(f"parse mode {parse_mode!r} is not one of {', '.join(PARSE_MODES)}")
    rows = datasets.concatenate_datasets(list(data.values()))
    needed = sorted(set(rows["program"]))
    missing = [name for name in needed if name not in programs]
    if missing:
        raise ValueError(f"task {task!r} needs library programs {missing}; the library holds {list(programs)}")
    places = set(rows["answer_in"])
    if set(rows["answer_offset"]) != {0}:
        raise ValueError(f"task {task!r}: answers must all start at index 0; got offsets {set(rows['answer_offset'])}")
    if TASK_ANSWER_FORMAT.get(task) == "program":
        answer_source = "program"  # each answer where its program leaves it (registers or memory)
    elif len(places) == 1:
        answer_source = "registers" if places == {"register"} else "memory"
    else:
        raise ValueError(f"task {task!r}: answers must all be in one place; got {places}")
    input_cells = max(len(m) for m in rows["memory"])
    input_registers = max(len(r) for r in rows["registers"])
    answer_length = max(len(a) for a in rows["answer_ids"])
    sizes = example_sizes(rows)
    longest = max(sizes)
    # Each program's memory for its own longest input (a mixture's longest string is not its longest numeral).
    memory_size = max(
        [input_cells, 1] + [memory_needed(name, size) for name, size in set(zip(rows["program"], sizes, strict=True))]
    )
    if answer_source != "registers":
        memory_size = max(memory_size, answer_length)
    measured: dict = {"longest_input": longest}
    per_token = 1
    reads_elements = parse_mode in ("tokens", "mixed")  # cells read off the tokens: k elements per token
    if reads_elements:
        if family not in ("sequence", "mixture"):
            raise ValueError(f"parse mode {parse_mode!r} reads input elements from a string; task {task!r} has none")
        if tokenizer is None:
            raise ValueError(f"parse mode {parse_mode!r} needs the tokenizer to measure delta_elements_per_token")
        per_token = elements_per_token(rows, tokenizer)
        measured["longest_token_elements"] = per_token
        # The model's `tokens` parser needs at least one last-token register output (a zero-sized one fails to
        # reshape); programs set every scratch register they read, so a spare input register is harmless.
        input_registers = max(input_registers, 1)
    elif family in ("sequence", "mixture"):
        raise ValueError(f"task {task!r} parses strings into memory cells: use parse mode 'tokens' or 'mixed'")
    token_values = None
    if reads_elements and task in SPELLED_TASKS:
        # Strings hold code points: a token's characters are its elements, copied rather than classified.
        elements = {value for row in rows["memory"] for value in row if value}
        written = {
            question[i]
            for question, memory in zip(rows["question"], rows["memory"], strict=True)
            for start, end in input_spans(question, memory)
            for i in range(start, end)
        }
        separators = "".join(sorted(c for c in written if ord(c) not in elements))  # " " for sort_spaced
        token_values = spelled_token_values(tokenizer, word_size, per_token, separators)
        measured["spelling_tokens"] = len(token_values)
    if parse_mode == "slots" and tokenizer is not None:
        token_values = numeral_token_values(tokenizer, word_size)  # numbers in the question are copied, not guessed
        measured["numeral_tokens"] = len(token_values)
    max_steps = {name: split_step_bound(split) for name, split in data.items()}
    samples = DEFAULT_PARSE_SAMPLES.get(task, 0) if parse_samples is None else parse_samples
    delta_config = {
        "delta_programs": {name: LIBRARY[name] for name in programs},
        "delta_word_size": word_size,
        "delta_num_registers": num_registers,
        "delta_memory_size": memory_size,
        "delta_max_steps": max(max_steps.values()),
        "delta_alu": alu,
        "delta_parse_mode": parse_mode,
        "delta_elements_per_token": per_token,
        "delta_token_values": token_values,
        "delta_input_cells": input_cells,
        "delta_input_registers": input_registers,
        "delta_answer_source": answer_source,
        "delta_answer_length": answer_length,
        "delta_answer_format": TASK_ANSWER_FORMAT.get(task, "integers"),  # "program" goes with source "program"
        "delta_checkpoint_steps": min(checkpoint_steps, max(max_steps.values())),
        "delta_parse_samples": samples,
        # solve refuses an answer the model is unsure of (probability < 1/2) rather than guess
        "delta_min_answer_probability": MIN_ANSWER_PROBABILITY,
        # enumerating programs is a way of training on sampled parses: without them, the default stays "sample"
        "delta_program_choice": program_choice or (DEFAULT_PROGRAM_CHOICE.get(task, "sample") if samples else "sample"),
    }
    return TaskSettings(task, delta_config, max_steps, measured)


__all__ = [
    "TASK_ANSWER_FORMAT",
    "DEFAULT_PARSE_MODE",
    "DEFAULT_PARSE_SAMPLES",
    "DEFAULT_PROGRAM_CHOICE",
    "SPELLED_TASKS",
    "TASK_LIBRARY",
    "TaskSettings",
    "dataset_overrides",
    "numeral_token_values",
    "spelled_token_values",
    "delta_settings",
    "elements_per_token",
    "example_sizes",
    "input_spans",
    "load_task_data",
    "split_step_bound",
    "task_family",
]
