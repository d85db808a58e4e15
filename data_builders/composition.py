"""`compose`: questions that need two or three library programs, answered by a main() that chains them (issue #17).

Each composition is a main(): its calls in order and, per call, where each input register comes from (a number of
the question, or the previous call's result r0; `modeling_llama_delta.composition`). A sequence stays in Δ's
memory from call to call, so "sort, then reverse" reverses the sorted string. Every answer is the chained run of
the library programs in the reference interpreter (`run_main_reference`), the semantics Δ runs.

The compositional split: `test_unseen_composition` asks call sequences that no train / validation question uses
(each has a pair of consecutive calls that never follows in training), built from programs that all occur in
training; `heldout_phrasing` asks test problems of the seen compositions in templates no training question uses.

The issue's "the sum of two multi-digit numbers then its parity" is not here: `parity` counts the '1' characters
of a bit string, so after `add_digits` it would give the parity of the number of 1 digits in the decimal sum, not
of the sum. "Count a digit of the sum" (`add_digits` then `count`) takes its place. Sums are drawn with a carry
out, so the L + 1 digits `add_digits` writes are the sum's own digits (no leading 0).
"""

from __future__ import annotations

import dataclasses
import random
import string
from typing import NamedTuple

import datasets

from modeling_llama_delta.composition import PREVIOUS, Call, MainProgram, run_main_reference
from modeling_llama_delta.library import PROGRAM_NAMES, assemble_library, minimum_machine

from .arithmetic import COMMUTATIVE, MODULUS_SUFFIXES
from .common import (
    FEATURES,
    AlgorithmicBuilder,
    AlgorithmicConfig,
    check_choice,
    check_int,
    check_int_tuple,
    make_example,
    phrase,
    stream,
)

# The builders' columns plus the main()'s ground truth, for tests and explain only (no loss reads them):
# `calls` the program names in order, `sources` per call one source per input register (PREVIOUS = -1, or the
# index of a value in `registers`, the question's parsed values).
COMPOSE_FEATURES = datasets.Features(
    {
        **FEATURES,
        "calls": datasets.List(datasets.Value("string")),
        "sources": datasets.List(datasets.List(datasets.Value("int32"))),
    }
)
UNSEEN_SPLIT = "test_unseen_composition"
P = PREVIOUS


class Composition(NamedTuple):
    """A main(): program names, per call the sources of its input registers; `inputs` what the question gives
    ("numbers" x, y, z, w; "string" s and maybe a character c; "digits" a, b and maybe a digit d)."""

    calls: tuple[str, ...]
    sources: tuple[tuple[int, ...], ...]
    inputs: str
    answer_in: str


COMPOSITIONS: dict[str, Composition] = {
    "add_then_mul": Composition(("add", "mul"), ((0, 1), (P, 2)), "numbers", "register"),
    "max_then_sub": Composition(("max", "sub"), ((0, 1), (P, 2)), "numbers", "register"),
    "add_then_mul_then_sub": Composition(("add", "mul", "sub"), ((0, 1), (P, 2), (P, 3)), "numbers", "register"),
    "sort_then_reverse": Composition(("sort", "reverse"), ((), ()), "string", "memory"),
    "reverse_then_strlen": Composition(("reverse", "strlen"), ((), ()), "string", "register"),
    "sort_then_count": Composition(("sort", "count"), ((), (0,)), "string", "register"),
    "add_digits_then_count": Composition(("add_digits", "count"), ((), (0,)), "digits", "register"),
    "add_digits_then_sort_then_reverse": Composition(
        ("add_digits", "sort", "reverse"), ((), (), ()), "digits", "memory"
    ),
    # Unseen by default (test_unseen_composition): orders and pairs that training never chains.
    "mul_then_add": Composition(("mul", "add"), ((0, 1), (P, 2)), "numbers", "register"),
    "max_then_mul": Composition(("max", "mul"), ((0, 1), (P, 2)), "numbers", "register"),
    "sub_then_add_then_mul": Composition(("sub", "add", "mul"), ((0, 1), (P, 2), (P, 3)), "numbers", "register"),
    "reverse_then_count": Composition(("reverse", "count"), ((), (0,)), "string", "register"),
    "add_digits_then_reverse": Composition(("add_digits", "reverse"), ((), ()), "digits", "memory"),
}
SEEN = tuple(list(COMPOSITIONS)[:8])
UNSEEN = tuple(list(COMPOSITIONS)[8:])

