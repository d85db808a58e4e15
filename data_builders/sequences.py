"""Sequence tasks by length: character sorting (paper §4.3, Table 2) and, for comparison with Neural
Comprehension (CoNN), parity of a bit string, string reversal and multi-digit addition. Each has
in-distribution lengths (split train/validation/test) and longer held-out lengths (`ood_length_<L>`)."""

from __future__ import annotations

import dataclasses
import string
from typing import NamedTuple

from modeling_llama_delta.library import minimum_machine

from .common import (
    AlgorithmicBuilder,
    AlgorithmicConfig,
    check_choice,
    check_int,
    check_int_tuple,
    make_example,
    phrase,
    sample_distinct,
    stream,
)

# task -> the library program that solves it (calling conventions: each program's docstring in the library).
SOLVING_PROGRAM = {
    "sort": "sort",
    "reverse": "reverse",
    "count": "count",
    "strlen": "strlen",
    "parity": "parity",
    "addition": "add_digits",
}
STRING_TASKS = ("sort", "reverse", "count", "strlen")  # zero-terminated strings of code points from m[0]
# {s}: the input string or bit string (quoted by `phrase`: either kind of quote, or none); {c}: count's character
# (always quoted); {a}, {b}: the addition operands. The first template is the canonical one (sorting's is the
# paper's); the input sits at the start, middle or end, among extra words. HELDOUT_TEMPLATES ask the
# `heldout_phrasing` split only.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "sort": (
        "Sort the string {s}",
        "Sort the characters of {s} in alphabetical order.",
        "Put the letters of {s} in order.",
        "Arrange {s} alphabetically.",
        "{s}: sort its characters.",
        "Please sort the characters in {s} from a to z.",
        "Can you put the characters of the text {s} in ascending order?",
        "What do you get when you sort {s}?",
        "Alphabetize the characters of {s}, keeping repeats.",
        "I need {s} with its letters sorted.",
        "Return the sorted characters of {s}",
    ),
    "reverse": (
        "Reverse the string {s}",
        "Write {s} backwards.",
        "What is {s} reversed?",
        "{s}: reverse it.",
        "Please write the characters of {s} in reverse order.",
        "Can you spell {s} from the last character to the first?",
        "What does {s} look like read right to left?",
        "Flip the order of the characters in {s}.",
        "I need {s} reversed, character by character.",
        "Return {s} in reverse",
    ),
    "count": (
        "How many times does {c} occur in {s}?",
        "Count the occurrences of {c} in {s}.",
        "How many {c} characters are there in {s}?",
        "In {s}, how many times does {c} appear?",
        "{s}: count the {c} characters.",
        "Please count how often the character {c} appears in the string {s}.",
        "What is the number of {c} in {s}?",
        "Tell me how many {c} there are in the text {s}",
        "Count {c} in {s}",
        "Given the string {s}, how many characters are {c}?",
    ),
    "strlen": (
        "How long is the string {s}?",
        "What is the length of {s}?",
        "How many characters are in {s}?",
        "Count the characters of {s}.",
        "{s}: how many characters does it have?",
        "Please give the length of the string {s}.",
        "What is len({s})?",
        "Tell me the number of characters in the text {s}",
        "Find the length of {s}",
        "Given the string {s}, how many characters long is it?",
    ),
    "parity": (
        "What is the parity of the bit string {s}?",
        "Is the number of ones in {s} odd (1) or even (0)?",
        "Give the XOR of all bits in {s}.",
        "What is the parity of {s}?",
        "{s}: what is its parity?",
        "Please compute the parity of the bits {s}.",
        "XOR together the bits of {s}.",
        "Tell me whether {s} has an odd number of 1s (answer 1) or an even number (answer 0)",
        "Parity of the bits in {s}",
        "Given the bits {s}, what is their XOR?",
    ),
    "addition": (
        "What is {a} + {b}?",
        "Add {a} and {b}.",
        "Compute the sum of {a} and {b}.",
        "{a} plus {b} is?",
        "{a} + {b} = ?",
        "Please add {a} and {b}.",
        "What is the sum of the numbers {a} and {b}?",
        "Tell me {a} plus {b}",
        "Calculate {a} + {b}.",
        "If you add {a} and {b}, what do you get?",
    ),
}
HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "sort": (
        "Order the symbols of {s} from lowest to highest.",
        "Rearrange {s} so its letters ascend.",
        "Lexicographically sorted version of {s}?",
    ),
    "reverse": ("Mirror the text {s}.", "Give the characters of {s} last-to-first.", "Backwards spelling of {s}?"),
    "count": (
        "Occurrences of {c} within {s}?",
        "Tally the {c} symbols found in {s}.",
        "Within {s}, what is the frequency of {c}?",
    ),
    "strlen": ("Character count of {s}?", "Measure the size of {s} in characters.", "{s} has what length?"),
    "parity": (
        "Odd or even count of ones in {s}? Answer 1 or 0.",
        "Bitwise XOR reduction of {s}?",
        "Report the parity bit for {s}.",
    ),
    "addition": ("Total of {a} with {b}?", "Combine {a} and {b} by addition.", "Sum up {a} together with {b}."),
}


