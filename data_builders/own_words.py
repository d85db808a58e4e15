"""`own_words`: the `all` mixture's tasks asked in wordings no builder uses, at its training sizes and beyond.

An evaluation set only (no train split): every task of `mixture.MIXTURE_TASKS` (arithmetic's 7 operations,
`fibonacci_linear`, sort, reverse, count, strlen, parity, addition) in wordings written for it as a user would type
them (chatty words, lower case, no punctuation, the input first or last), none of them a template of any builder,
training or held-out (`tests/test_own_words.py` checks both the templates and the questions). Inputs are drawn
(seeded) at the mixture's training lengths / depths and at its held-out ones (2x and 4x the longest), by the
builders' own problem helpers; every answer is what the task's library program leaves when the reference
interpreter runs it on that input. Rows have the builders' columns (`FEATURES`, `task` set), so the metrics apply.

    from data_builders.own_words import own_words
    ds = own_words(per_size=10)  # a datasets.Dataset
    ds[0]["question"]  # e.g. 'hey, could you add up 17 and 40 for me?'
"""

from __future__ import annotations

import functools

import datasets

from modeling_llama_delta.assembler import Program
from modeling_llama_delta.library import assemble_library, memory_needed, step_bound
from modeling_llama_delta.reference import run_reference

from .arithmetic import OPERATIONS, WRAPPING
from .common import FEATURES, check_int, make_example, phrase, read_answer, sample_distinct, stream
from .mixture import MIXTURE_TASKS
from .sequences import SOLVING_PROGRAM, SequenceConfig, sequence_example, sequence_problem