# Fields: {x} {y} {z} {w} numbers (in the order of `registers`), {s} a string, {c} its character, {a} {b} the
# addition's operands, {d} a digit. The first template is the canonical one. HELDOUT_TEMPLATES: heldout_phrasing only.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "add_then_mul": (
        "Add {x} and {y}, then multiply the result by {z}.",
        "What is ({x} + {y}) * {z}?",
        "Compute the sum of {x} and {y}, times {z}.",
        "Take {x} plus {y} and multiply it by {z}.",
        "First add {x} to {y}; then multiply by {z}. What do you get?",
        "({x} + {y}) * {z} = ?",
        "Multiply the total of {x} and {y} by {z}.",
        "I have {x} red and {y} blue boxes, each holding {z} pens. How many pens in all?",
        "What do you get when {x} plus {y} is multiplied by {z}?",
        "Please compute ({x} + {y}) times {z}.",
        "Sum {x} with {y} and scale the sum by {z}.",
    ),
    "max_then_sub": (
        "Subtract {z} from the larger of {x} and {y}.",
        "What is max({x}, {y}) - {z}?",
        "Take the maximum of {x} and {y}, then subtract {z}.",
        "Which is larger, {x} or {y}? Take {z} away from it.",
        "max({x}, {y}) - {z} = ?",
        "Find the greater of {x} and {y} minus {z}.",
        "Please compute the bigger of {x} and {y}, less {z}.",
        "Pick the larger number of {x} and {y} and subtract {z} from it.",
        "What is left when {z} is subtracted from the maximum of {x} and {y}?",
        "The higher of {x} and {y}, minus {z}: what is it?",
        "Compute max of {x} and {y}, then minus {z}.",
    ),
    "add_then_mul_then_sub": (
        "Add {x} and {y}, multiply by {z}, then subtract {w}.",
        "What is ({x} + {y}) * {z} - {w}?",
        "({x} + {y}) * {z} - {w} = ?",
        "Compute the sum of {x} and {y}, times {z}, minus {w}.",
        "Take {x} plus {y}, multiply it by {z} and take away {w}.",
        "First add {x} to {y}, then multiply by {z}, then subtract {w}. What is the result?",
        "Please calculate ({x} + {y}) times {z}, less {w}.",
        "I buy {x} and then {y} packs of {z} cards and give away {w} cards. How many cards do I have?",
        "Multiply the total of {x} and {y} by {z} and subtract {w}.",
        "What do you get when {x} plus {y} is multiplied by {z} and {w} is subtracted?",
        "Sum {x} and {y}, scale by {z}, remove {w}.",
    ),
    "sort_then_reverse": (
        "Sort the string {s}, then reverse it.",
        "Sort the characters of {s} and write them backwards.",
        "Put the letters of {s} in alphabetical order, then reverse that.",
        "What is {s} sorted and then reversed?",
        "Arrange {s} in reverse alphabetical order.",
        "{s}: sort its characters from z to a.",
        "Please sort {s} in descending order.",
        "Alphabetize the characters of {s}, then flip the order.",
        "I need the characters of {s} from the highest to the lowest letter.",
        "Return {s} sorted, last letter first",
        "Can you sort {s} and then reverse the result?",
    ),
    "reverse_then_strlen": (
        "Reverse the string {s}, then give its length.",
        "How long is {s} once it is reversed?",
        "Write {s} backwards. How many characters does that have?",
        "What is the length of {s} reversed?",
        "{s}: reverse it, then count its characters.",
        "Please reverse {s} and tell me its length.",
        "What is len(reversed({s}))?",
        "Flip the order of the characters in {s}. How many characters are there?",
        "After reversing {s}, how many characters long is it?",
        "Count the characters of {s} read right to left",
        "Reverse {s} and measure its length.",
    ),
    "sort_then_count": (
        "Sort the string {s}, then count how many times {c} occurs in it.",
        "How many times does {c} occur in {s} after sorting it?",
        "Put the letters of {s} in order. How many {c} characters does it have?",
        "Sort {s} and count the {c} characters.",
        "{s}: sort it, then count {c}.",
        "Please alphabetize {s} and tell me how often {c} appears.",
        "In {s} sorted, how many times does {c} appear?",
        "After sorting {s}, what is the number of {c}?",
        "Arrange {s} alphabetically and count the occurrences of {c}.",
        "Sort the characters of {s}; how many are {c}?",
        "Count {c} in the sorted string {s}",
    ),
    "add_digits_then_count": (
        "Add {a} and {b}, then count how many times the digit {d} appears in the sum.",
        "How many times does the digit {d} occur in {a} + {b}?",
        "Compute {a} + {b}. How many of its digits are {d}?",
        "In the sum of {a} and {b}, how many {d} digits are there?",
        "{a} + {b}: count the digit {d} in the result.",
        "Please add {a} and {b} and tell me how often {d} appears in the answer.",
        "What is the number of {d} digits in {a} plus {b}?",
        "Count the digit {d} in the total of {a} and {b}.",
        "If you add {a} and {b}, how many times is {d} a digit of the result?",
        "Sum {a} with {b}; how many digits equal {d}?",
        "Tell me how many {d}s the sum {a} + {b} has",
    ),
    "add_digits_then_sort_then_reverse": (
        "Add {a} and {b}, then write the digits of the sum from largest to smallest.",
        "Sort the digits of {a} + {b} in descending order.",
        "Compute {a} + {b} and arrange its digits from high to low.",
        "What are the digits of the sum of {a} and {b}, largest first?",
        "{a} + {b}: list the digits of the result in decreasing order.",
        "Please add {a} and {b}, sort the digits of the total, then reverse them.",
        "Order the digits of {a} plus {b} from 9 down to 0.",
        "Take the sum of {a} and {b} and put its digits in descending order.",
        "If you add {a} and {b}, what is the biggest number made of the sum's digits?",
        "Sum {a} with {b}, then sort its digits and reverse them.",
        "Give the digits of {a} + {b} sorted high to low",
    ),
    "mul_then_add": (
        "Multiply {x} by {y}, then add {z}.",
        "What is {x} * {y} + {z}?",
        "{x} * {y} + {z} = ?",
        "Compute the product of {x} and {y}, plus {z}.",
        "Take {x} times {y} and add {z} to it.",
        "First multiply {x} by {y}; then add {z}. What do you get?",
        "Please calculate {x} times {y}, plus {z}.",
        "There are {x} boxes of {y} pens and {z} loose pens. How many pens are there?",
        "Add {z} to the product of {x} and {y}.",
        "What do you get when {x} multiplied by {y} is increased by {z}?",
        "Scale {x} by {y} and then add {z}.",
    ),
    "max_then_mul": (
        "Multiply the larger of {x} and {y} by {z}.",
        "What is max({x}, {y}) * {z}?",
        "max({x}, {y}) * {z} = ?",
        "Take the maximum of {x} and {y}, then multiply by {z}.",
        "Which is larger, {x} or {y}? Multiply it by {z}.",
        "Find the greater of {x} and {y} times {z}.",
        "Please compute the bigger of {x} and {y}, times {z}.",
        "Pick the larger number of {x} and {y} and multiply it by {z}.",
        "What is the maximum of {x} and {y} multiplied by {z}?",
        "The higher of {x} and {y}, times {z}: what is it?",
        "Compute max of {x} and {y}, then times {z}.",
    ),
    "sub_then_add_then_mul": (
        "Subtract {y} from {x}, add {z}, then multiply by {w}.",
        "What is ({x} - {y} + {z}) * {w}?",
        "({x} - {y} + {z}) * {w} = ?",
        "Compute {x} minus {y}, plus {z}, times {w}.",
        "Take {y} away from {x}, add {z} and multiply the result by {w}.",
        "First subtract {y} from {x}, then add {z}, then multiply by {w}. What is the result?",
        "Please calculate {x} - {y} + {z}, all times {w}.",
        "I had {x} crates, sold {y}, bought {z} more, and each crate holds {w} bottles. How many bottles?",
        "Multiply the difference of {x} and {y}, increased by {z}, by {w}.",
        "What do you get when {z} is added to {x} minus {y} and that is multiplied by {w}?",
        "Take {x} less {y}, add {z}, scale by {w}.",
    ),
    "reverse_then_count": (
        "Reverse the string {s}, then count how many times {c} occurs in it.",
        "How many times does {c} occur in {s} written backwards?",
        "Write {s} backwards. How many {c} characters does it have?",
        "Reverse {s} and count the {c} characters.",
        "{s}: reverse it, then count {c}.",
        "Please flip {s} and tell me how often {c} appears.",
        "In {s} reversed, how many times does {c} appear?",
        "After reversing {s}, what is the number of {c}?",
        "Read {s} right to left and count the occurrences of {c}.",
        "Reverse the characters of {s}; how many are {c}?",
        "Count {c} in the reversed string {s}",
    ),
    "add_digits_then_reverse": (
        "Add {a} and {b}, then write the sum backwards.",
        "What is {a} + {b} with its digits reversed?",
        "Compute {a} + {b} and reverse its digits.",
        "Write the sum of {a} and {b} from the last digit to the first.",
        "{a} + {b}: reverse the result.",
        "Please add {a} and {b} and spell the total backwards.",
        "Reverse the digits of {a} plus {b}.",
        "Take the sum of {a} and {b} and flip the order of its digits.",
        "If you add {a} and {b}, what does the answer look like read right to left?",
        "Sum {a} with {b}, then reverse it.",
        "Give {a} + {b} in reverse digit order",
    ),
}
HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add_then_mul": ("Combine {x} with {y}, then scale by a factor of {z}.", "{z} lots of ({x} plus {y})?"),
    "max_then_sub": ("Reduce the higher value among {x}, {y} by {z}.", "Biggest of {x} and {y}, decreased by {z}?"),
    "add_then_mul_then_sub": (
        "Total {x} and {y}, form {z} lots of that, remove {w}.",
        "{z} copies of {x} plus {y}, minus {w}: result?",
    ),
    "sort_then_reverse": ("Order the symbols of {s} from highest to lowest.", "Descending rearrangement of {s}?"),
    "reverse_then_strlen": ("Mirror the text {s} and report its size.", "Character count of {s} mirrored?"),
    "sort_then_count": ("Tally the {c} symbols in the ordered form of {s}.", "Frequency of {c} once {s} is ordered?"),
    "add_digits_then_count": (
        "Tally the {d} digits within the total of {a} and {b}.",
        "Frequency of digit {d} in {a} combined with {b}?",
    ),
    "add_digits_then_sort_then_reverse": (
        "Descending rearrangement of the digits of {a} combined with {b}?",
        "Order the digits of the total of {a} and {b} from highest to lowest.",
    ),
}
STRING_ALPHABET = string.ascii_lowercase


