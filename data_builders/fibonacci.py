"""`fibonacci`: Fibonacci-like recurrences mod n from two given numbers, by recursion depth (paper §4.1,
Table 1: depths 1-6), as text or in the one-hot "minimal network" form (integers only)."""

from __future__ import annotations

import dataclasses

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

FIBONACCI_PROGRAMS = ("fib_recursive", "fib", "fib_linear")  # the programs a row may name; the paper studies the first
# {a}, {b}: the two starting numbers x0, x1; {d}: the depth (number of additions), stated as such so that a parser
# copies it; {n}: the modulus; {additions}/{steps}/{times}: the noun, singular for d = 1. The first template is the
# canonical one; HELDOUT_TEMPLATES ask the `heldout_phrasing` split only.
TEMPLATES = (
    "Start with {a} and {b}. Each next number is the sum of the previous two, mod {n}. "
    "What is the number after {d} {additions}?",
    "Keep adding the last two numbers, starting from {a} and {b}, working modulo {n}. "
    "Which number do you reach after {d} {steps}?",
    "A sequence begins {a}, {b}, and every later term is the sum of the two terms before it, modulo {n}. "
    "What term comes after {d} {additions}?",
    "Fibonacci-style sequence mod {n} with first two numbers {a} and {b}: give the number after {d} {steps}.",
    "From {a} and {b}, repeat {d} {times}: replace the pair by (second, first + second) mod {n}. "
    "What is the second number?",
    "Please run a Fibonacci recurrence from {a}, {b} for {d} {steps}, mod {n}. What number results?",
    "{a} and {b} start a Fibonacci-like sequence modulo {n}. What is it after {d} {additions}?",
    "What is the Fibonacci-style number after {d} {steps} when the sequence starts {a}, {b} (mod {n})?",
    "After {d} {additions} of the two latest numbers, beginning with {a} and {b}, what do you get modulo {n}?",
    "Compute the Fibonacci-like number after {d} {steps} from {a} and {b}, mod {n}.",
)
HELDOUT_TEMPLATES = (
    "Seeds {a} and {b}; add the latest two {d} {times}, reducing mod {n}. Final value?",
    "Begin at {a}, {b}. Advance the Fibonacci rule {d} {times} modulo {n}; report the newest term.",
    "With first term {a} and second term {b}, what does the sum-of-previous-two rule give after {d} {steps} (mod {n})?",
)


def fibonacci(x0: int, x1: int, depth: int, n: int) -> int:
    """x_{depth+1} where x_{i+1} = x_i + x_{i-1} mod n (the library's `fib`: depth 0 -> x1)."""
    for _ in range(depth):
        x0, x1 = x1, (x0 + x1) % n
    return x1


@dataclasses.dataclass
class FibonacciConfig(AlgorithmicConfig):
    """Args:
    depths: in-distribution recursion depths (paper: 1-6), split train/validation/test.
    ood_depths: deeper held-out depths, one test split each (`ood_depth_<d>`).
    examples_per_depth: distinct (x0, x1) pairs per depth; None = all n*n pairs (the paper's setting).
    ood_examples_per_depth: distinct pairs per held-out depth.
    program: the library program named in each row.
    text: False gives the minimal-network form: the question is just "x0 x1 depth".
    """

    depths: tuple = (1, 2, 3, 4, 5, 6)
    ood_depths: tuple = (8, 12, 16)
    examples_per_depth: int | None = None
    ood_examples_per_depth: int = 1000
    program: str = "fib_recursive"
    text: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_choice("program", self.program, FIBONACCI_PROGRAMS)
        self.depths = check_int_tuple("depths", self.depths, 0)
        self.ood_depths = check_int_tuple("ood_depths", self.ood_depths, 0, allow_empty=True)
        for depth in self.depths + self.ood_depths:
            # The library's own account: the depth is a register value, fib_recursive's stack takes depth cells.
            need = minimum_machine(self.program, depth).n
            if need > self.n:
                raise ValueError(
                    f"depth {depth} is too deep for n = {self.n}: library program {self.program!r} needs "
                    f"word size n >= {need} at that depth"
                )
        if set(self.depths) & set(self.ood_depths):
            raise ValueError(f"depths {self.depths} and ood_depths {self.ood_depths} overlap")
        if self.examples_per_depth is not None:
            check_int("examples_per_depth", self.examples_per_depth, 1, self.n * self.n)
        check_int("ood_examples_per_depth", self.ood_examples_per_depth, 1, self.n * self.n)
        if not isinstance(self.text, bool):
            raise ValueError(f"text = {self.text!r} is not allowed: True or False")


class FibonacciBuilder(AlgorithmicBuilder):
    """x_{depth+1} of x_{i+1} = x_i + x_{i-1} mod n from x0, x1. Δ's input: r0 = x0, r1 = x1, r2 = depth;
    its answer: r0. Splits are stratified by depth; deeper depths are held-out `ood_depth_<d>` splits."""

    BUILDER_CONFIG_CLASS = FibonacciConfig
    BUILDER_CONFIGS = [
        FibonacciConfig(name="fibonacci", version=AlgorithmicBuilder.VERSION),
        FibonacciConfig(name="fibonacci_minimal", version=AlgorithmicBuilder.VERSION, text=False),
        FibonacciConfig(name="fibonacci_linear", version=AlgorithmicBuilder.VERSION, program="fib_linear"),
    ]
    DEFAULT_CONFIG_NAME = "fibonacci"
    TASK_NAME = "fibonacci"

    def generate(self, config: FibonacciConfig):
        n = config.n
        problems, words = stream(config.seed, "problems"), stream(config.seed, "phrasing")
        varied = config.phrasing == "varied"

        def ask(templates: tuple[str, ...], x0: int, x1: int, depth: int, varied: bool) -> str:
            if not config.text:
                return f"{x0} {x1} {depth}"
            plural = "" if depth == 1 else "s"
            fields = {"a": x0, "b": x1, "d": depth, "n": n}
            fields |= {"additions": "addition" + plural, "steps": "step" + plural, "times": "time" + plural}
            return phrase(words.choice(templates if varied else templates[:1]), fields, words, varied)

        def example(pair: int, depth: int) -> tuple[dict, str | None]:
            x0, x1 = divmod(pair, n)
            answer = fibonacci(x0, x1, depth, n)
            question = ask(TEMPLATES, x0, x1, depth, varied)
            registers = [x0, x1, depth]
            row = make_example(
                question, str(answer), [answer], config.program, [], registers, "register", 0, "fib", depth=depth
            )
            return row, ask(HELDOUT_TEMPLATES, x0, x1, depth, True) if config.text else None

        items = []
        for depth in config.depths:
            count = n * n if config.examples_per_depth is None else config.examples_per_depth
            for pair in sample_distinct(problems, n * n, count):
                items.append(((pair, depth), depth, *example(pair, depth)))
        ood = {
            f"ood_depth_{depth}": [
                example(pair, depth)[0] for pair in sample_distinct(problems, n * n, config.ood_examples_per_depth)
            ]
            for depth in config.ood_depths
        }
        return items, ood

    GENERATOR = (generate, fibonacci, TEMPLATES, HELDOUT_TEMPLATES)