# Fields as in the builders: {x}, {y} arithmetic's operands (r0, r1); {n} the modulus; {a}, {b}, {d} Fibonacci's
# start and depth (with its nouns {steps}, {additions}, {times}), or addition's operands; {s} the string or bits and
# {c} count's character (quoted by `common.phrase`: either kind of quote, or none where that is unambiguous). Keys:
# arithmetic's operations, then the other tasks. An add/sub/mul wording without {n} is only asked problems whose
# integer answer is the answer mod n (a user asking "what's 17 times 3" means 51).
OWN_WORDS_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "hey, could you add up {x} and {y} for me?",
        "{x} and {y} added together makes what",
        "whats {x} plus {y}",
        "How much do {x} and {y} make together?",
        "Quick one: {x} + {y}",
        "I'd like the sum of {x} and {y}, please.",
        "add {x} to {y}, working mod {n}",
        "What's {x} plus {y} when you count modulo {n}?",
    ),
    "sub": (
        "what's {x} take away {y}",
        "hey, can you subtract {y} from {x}?",
        "{x} minus {y}, what do you get",
        "How much is left if I take {y} from {x}?",
        "Start at {x} and go down by {y}. Where do you end up?",
        "Work out {x} - {y} modulo {n}.",
        "hey, {x} minus {y} in arithmetic mod {n}?",
    ),
    "mul": (
        "What's {x} times {y}?",
        "hey, could you multiply {x} by {y}?",
        "{x} multiplied by {y} equals",
        "product of {x} and {y} please",
        "If one box holds {y} marbles, how many marbles are in {x} boxes?",
        "what's {x} x {y} mod {n}",
        "Multiply {x} and {y}, then reduce modulo {n}.",
    ),
    "div": (
        "whats {x} divided by {y} if you drop the remainder",
        "How many times does {y} fit into {x} completely?",
        "Integer division please: {x} by {y}",
        "hey, can you do {x} / {y} and round down?",
        "{x} split into groups of {y}: how many full groups?",
        "Give me the whole-number part of {x} divided by {y}.",
    ),
    "mod": (
        "what's left over when you divide {x} by {y}",
        "{x} mod {y} please",
        "Hey, what is the remainder if {x} is split into groups of {y}?",
        "If I divide {x} by {y}, what remains?",
        "compute {x} modulo {y} for me",
        "Leftover after dividing {x} by {y}?",
    ),
    "min": (
        "which one's smaller: {x} or {y}",
        "hey, pick the lower number out of {x} and {y}",
        "What's the smaller value, {x} or {y}?",
        "min of {x} and {y}",
        "Between {x} and {y}, which is less?",
        "Tell me which number is lowest: {x}, {y}.",
    ),
    "max": (
        "which one's bigger: {x} or {y}",
        "hey, pick the higher number out of {x} and {y}",
        "What's the larger value, {x} or {y}?",
        "max of {x} and {y}",
        "Between {x} and {y}, which is greater?",
        "Tell me which number is highest: {x}, {y}.",
    ),
    "fibonacci_linear": (
        "hey, start a fibonacci-style sequence with {a} and {b} and keep adding the last two, mod {n}. "
        "what do you have after {d} {steps}?",
        "If the first term is {a}, the second is {b}, and every new term is the sum of the previous two (mod {n}), "
        "what term do you get after {d} {steps}?",
        "fib-like numbers mod {n}, first two are {a}, {b}; give me the one {d} {steps} later",
        "Take {a} then {b}. Add the two most recent numbers, {d} {times}, modulo {n}. Last number?",
        "what number comes out after {d} {additions} if a sequence starts at {a}, {b} and each term adds the two "
        "before it, mod {n}",
        "Quick Fibonacci question: seeds {a} and {b}, modulus {n}, {d} {steps}. Result?",
    ),
    "sort": (
        "Put the letters of {s} in alphabetical order.",
        "sort {s} please",
        "hey, could you sort the characters in {s} for me?",
        "{s} sorted alphabetically is what",
        "Reorder the characters of {s} from a to z.",
        "i need the characters of {s} in sorted order",
        "What would {s} look like with its characters sorted?",
    ),
    "reverse": (
        "hey, can you write {s} backwards for me?",
        "reverse {s} please",
        "What is {s} spelled backwards?",
        "{s} backwards is what",
        "Read {s} from right to left and write it out.",
        "flip {s} around so the last character comes first",
        "Give me the reverse of {s}.",
    ),
    "count": (
        "how many {c}s are in {s}",
        "hey, count the {c} characters in {s} for me",
        "In the text {s}, how often does {c} show up?",
        "Number of times {c} appears in {s}?",
        "{s} contains how many {c}?",
        "Could you tell me how many times the character {c} is in {s}?",
    ),
    "strlen": (
        "how many characters long is {s}",
        "hey, what's the length of {s}?",
        "Count how many characters {s} has.",
        "{s} is how many characters long?",
        "length of {s} please",
        "Could you tell me the number of characters in {s}, spaces included?",
    ),
    "parity": (
        "is the number of 1s in {s} odd or even? say 1 for odd, 0 for even",
        "hey, what's the xor of the bits {s}?",
        "Parity check: {s}. Reply 1 if there are an odd number of ones, else 0.",
        "XOR all the bits of {s} together and tell me the result.",
        "does {s} contain an odd number of 1s? answer 1 for yes, 0 for no",
        "what parity bit goes with {s}",
    ),
    "addition": (
        "hey, what's {a} plus {b}?",
        "add {a} and {b} for me",
        "{a} + {b} equals what",
        "Could you work out the sum {a} + {b}?",
        "What do {a} and {b} add up to?",
        "Total up {a} and {b}, please.",
    ),
}
QUOTED_FIELDS = ("s", "c")  # the fields `phrase` quotes; the numbers are written bare


def training_sizes(task: str) -> tuple[int, ...]:
    """The lengths (Fibonacci: depths) the `all` mixture trains `task` on; () for arithmetic (no size)."""
    settings = MIXTURE_TASKS[task][1]
    return tuple(settings.get("lengths", settings.get("depths", ())))


def heldout_sizes(task: str) -> tuple[int, ...]:
    """The mixture's held-out lengths / depths of `task`: 2x and 4x its longest training one."""
    settings = MIXTURE_TASKS[task][1]
    return tuple(settings.get("ood_lengths", settings.get("ood_depths", ())))


