"""`arithmetic`: one-step natural-language arithmetic mod n (paper §4.2-4.3: "Add 3 and 4")."""

from __future__ import annotations

import dataclasses

from modeling_llama_delta.library import minimum_machine
from modeling_llama_delta.reference import binary_op

from .common import (
    AlgorithmicBuilder,
    AlgorithmicConfig,
    check_choice,
    check_int,
    make_example,
    phrase,
    sample_distinct,
    stream,
)

# The library's binary programs, r0 := r0 OP r1 (mod n; div/mod by 0 give 0), as the calling conventions say.
OPERATIONS = ("add", "sub", "mul", "div", "mod", "min", "max")
COMMUTATIVE = frozenset({"add", "mul", "min", "max"})
WRAPPING = frozenset({"add", "sub", "mul"})  # the only ones whose answer can differ from the integer one

# The first template of each operation is the canonical one (phrasing="fixed"); "Add 3 and 4" is the paper's.
# The operands sit at the start, middle or end, in either order ("Subtract {y} from {x}"), among extra words;
# `vary` adds case and punctuation. HELDOUT_TEMPLATES ask the `heldout_phrasing` split, never a training question.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "Add {x} and {y}.",
        "What is {x} plus {y}?",
        "What is {x} + {y}?",
        "Compute the sum of {x} and {y}.",
        "What do you get when you add {y} to {x}?",
        "{x} plus {y} is what?",
        "Calculate {x} + {y}.",
        "Find the total of {x} and {y}.",
        "Please add {x} and {y} together.",
        "I have {x} apples and get {y} more. How many apples do I have?",
        "{x} + {y} = ?",
        "Sum {x} with {y}.",
    ),
    "sub": (
        "Subtract {y} from {x}.",
        "What is {x} minus {y}?",
        "What is {x} - {y}?",
        "Take {y} away from {x}.",
        "Compute the difference {x} - {y}.",
        "What is left when {y} is subtracted from {x}?",
        "Calculate {x} - {y}.",
        "{x} minus {y} equals what?",
        "Please subtract {y} from {x} for me.",
        "I had {x} coins and spent {y}. How many are left?",
        "{x} - {y} = ?",
    ),
    "mul": (
        "Multiply {x} by {y}.",
        "What is {x} times {y}?",
        "What is {x} * {y}?",
        "Compute the product of {x} and {y}.",
        "What is {x} multiplied by {y}?",
        "Calculate {x} * {y}.",
        "{x} times {y} is what?",
        "Please multiply {x} and {y}.",
        "There are {x} boxes with {y} pens each. How many pens are there?",
        "{x} * {y} = ?",
    ),
    "div": (
        "Divide {x} by {y}.",
        "What is {x} divided by {y}, rounded down?",
        "What is {x} // {y}?",
        "What is the integer quotient of {x} and {y}?",
        "How many whole times does {y} go into {x}?",
        "Compute {x} // {y}.",
        "{x} divided by {y}, ignoring the remainder, is what?",
        "Please do the integer division of {x} by {y}.",
        "{x} // {y} = ?",
        "Share {x} sweets among {y} children equally: how many whole sweets does each child get?",
    ),
    "mod": (
        "What is {x} mod {y}?",
        "What is the remainder when {x} is divided by {y}?",
        "Compute {x} % {y}.",
        "What is {x} modulo {y}?",
        "Find the remainder of {x} divided by {y}.",
        "{x} % {y} = ?",
        "What remains after dividing {x} by {y}?",
        "Please give {x} mod {y}.",
        "{x} modulo {y} is what?",
        "Divide {x} by {y} and tell me the remainder.",
    ),
    "min": (
        "What is the minimum of {x} and {y}?",
        "Which is smaller, {x} or {y}?",
        "What is min({x}, {y})?",
        "Give the smaller of {x} and {y}.",
        "Find the lesser of {x} and {y}.",
        "min({x}, {y}) = ?",
        "Of {x} and {y}, which is the smallest?",
        "Please pick the smaller number: {x} or {y}.",
        "{x} or {y}: which one is less?",
        "Tell me the minimum of {x} and {y}.",
    ),
    "max": (
        "What is the maximum of {x} and {y}?",
        "Which is larger, {x} or {y}?",
        "What is max({x}, {y})?",
        "Give the larger of {x} and {y}.",
        "Find the greater of {x} and {y}.",
        "max({x}, {y}) = ?",
        "Of {x} and {y}, which is the biggest?",
        "Please pick the larger number: {x} or {y}.",
        "{x} or {y}: which one is more?",
        "Tell me the maximum of {x} and {y}.",
    ),
}
HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": ("Increase {x} by {y}.", "If you combine {x} and {y}, what total results?", "{y} added to {x} gives?"),
    "sub": ("Decrease {x} by {y}.", "How much is {x} less {y}?", "From {x}, remove {y}. What remains?"),
    "mul": ("How much is {x} lots of {y}?", "Find {x} multiplied with {y}.", "Product: {x} and {y}?"),
    "div": ("How many groups of {y} fit in {x}?", "Floor of {x} over {y}?", "Integer-divide {x} by {y}."),
    "mod": ("{x} divided by {y} leaves what remainder?", "Remainder of {x} over {y}?", "Reduce {x} modulo {y}."),
    "min": ("Smallest of {x} and {y}?", "Between {x} and {y}, name the lower one.", "Lower value: {x} vs {y}?"),
    "max": ("Largest of {x} and {y}?", "Between {x} and {y}, name the higher one.", "Higher value: {x} vs {y}?"),
}
MODULUS_SUFFIXES = (" Work modulo {n}.", " Give the answer mod {n}.", " (mod {n})", " Answer modulo {n}.")


