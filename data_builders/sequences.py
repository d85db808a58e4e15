"""Sequence tasks by length: character sorting (paper §4.3, Table 2) and, for comparison with Neural
Comprehension (CoNN), parity of a bit string, string reversal and multi-digit addition. Each has
in-distribution lengths (split train/validation/test) and longer held-out lengths (`ood_length_<L>`)."""

from __future__ import annotations

import dataclasses
import string

from modeling_llama_delta.library import minimum_machine

from .common import (
    AlgorithmicBuilder,
    AlgorithmicConfig,
    check_choice,
    check_int,
    check_int_tuple,
    make_example,
    sample_distinct,
    stream,
)

# task -> the library program that solves it (calling conventions: each program's docstring in the library).
SOLVING_PROGRAM = {"sort": "sort", "reverse": "reverse", "parity": "parity", "addition": "add_digits"}
STRING_TASKS = ("sort", "reverse")  # zero-terminated strings of code points from m[0]
# {s}: the input; {a}, {b}: the addition operands. The first template is the canonical one; sorting's is the paper's.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "sort": (
        'Sort the string "{s}"',
        'Sort the characters of "{s}" in alphabetical order.',
        'Put the letters of "{s}" in order.',
        'Arrange "{s}" alphabetically.',
    ),
    "reverse": ('Reverse the string "{s}"', 'Write "{s}" backwards.', 'What is "{s}" reversed?'),
    "parity": (
        'What is the parity of the bit string "{s}"?',
        'Is the number of ones in "{s}" odd (1) or even (0)?',
        'Give the XOR of all bits in "{s}".',
    ),
    "addition": ("What is {a} + {b}?", "Add {a} and {b}.", "Compute the sum of {a} and {b}.", "{a} plus {b} is?"),
}


@dataclasses.dataclass
class SequenceConfig(AlgorithmicConfig):
    """Args:
    task: "sort", "reverse", "parity" or "addition".
    lengths: in-distribution lengths (characters, bits, or digits per addition operand).
    ood_lengths: longer held-out lengths, one test split each (`ood_length_<L>`).
    examples_per_length, ood_examples_per_length: distinct inputs per length.
    alphabet: the characters of sort/reverse strings (code points 1..n-1, Δ's values).
    separator: put between elements in question and answer text; " " makes the task
        tokenisation-neutral (one character per token), since the paper blames BPE for its sorting result.
    """

    task: str = "sort"
    lengths: tuple = (8, 10, 12)
    ood_lengths: tuple = (16, 24)
    examples_per_length: int = 10_000
    ood_examples_per_length: int = 1_000
    alphabet: str = string.ascii_lowercase
    separator: str = ""
    phrasing: str = "fixed"

    def __post_init__(self):
        super().__post_init__()
        check_choice("task", self.task, tuple(SOLVING_PROGRAM))
        n, task, program = self.n, self.task, SOLVING_PROGRAM[self.task]
        self.lengths = check_int_tuple("lengths", self.lengths, 1)
        self.ood_lengths = check_int_tuple("ood_lengths", self.ood_lengths, 1, allow_empty=True)
        for length in self.lengths + self.ood_lengths:
            # The library's own account of what a length needs: memory cells, ROM lines, the length as a value.
            need = minimum_machine(program, length).n
            if need > n:
                raise ValueError(
                    f"length {length} is too long for n = {n}: library program {program!r} needs word size "
                    f"n >= {need} at that length (memory cells, ROM lines, the length as a value)"
                )
        if set(self.lengths) & set(self.ood_lengths):
            raise ValueError(f"lengths {self.lengths} and ood_lengths {self.ood_lengths} overlap")
        if task in STRING_TASKS:
            self._check_alphabet()
        elements = self.alphabet if task in STRING_TASKS else ("01" if task == "parity" else string.digits)
        if not isinstance(self.separator, str) or set(self.separator) & set(elements + '"'):
            raise ValueError(
                f"separator = {self.separator!r} is not allowed: a string without quotes or {task} elements"
            )
        check_int("examples_per_length", self.examples_per_length, 1)
        check_int("ood_examples_per_length", self.ood_examples_per_length, 1)
        for name, lengths, count in (
            ("examples_per_length", self.lengths, self.examples_per_length),
            ("ood_examples_per_length", self.ood_lengths, self.ood_examples_per_length),
        ):
            for length in lengths:
                if count > self.space(length):
                    raise ValueError(
                        f"{name} = {count} is more than the {self.space(length)} distinct {task} inputs of length "
                        f"{length}: lower it or drop that length"
                    )

    def _check_alphabet(self) -> None:
        if not isinstance(self.alphabet, str) or not self.alphabet:
            raise ValueError(f"alphabet = {self.alphabet!r} is not allowed: a non-empty string")
        if len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"alphabet = {self.alphabet!r} repeats a character")
        for ch in self.alphabet:
            if not 1 <= ord(ch) <= self.n - 1:
                raise ValueError(
                    f"alphabet character {ch!r} has code point {ord(ch)}, outside Δ's values 1..{self.n - 1} "
                    f"(n = {self.n}): raise n or use characters with smaller code points"
                )
            if ch == '"':
                raise ValueError("alphabet contains '\"', which quotes the string in questions")

    def space(self, length: int) -> int:
        """Number of distinct inputs of `length`."""
        if self.task in STRING_TASKS:
            return len(self.alphabet) ** length
        if self.task == "parity":
            return 2**length
        low = 0 if length == 1 else 10 ** (length - 1)  # operands have exactly `length` digits
        return (10**length - low) ** 2