def own_words(
    per_size: int = 10, seed: int = 0, n: int = 128, tasks: tuple[str, ...] | None = None
) -> datasets.Dataset:
    """The own-words evaluation set: for each task (default every task of the `all` mixture), `per_size` questions
    per training and held-out length or depth (arithmetic: per operation), the wordings taken in turn from a seeded
    shuffle of the task's `OWN_WORDS_TEMPLATES` (so each is asked), then `common.phrase`'s case and punctuation."""
    check_int("per_size", per_size, 1)
    check_int("seed", seed, 0)
    tasks = tuple(MIXTURE_TASKS) if tasks is None else tuple(tasks)
    for task in tasks:
        if task not in MIXTURE_TASKS:
            raise ValueError(f"tasks item = {task!r} is not allowed; choose from {tuple(MIXTURE_TASKS)}")
    rows = []
    for task in tasks:
        rng = stream(seed, f"own_words:{task}")
        if task == "arithmetic":
            for op in OPERATIONS:
                for template in _templates(op, per_size, rng):
                    rows.append({**_arithmetic_row(op, template, n, rng), "task": task})
        elif task == "fibonacci_linear":
            for depth in training_sizes(task) + heldout_sizes(task):
                for template in _templates(task, per_size, rng):
                    rows.append({**_fibonacci_row(template, depth, n, rng), "task": task})
        else:
            config = SequenceConfig(
                name=task, task=task, n=n, **MIXTURE_TASKS[task][1], examples_per_length=1, ood_examples_per_length=1
            )
            for length in config.lengths + config.ood_lengths:
                indices = sample_distinct(rng, config.space(length), per_size)
                for template, index in zip(_templates(task, per_size, rng), indices, strict=True):
                    problem = sequence_problem(config, index, length)
                    question = phrase(template, problem.fields, rng, True, QUOTED_FIELDS)
                    row = sequence_example(config, problem, length, question)
                    rows.append({**_answered(row, length, n), "task": task})
    return datasets.Dataset.from_list(rows, features=FEATURES)


def _templates(key: str, count: int, rng) -> list[str]:
    """`count` wordings of `key`: its templates in a seeded order, in turn."""
    order = list(OWN_WORDS_TEMPLATES[key])
    rng.shuffle(order)
    return [order[i % len(order)] for i in range(count)]


def _arithmetic_row(op: str, template: str, n: int, rng) -> dict:
    low = 1 if op in ("div", "mod") else 0  # no zero divisors, as the arithmetic builder's default
    integer = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y}.get(op)
    while True:
        x, y = rng.randrange(n), rng.randrange(low, n)
        # Without "mod n" in the wording, only problems whose integer answer is in 0..n-1 (so it is the answer).
        if op not in WRAPPING or "{n}" in template or 0 <= integer(x, y) < n:
            break
    question = phrase(template, {"x": x, "y": y, "n": n}, rng, True, QUOTED_FIELDS)
    row = make_example(question, "", [0], op, [], [x, y], "register", 0, op)
    return _answered(row, 0, n)


def _fibonacci_row(template: str, depth: int, n: int, rng) -> dict:
    x0, x1 = rng.randrange(n), rng.randrange(n)
    plural = "" if depth == 1 else "s"
    fields = {"a": x0, "b": x1, "d": depth, "n": n}
    fields |= {"additions": "addition" + plural, "steps": "step" + plural, "times": "time" + plural}
    question = phrase(template, fields, rng, True, QUOTED_FIELDS)
    row = make_example(question, "", [0], "fib_linear", [], [x0, x1, depth], "register", 0, "fib", depth=depth)
    return _answered(row, depth, n)


@functools.cache
def _program(name: str, n: int) -> Program:
    return assemble_library([name], n=n)[name]


def _answered(row: dict, size: int, n: int) -> dict:
    """`row` with its answer (ids and text) from the reference interpreter running its library program on its
    input (word size n): register answers are r0, memory answers the row's width of cells from m[0]."""
    program = row["program"]
    result = run_reference(
        _program(program, n),
        min(n, max(memory_needed(program, size), len(row["memory"]))),
        row["memory"],
        row["registers"],
        max_steps=step_bound(program, size),
    )
    if not result.halted:
        raise RuntimeError(f"library program {program!r} did not halt on {row['question']!r}")
    answer_ids = read_answer(row, result.memory, result.registers)
    if row["answer_in"] == "register":
        answer = str(answer_ids[0])
    elif program == SOLVING_PROGRAM["addition"]:
        answer = "".join(chr(v) for v in answer_ids).lstrip("0") or "0"  # the carry digit first: "0579" is 579
    else:
        answer = "".join(chr(v) for v in answer_ids)
    return row | {"answer": answer, "answer_ids": answer_ids}


__all__ = ["OWN_WORDS_TEMPLATES", "heldout_sizes", "own_words", "training_sizes"]