@dataclasses.dataclass
class SequenceConfig(AlgorithmicConfig):
    """Args:
    task: "sort", "reverse", "count", "strlen", "parity" or "addition".
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
        if not isinstance(self.separator, str) or set(self.separator) & set(elements + "\"'"):
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
            if ch in "\"'":
                raise ValueError(f"alphabet contains {ch!r}, which quotes the string in questions")

    def space(self, length: int) -> int:
        """Number of distinct inputs of `length`."""
        if self.task == "count":  # a string, and which character to count: one of its own, or any
            return len(self.alphabet) ** length * (length + 1)
        if self.task in STRING_TASKS:
            return len(self.alphabet) ** length
        if self.task == "parity":
            return 2**length
        low = 0 if length == 1 else 10 ** (length - 1)  # operands have exactly `length` digits
        return (10**length - low) ** 2


def code_points(text: str) -> list[int]:
    """A sequence as Δ holds it (the library's calling convention): its characters' code points."""
    return [ord(c) for c in text]


class Problem(NamedTuple):
    """One input of a sequence task: the question's fields, the answer, and Δ's row values (`memory` as the text
    whose code points, zero-terminated, Δ holds)."""

    fields: dict
    answer: str
    answer_ids: list
    memory: str
    registers: list
    answer_in: str


def sequence_problem(config: SequenceConfig, index: int, length: int) -> Problem:
    """Input number `index` (of `config.space(length)`) of `length`. Every input is a sequence in memory from m[0],
    as code points, zero-terminated (addition: A's digits, then B's, each terminated); count's character is a
    number, in r0."""
    task, sep = config.task, config.separator
    if task in STRING_TASKS:
        alphabet = config.alphabet
        index, which = divmod(index, length + 1) if task == "count" else (index, 0)
        chars = "".join(alphabet[(index // len(alphabet) ** i) % len(alphabet)] for i in range(length))
        fields = {"s": sep.join(chars)}
        if task == "count":  # the character: one of the string's own, or any (`which` = length)
            target = chars[which] if which < length else alphabet[index % len(alphabet)]
            count = chars.count(target)
            return Problem(fields | {"c": target}, str(count), [count], chars, [ord(target)], "register")
        if task == "strlen":
            return Problem(fields, str(length), [length], chars, [], "register")
        out = sorted(chars) if task == "sort" else chars[::-1]
        return Problem(fields, sep.join(out), code_points("".join(out)), chars, [], "memory")
    if task == "parity":
        bits = "".join(str((index >> (length - 1 - i)) & 1) for i in range(length))
        parity = bits.count("1") % 2
        return Problem({"s": sep.join(bits)}, str(parity), [parity], bits, [], "register")
    low = 0 if length == 1 else 10 ** (length - 1)
    a, b = divmod(index, 10**length - low)
    a, b = a + low, b + low
    fields = {"a": sep.join(str(a)), "b": sep.join(str(b))}
    total = code_points(str(a + b).zfill(length + 1))  # add_digits writes L+1 digits, the carry first
    return Problem(fields, sep.join(str(a + b)), total, f"{a}\0{b}", [], "memory")


def sequence_example(config: SequenceConfig, problem: Problem, length: int, question: str) -> dict:
    """The row of `problem` asked as `question`."""
    return make_example(
        question,
        problem.answer,
        problem.answer_ids,
        SOLVING_PROGRAM[config.task],
        code_points(problem.memory) + [0],  # zero-terminated
        problem.registers,
        problem.answer_in,
        0,  # every sequence answer starts at m[0]
        config.task,
        length=length,
    )


class SequenceBuilder(AlgorithmicBuilder):
    """Builds a `SequenceConfig`; splits are stratified by length."""

    BUILDER_CONFIG_CLASS = SequenceConfig

    def generate(self, config: SequenceConfig):
        problems, words = stream(config.seed, "problems"), stream(config.seed, "phrasing")
        varied = config.phrasing == "varied"
        quoted = ("s", "c")  # addition's numbers are written bare

        def ask(templates: tuple[str, ...], problem: Problem, varied: bool) -> str:
            template = words.choice(templates if varied else templates[:1])
            return phrase(template, problem.fields, words, varied, quoted)

        def draw(length: int, count: int) -> list[tuple[dict, str]]:
            drawn = []
            for index in sample_distinct(problems, config.space(length), count):
                problem = sequence_problem(config, index, length)
                row = sequence_example(config, problem, length, ask(TEMPLATES[config.task], problem, varied))
                drawn.append((row, ask(HELDOUT_TEMPLATES[config.task], problem, True)))
            return drawn

        items = []
        for length in config.lengths:
            for row, heldout in draw(length, config.examples_per_length):
                # The problem itself is the group: count's index space names some (string, character) pairs twice.
                items.append(((tuple(row["memory"]), tuple(row["registers"])), length, row, heldout))
        ood = {
            f"ood_length_{length}": [row for row, _ in draw(length, config.ood_examples_per_length)]
            for length in config.ood_lengths
        }
        return items, ood

    GENERATOR = (
        generate,
        sequence_problem,
        sequence_example,
        code_points,
        SequenceConfig.space,
        TEMPLATES,
        HELDOUT_TEMPLATES,
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


class StringQuestionBuilder(SequenceBuilder):
    """Questions about a string: `count` (how often a character occurs; Δ's input: the string zero-terminated from
    m[0], r0 = the character's code point; answer r0) and `strlen` (its length; answer r0). Lengths 8/10/12 with
    held-out 24/48 (2x and 4x the longest), in varied phrasings; an alphabet with " " gives strings with spaces."""

    BUILDER_CONFIGS = [
        SequenceConfig(
            name=task, version=AlgorithmicBuilder.VERSION, task=task, ood_lengths=(24, 48), phrasing="varied"
        )
        for task in ("count", "strlen")
    ]
    DEFAULT_CONFIG_NAME = "count"
    TASK_NAME = "string_questions"


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
            ood_lengths=(24, 32, 48, 64),
        ),
        SequenceConfig(
            name="addition",
            version=AlgorithmicBuilder.VERSION,
            task="addition",
            lengths=(3, 5, 8),
            ood_lengths=(12, 16, 24, 32),
            examples_per_length=5_000,
        ),
    ]
    DEFAULT_CONFIG_NAME = "parity"
    TASK_NAME = "neural_comprehension"