def code_points(text: str) -> list[int]:
    """A sequence as Δ holds it (the library's calling convention): its characters' code points."""
    return [ord(c) for c in text]


def sequence_example(config: SequenceConfig, index: int, length: int, template: str) -> dict:
    """The example for input number `index` (of `config.space(length)`) of `length`. Every input is a sequence in
    memory from m[0], as code points, zero-terminated (addition: A's digits, then B's, each terminated)."""
    task, sep, program = config.task, config.separator, SOLVING_PROGRAM[config.task]
    if task in STRING_TASKS:
        alphabet = config.alphabet
        chars = [alphabet[(index // len(alphabet) ** i) % len(alphabet)] for i in range(length)]
        out = sorted(chars) if task == "sort" else chars[::-1]
        return make_example(
            template.format(s=sep.join(chars)),
            sep.join(out),
            code_points("".join(out)),
            program,
            code_points("".join(chars)) + [0],
            [],
            "memory",
            0,
            task,
            length=length,
        )
    if task == "parity":
        bits = "".join(str((index >> (length - 1 - i)) & 1) for i in range(length))
        parity = bits.count("1") % 2
        return make_example(
            template.format(s=sep.join(bits)), str(parity), [parity], program, code_points(bits) + [0], [],
            "register", 0, task, length=length,
        )  # fmt: skip
    low = 0 if length == 1 else 10 ** (length - 1)
    a, b = divmod(index, 10**length - low)
    a, b = a + low, b + low
    text = {"a": sep.join(str(a)), "b": sep.join(str(b))}
    return make_example(
        template.format(**text),
        sep.join(str(a + b)),
        code_points(str(a + b).zfill(length + 1)),  # add_digits writes L+1 digits, the carry first, from m[0]
        program,
        code_points(str(a)) + [0] + code_points(str(b)) + [0],
        [],
        "memory",
        0,
        task,
        length=length,
    )


class SequenceBuilder(AlgorithmicBuilder):
    """Builds a `SequenceConfig`; splits are stratified by length."""

    BUILDER_CONFIG_CLASS = SequenceConfig

    def generate(self, config: SequenceConfig):
        problems, words = stream(config.seed, "problems"), stream(config.seed, "phrasing")
        templates = TEMPLATES[config.task] if config.phrasing == "varied" else TEMPLATES[config.task][:1]

        def draw(length: int, count: int) -> list[tuple[int, dict]]:
            indices = sample_distinct(problems, config.space(length), count)
            return [(i, sequence_example(config, i, length, words.choice(templates))) for i in indices]

        items = []
        for length in config.lengths:
            items += [((length, i), length, example) for i, example in draw(length, config.examples_per_length)]
        ood = {
            f"ood_length_{length}": [example for _, example in draw(length, config.ood_examples_per_length)]
            for length in config.ood_lengths
        }
        return items, ood

    GENERATOR = (
        generate,
        sequence_example,
        code_points,
        SequenceConfig.space,
        TEMPLATES,
        SOLVING_PROGRAM,
        STRING_TASKS,
    )


class SortBuilder(SequenceBuilder):
    """Character-level sorting, 'Sort the string "dlifdbabejld"' -> "abbdddefijll" (paper §4.3), lengths
    8/10/12 with held-out 16/24; `sort_spaced` separates characters by spaces. Δ's input: the string
    zero-terminated from m[0]; its answer: m[0..L-1]."""

    BUILDER_CONFIGS = [
        SequenceConfig(name="sort", version=AlgorithmicBuilder.VERSION),
        SequenceConfig(name="sort_spaced", version=AlgorithmicBuilder.VERSION, separator=" "),
    ]
    DEFAULT_CONFIG_NAME = "sort"
    TASK_NAME = "sort"


class NeuralComprehensionBuilder(SequenceBuilder):
    """The Neural Comprehension (CoNN) comparison tasks: `parity` (the bits as characters '0'/'1', zero-terminated
    from m[0]; answer r0), `reverse` (zero-terminated string from m[0]; answer m[0..L-1]) and `addition` (A's
    digit characters, most significant first, zero-terminated from m[0], then B's; answer: the L+1 digit
    characters of A + B at m[0..L], the carry first)."""

    BUILDER_CONFIGS = [
        SequenceConfig(
            name="parity",
            version=AlgorithmicBuilder.VERSION,
            task="parity",
            lengths=(10, 12, 14, 16),
            ood_lengths=(24, 32, 64),
            examples_per_length=1_000,
        ),
        SequenceConfig(
            name="reverse",
            version=AlgorithmicBuilder.VERSION,
            task="reverse",
            lengths=(8, 12, 16),
            ood_lengths=(24, 32, 48),
        ),
        SequenceConfig(
            name="addition",
            version=AlgorithmicBuilder.VERSION,
            task="addition",
            lengths=(3, 5, 8),
            ood_lengths=(12, 16, 24),
            examples_per_length=5_000,
        ),
    ]
    DEFAULT_CONFIG_NAME = "parity"
    TASK_NAME = "neural_comprehension"