@dataclasses.dataclass
class CompositionConfig(AlgorithmicConfig):
    """Args:
    compositions: the seen compositions (train / validation / test), names from `COMPOSITIONS`.
    unseen_compositions: the compositions of `test_unseen_composition` only; their call sequences must not occur
        among the seen ones, and every program they call must.
    examples_per_composition: distinct seen problems per composition (split 60/10/30), spread over its lengths.
    unseen_examples_per_composition: problems per unseen composition.
    lengths: string lengths; digits: digits per addition operand.
    heldout_phrasing_size: seen test problems asked in held-out templates.
    """

    compositions: tuple = SEEN
    unseen_compositions: tuple = UNSEEN
    examples_per_composition: int = 1000
    unseen_examples_per_composition: int = 300
    lengths: tuple = (6, 8, 10)
    digits: tuple = (3, 4, 5)
    heldout_phrasing_size: int = 600

    def __post_init__(self):
        super().__post_init__()
        for name in ("compositions", "unseen_compositions"):
            values = getattr(self, name)
            if isinstance(values, str) or not values or len(set(values)) != len(values):
                raise ValueError(f"{name} = {values!r} is not allowed: a non-empty tuple of distinct compositions")
            for value in values:
                check_choice(f"{name} item", value, tuple(COMPOSITIONS))
            setattr(self, name, tuple(values))
        seen_calls = {COMPOSITIONS[c].calls for c in self.compositions}
        seen_programs = {p for calls in seen_calls for p in calls}
        for name in self.unseen_compositions:
            calls = COMPOSITIONS[name].calls
            if calls in seen_calls:
                raise ValueError(f"unseen composition {name!r} calls {calls}, which a seen composition calls too")
            missing = set(calls) - seen_programs
            if missing:
                raise ValueError(f"unseen composition {name!r} calls {sorted(missing)}, which no seen one calls")
        self.lengths = check_int_tuple("lengths", self.lengths, 1)
        self.digits = check_int_tuple("digits", self.digits, 1)
        check_int("examples_per_composition", self.examples_per_composition, 1)
        check_int("unseen_examples_per_composition", self.unseen_examples_per_composition, 1)
        for name in self.compositions + self.unseen_compositions:
            spec = COMPOSITIONS[name]
            sizes = {"numbers": (0,), "string": self.lengths, "digits": self.digits}[spec.inputs]
            for program in spec.calls:
                for size in sizes:
                    # after add_digits, the string is the L + 1 digit sum
                    size = size + 1 if spec.inputs == "digits" and program != "add_digits" else size
                    need = minimum_machine(program, size).n
                    if need > self.n:
                        raise ValueError(f"n = {self.n} is too small for {name!r}: {program!r} needs n >= {need}")