@dataclasses.dataclass
class ArithmeticConfig(AlgorithmicConfig):
    """Args:
    size: number of distinct problems (the paper's mod-128 set has 45,151).
    operations: which of `OPERATIONS` to draw from (uniformly over all their (x, y) pairs).
    allow_zero_divisor: include y = 0 for div/mod (Δ gives 0 there; odd in natural language).
    mention_modulus: append "Work modulo n." (varied) to add/sub/mul questions, whose answers can wrap: always
        under phrasing "fixed"; under "varied" to every problem whose answer wraps and to half of the others
        (without the suffix the integer answer is meant, so only problems where it equals the answer mod n
        go without).
    """

    size: int = 45_151
    operations: tuple = OPERATIONS
    allow_zero_divisor: bool = False
    mention_modulus: bool = True

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.operations, str) or not self.operations:
            raise ValueError(f"operations = {self.operations!r} is not allowed: a non-empty tuple from {OPERATIONS}")
        self.operations = tuple(self.operations)
        for op in self.operations:
            check_choice("operations item", op, OPERATIONS)
        if len(set(self.operations)) != len(self.operations):
            raise ValueError(f"operations = {self.operations!r} repeats an operation")
        check_int("size", self.size, 1, self.space)
        need = max(minimum_machine(op).n for op in self.operations)
        if need > self.n:
            raise ValueError(f"n = {self.n} is too small: the library's binary programs need n >= {need}")

    def pairs(self, op: str) -> int:
        """Number of (x, y) pairs for `op`: y ranges over 1..n-1 for div/mod unless zero divisors are allowed."""
        zero_free = op in ("div", "mod") and not self.allow_zero_divisor
        return self.n * (self.n - 1 if zero_free else self.n)

    @property
    def space(self) -> int:
        return sum(self.pairs(op) for op in self.operations)


class ArithmeticBuilder(AlgorithmicBuilder):
    """One-step arithmetic mod n over add/sub/mul/div/mod/min/max, in many phrasings. Δ's input: r0 = x,
    r1 = y; its answer: r0. Splits are stratified by operation; "Add 3 and 4" and "Add 4 and 3" share a
    split (commutative operations are one problem)."""

    BUILDER_CONFIG_CLASS = ArithmeticConfig
    BUILDER_CONFIGS = [ArithmeticConfig(name="arithmetic", version=AlgorithmicBuilder.VERSION)]
    DEFAULT_CONFIG_NAME = "arithmetic"
    TASK_NAME = "arithmetic"

    def generate(self, config: ArithmeticConfig):
        n = config.n
        # Problem index i -> (op, x, y): the operations' pair ranges laid end to end.
        offsets, start = [], 0
        for op in config.operations:
            offsets.append((start, op))
            start += config.pairs(op)
        words = stream(config.seed, "phrasing")
        varied = config.phrasing == "varied"

        def ask(templates: tuple[str, ...], op: str, x: int, y: int, wraps: bool, varied: bool) -> str:
            question = phrase(words.choice(templates if varied else templates[:1]), {"x": x, "y": y}, words, varied)
            if config.mention_modulus and op in WRAPPING and (not varied or wraps or words.random() < 0.5):
                question += words.choice(MODULUS_SUFFIXES if varied else MODULUS_SUFFIXES[:1]).format(n=n)
            return question

        items = []
        # `size` distinct problems drawn uniformly from all of them, in draw order.
        for index in sample_distinct(stream(config.seed, "problems"), config.space, config.size):
            base, op = next((s, o) for s, o in reversed(offsets) if s <= index)
            x, rest = divmod(index - base, config.pairs(op) // n)
            y = rest + 1 if op in ("div", "mod") and not config.allow_zero_divisor else rest
            result = binary_op(op, x, y, n)  # the ISA's semantics: div/mod by 0 give 0
            wraps = result != {"add": x + y, "sub": x - y, "mul": x * y}.get(op, result)
            question = ask(TEMPLATES[op], op, x, y, wraps, varied)
            heldout = ask(HELDOUT_TEMPLATES[op], op, x, y, wraps, True)
            example = make_example(question, str(result), [result], op, [], [x, y], "register", 0, op)
            group = (op, *sorted((x, y))) if op in COMMUTATIVE else (op, x, y)
            items.append((group, op, example, heldout))
        return items, {}

    GENERATOR = (
        generate,
        ArithmeticConfig.pairs,
        ArithmeticConfig.space.fget,
        binary_op,
        TEMPLATES,
        HELDOUT_TEMPLATES,
        MODULUS_SUFFIXES,
        sorted(COMMUTATIVE),
        sorted(WRAPPING),
    )