def main_of(calls, sources, names=PROGRAM_NAMES) -> MainProgram:
    """The `MainProgram` of a row's `calls` and `sources` (program indices into `names`, the library's order)."""
    return MainProgram(tuple(Call(list(names).index(p), tuple(s)) for p, s in zip(calls, sources, strict=True)))


def draw_problem(spec: Composition, size: int, rng: random.Random, n: int) -> tuple[dict, list[int], list[int]]:
    """One input of `spec`: the question's fields, Δ's memory (zero-terminated) and the parsed values."""
    if spec.inputs == "numbers":
        values = [rng.randrange(n) for _ in range(max(max(s) for s in spec.sources if s) + 1)]
        return dict(zip("xyzw", values, strict=False)), [], values
    if spec.inputs == "string":
        text = "".join(rng.choice(STRING_ALPHABET) for _ in range(size))
        fields, memory = {"s": text}, [ord(ch) for ch in text] + [0]
        if "count" not in spec.calls:
            return fields, memory, []
        character = rng.choice(text) if rng.random() < 0.7 else rng.choice(STRING_ALPHABET)
        return fields | {"c": character}, memory, [ord(character)]
    low, high = 10 ** (size - 1) if size > 1 else 1, 10**size
    a = rng.randrange(low, high)
    b = rng.randrange(max(low, high - a), high)  # a carry out: the sum has size + 1 digits of its own
    memory = [ord(ch) for ch in str(a)] + [0] + [ord(ch) for ch in str(b)] + [0]
    if "count" not in spec.calls:
        return {"a": a, "b": b}, memory, []
    digit = rng.choice(str(a + b)) if rng.random() < 0.7 else rng.choice(string.digits)
    return {"a": a, "b": b, "d": digit}, memory, [ord(digit)]


def problem_group(name: str, spec: Composition, memory: list[int], parsed: list[int]) -> tuple:
    """The problem up to wording: "Add 3 and 4, ..." and "Add 4 and 3, ..." are one problem."""
    if spec.inputs == "numbers" and spec.calls[0] in COMMUTATIVE:
        parsed = sorted(parsed[:2]) + parsed[2:]
    return (name, tuple(memory), tuple(parsed))


class CompositionBuilder(AlgorithmicBuilder):
    """Two- and three-call questions (sort then reverse, add then multiply, count a digit of a sum...), each
    answered by chaining library programs on one Δ state, in varied phrasings, with a compositional split
    (`test_unseen_composition`) and held-out phrasings. Columns: the builders' own plus `calls` and `sources`, the
    main()'s ground truth (see `COMPOSE_FEATURES`)."""

    BUILDER_CONFIG_CLASS = CompositionConfig
    BUILDER_CONFIGS = [CompositionConfig(name="compose", version=AlgorithmicBuilder.VERSION)]
    DEFAULT_CONFIG_NAME = "compose"
    TASK_NAME = "compose"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=type(self).__doc__, features=COMPOSE_FEATURES)

    def generate(self, config: CompositionConfig):
        n, varied = config.n, config.phrasing == "varied"
        programs = assemble_library(PROGRAM_NAMES, n=n)
        library = [programs[name] for name in PROGRAM_NAMES]
        problems, words = stream(config.seed, "problems"), stream(config.seed, "phrasing")

        def ask(templates: tuple[str, ...], spec: Composition, fields: dict, varied: bool) -> str:
            question = phrase(words.choice(templates if varied else templates[:1]), fields, words, varied, ("s", "c"))
            if spec.inputs == "numbers":  # answers are mod n, as in `arithmetic`
                question += words.choice(MODULUS_SUFFIXES if varied else MODULUS_SUFFIXES[:1]).format(n=n)
            return question

        def row(name: str, size: int, fields: dict, memory: list[int], parsed: list[int], question: str) -> dict:
            spec = COMPOSITIONS[name]
            result = run_main_reference(
                main_of(spec.calls, spec.sources), library, parsed, memory, n, max_steps=100_000
            )
            if not result.halted:
                raise RuntimeError(f"{name} did not halt on {fields}")  # a library bug, never the data's
            if spec.answer_in == "register":
                answer_ids, answer = [result.registers[0]], str(result.registers[0])
            else:
                answer_ids = result.memory[: result.memory.index(0)]
                answer = "".join(chr(v) for v in answer_ids)
            length = size if spec.inputs != "numbers" else -1
            example = make_example(
                question, answer, answer_ids, "main", memory, parsed, spec.answer_in, 0, name, length
            )
            return example | {"calls": list(spec.calls), "sources": [list(s) for s in spec.sources]}

        def draw(name: str, count: int) -> list[tuple[tuple, int, dict, dict]]:
            spec = COMPOSITIONS[name]
            sizes = {"numbers": (-1,), "string": config.lengths, "digits": config.digits}[spec.inputs]
            drawn, seen = [], set()
            for i in range(count):
                size = sizes[i % len(sizes)]
                for _ in range(1000):
                    fields, memory, parsed = draw_problem(spec, size, problems, n)
                    group = problem_group(name, spec, memory, parsed)
                    if group not in seen:
                        break
                else:
                    raise ValueError(f"{name}: fewer than {count} distinct problems; lower the count")
                seen.add(group)
                question = ask(TEMPLATES[name], spec, fields, varied)
                heldout = ask(HELDOUT_TEMPLATES[name], spec, fields, True) if name in HELDOUT_TEMPLATES else None
                drawn.append((group, size, row(name, size, fields, memory, parsed, question), heldout))
            return drawn

        items = [
            (group, (name, size), example, heldout)
            for name in config.compositions
            for group, size, example, heldout in draw(name, config.examples_per_composition)
        ]
        unseen = [
            example
            for name in config.unseen_compositions
            for _, _, example, _ in draw(name, config.unseen_examples_per_composition)
        ]
        return items, {UNSEEN_SPLIT: unseen}

    GENERATOR = (
        generate,
        main_of,
        draw_problem,
        problem_group,
        run_main_reference,
        COMPOSITIONS,
        TEMPLATES,
        HELDOUT_TEMPLATES,
        STRING_ALPHABET,
        MODULUS_SUFFIXES,
    )
