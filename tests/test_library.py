"""The standard library Λ against plain Python, on the reference interpreter.

Every run starts from a hostile state: non-input registers and the memory past the input hold random
junk, and memory is as small as `memory_needed` says it may be. Step counts are checked against the
documented bounds, and the bounds against inputs that meet them.
"""

import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_llama_delta.library import (
    BINARY_PROGRAMS,
    LIBRARY,
    MIN_WORD_SIZE,
    PROGRAM_NAMES,
    REGISTERS_READ,
    RESULTS,
    SEQUENCES_READ,
    assemble_library,
    library_source,
    memory_needed,
    min_registers,
    minimum_machine,
    size_meaning,
    step_bound,
)
from modeling_llama_delta.machine import DeltaMachine
from modeling_llama_delta.reference import ReferenceResult, binary_op, run_reference

N = 128
ASSEMBLED = {n: assemble_library(n=n) for n in (128, 256)} | {58: assemble_library(["add_digits", "parity"], n=58)}
SP = 6  # sp register index with 8 registers
STACKED = ("fib_recursive", "fib_linear")  # programs that keep a stack from sp


def run(
    name: str, memory: list[int], inputs: list[int], size: int, rng: random.Random, n: int = N, memory_size=None
) -> ReferenceResult:
    """Run `name` with `inputs` in r0.. and junk in the other scratch registers; memory past `memory` is junk.

    sp gets junk too unless the program keeps a stack from it (the recursive Fibonaccis); checks halting within the
    bound.
    """
    memory_size = memory_size or max(memory_needed(name, size), len(memory))
    junk_memory = [rng.randrange(n) for _ in range(memory_size - len(memory))]
    registers = inputs + [rng.randrange(n) for _ in range(6 - len(inputs))]
    registers.append(0 if name in STACKED else rng.randrange(n))
    result = run_reference(
        ASSEMBLED[n][name], memory_size, memory + junk_memory, registers, max_steps=step_bound(name, size) + 1
    )
    assert result.halted, f"{name} did not halt within {step_bound(name, size)} steps"
    assert result.steps <= step_bound(name, size)
    assert result.registers[SP] == registers[SP], f"{name} moved sp"
    if name not in STACKED:  # their stack lies past the input
        assert result.memory[len(memory) :] == junk_memory, f"{name} wrote past its input"
    return result


def random_string(rng: random.Random, length: int, alphabet: list[int]) -> list[int]:
    return [rng.choice(alphabet) for _ in range(length)]


def string_cases(rng: random.Random, n: int = N):
    """(characters, memory_size): full, tiny and one-letter alphabets; empty, length 1, longest possible."""
    alphabets = [list(range(1, n)), [1, 2], [n - 1], list(range(ord("a"), ord("z") + 1))]
    for length in [0, 1, 2, 3, n - 2, n - 1] + [rng.randrange(4, 40) for _ in range(30)]:
        for alphabet in alphabets:
            chars = random_string(rng, length, alphabet)
            yield chars, length + 1  # tight memory: the terminator in the last cell
            if length < n - 1:
                yield chars, n


def test_sources_are_documented_units():
    for name in PROGRAM_NAMES:
        lines = [line.strip() for line in library_source(name).splitlines() if line.strip()]
        assert lines[0].startswith(";; " + name), f"{name}: no ';;' block naming it first"
        code = [line for line in lines if not line.startswith(";")]
        assert code[0] == f".func {name}"
        assert "Steps:" in library_source(name)
        for n in (128, 256):
            program = assemble_library([name], n=n)[name]
            assert program.functions == {name: 0}
            assert any(ins.op == "ret" for ins in program.instructions)
        assert size_meaning(name)


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="unknown library program 'qsort'.*sort"):
        library_source("qsort")
    with pytest.raises(KeyError, match=r"\['nope'\].*fib_recursive"):
        assemble_library(["add", "nope"])
    with pytest.raises(KeyError, match="known"):
        step_bound("nope", 3)


def test_minimum_machines():
    assert set(assemble_library()) == set(LIBRARY)
    with pytest.raises(ValueError, match="add_digits.*n >= 58"):
        assemble_library(["add_digits"], n=57)
    with pytest.raises(ValueError, match="parity.*n >= 50"):
        assemble_library(["parity"], n=49)
    with pytest.raises(ValueError, match="sort.*num_registers >= 8"):
        assemble_library(["sort"], num_registers=7)
    assert min_registers("add") == 4 and min_registers("fib_recursive") == 6
    # A program on its smallest machine still computes (sp, ra are r2, r3 here).
    small = assemble_library(["sub"], n=16, num_registers=4)["sub"]
    assert run_reference(small, 1, registers=[3, 5]).registers[0] == 14


@pytest.mark.parametrize("n", [128, 256])
def test_binary_programs(n):
    rng = random.Random(n)
    pairs = [(0, 0), (n - 1, n - 1), (n - 1, 0), (5, 0), (0, 7)] + [
        (rng.randrange(n), rng.randrange(n)) for _ in range(200)
    ]
    for op in BINARY_PROGRAMS:
        for x, y in pairs:
            result = run(op, [], [x, y], 0, rng, n=n)
            assert result.registers[0] == binary_op(op, x, y, n), (op, x, y)
            assert result.steps == step_bound(op) == 3


def fibonacci(x0: int, x1: int, depth: int, n: int) -> int:
    for _ in range(depth):
        x0, x1 = x1, (x0 + x1) % n
    return x1


@pytest.mark.parametrize("name", ["fib", "fib_recursive", "fib_linear"])
def test_fibonacci_every_depth(name):
    rng = random.Random(1)
    for depth in range(N):
        for x0, x1 in [(0, 1), (rng.randrange(N), rng.randrange(N))]:
            result = run(name, [], [x0, x1, depth], depth, rng)
            assert result.registers[0] == fibonacci(x0, x1, depth, N), (name, x0, x1, depth)
            assert result.steps == step_bound(name, depth)


@pytest.mark.parametrize("name", STACKED)
def test_recursive_fibonacci_stack_from_any_base(name):
    """The stack grows from sp, leaves the memory below it alone, and sp comes back."""
    rng = random.Random(2)
    for depth in range(0, 20):
        base = rng.randrange(N - depth - 1)
        below = [rng.randrange(N) for _ in range(base)]
        registers = [3, 4, depth, 0, 0, 0, base]
        result = run_reference(ASSEMBLED[N][name], N, below, registers, max_steps=step_bound(name, depth))
        assert result.halted and result.registers[0] == fibonacci(3, 4, depth, N)
        assert result.registers[SP] == base and result.memory[:base] == below
        # The first frame saved the caller's return address: the halt line.
        if depth or name == "fib_linear":
            assert result.memory[base] == ASSEMBLED[N][name].halt_line


def test_strlen_count_reverse_sort():
    rng = random.Random(3)
    for chars, memory_size in string_cases(rng):
        memory, length = chars + [0], len(chars)
        result = run("strlen", memory, [], length, rng, memory_size=memory_size)
        assert result.registers[0] == length and result.steps == step_bound("strlen", length)

        target = rng.choice(chars) if chars and rng.random() < 0.8 else rng.randrange(1, N)
        result = run("count", memory, [target], length, rng, memory_size=memory_size)
        assert result.registers[0] == chars.count(target) and result.steps == step_bound("count", length)

        result = run("reverse", memory, [], length, rng, memory_size=memory_size)
        assert result.memory[: length + 1] == chars[::-1] + [0] and result.steps == step_bound("reverse", length)

        result = run("sort", memory, [], length, rng, memory_size=memory_size)
        assert result.memory[: length + 1] == sorted(chars) + [0]
        inversions = sum(chars[i] > chars[j] for i in range(length) for j in range(i + 1, length))
        assert result.steps == (5 if length == 0 else 12 * length - 4 + 7 * inversions)


def test_sort_worst_case_meets_the_bound():
    rng = random.Random(4)
    for length in range(0, 40):
        decreasing = list(range(length, 0, -1))
        assert run("sort", decreasing + [0], [], length, rng).steps == step_bound("sort", length)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, N - 1), max_size=24), st.integers(0, 2**32))
def test_sort_property(chars, seed):
    result = run("sort", chars + [0], [], len(chars), random.Random(seed))
    assert result.memory[: len(chars) + 1] == sorted(chars) + [0]


@pytest.mark.parametrize("n", [128, 256])
def test_sum_and_parity(n):
    rng = random.Random(n + 5)
    for length in [0, 1, 2, n - 1] + [rng.randrange(3, n) for _ in range(20)]:
        values = [rng.randrange(1, n) for _ in range(length)]
        if rng.random() < 0.3:
            values = [n - 1] * length  # wraps many times
        result = run("sum", values + [0], [], length, rng, n=n)
        assert result.registers[0] == sum(values) % n and result.steps == step_bound("sum", length)

        bits = [rng.choice("01") for _ in range(length)]
        result = run("parity", [ord(b) for b in bits] + [0], [], length, rng, n=n)
        assert result.registers[0] == bits.count("1") % 2 and result.steps == step_bound("parity", length)
    # The string may fill the memory, the terminator in its last cell.
    assert run("sum", [9] * 10 + [0], [], 10, rng, memory_size=11).registers[0] == 90
    assert run("parity", [ord("1")] * 7 + [0], [], 7, rng, memory_size=8).registers[0] == 1


def numeral(digits: str) -> list[int]:
    """A numeral's characters as Δ holds them: code points, most significant digit first."""
    return [ord(d) for d in digits]


@pytest.mark.parametrize("n", [58, 128, 256])  # 58: the smallest word that holds '9'
def test_add_digits(n):
    rng = random.Random(n + 6)
    longest = (n - 2) // 2
    for length in [0, 1, longest] + [rng.randrange(1, longest + 1) for _ in range(40)]:
        a = "".join(rng.choice("0123456789") for _ in range(length))
        b = "".join(str(9 - int(d)) for d in a) if rng.random() < 0.3 else "".join(rng.choice("0123456789") for _ in a)
        if length and rng.random() < 0.3:
            b = b[:-1] + str(min(9, int(b[-1]) + 1))  # with b = 9 - a this carries through every digit
        result = run("add_digits", numeral(a) + [0] + numeral(b) + [0], [], length, rng, n=n)
        expected = str(int(a or "0") + int(b or "0")).zfill(length + 1)
        assert result.memory[: length + 2] == numeral(expected) + [0], (a, b, result.memory)
        assert result.steps == step_bound("add_digits", length)
    all_nines = numeral("9" * longest)
    result = run("add_digits", all_nines + [0] + all_nines + [0], [], longest, rng, n=n)
    assert result.memory[: longest + 2] == numeral("1" + "9" * (longest - 1) + "8") + [0]


def random_case(name: str, size: int, n: int, rng: random.Random):
    """(memory, input registers, expected output check) for a random input of `size` on word size n."""
    if name in BINARY_PROGRAMS:
        x, y = rng.randrange(n), rng.randrange(n)
        return [], [x, y], lambda r: r.registers[0] == binary_op(name, x, y, n)
    if name in ("fib", *STACKED):
        x0, x1 = rng.randrange(n), rng.randrange(n)
        return [], [x0, x1, size], lambda r: r.registers[0] == fibonacci(x0, x1, size, n)
    if name == "sum":
        values = [rng.randrange(1, n) for _ in range(size)]
        return values + [0], [], lambda r: r.registers[0] == sum(values) % n
    if name == "parity":
        bits = "".join(rng.choice("01") for _ in range(size))
        return numeral(bits) + [0], [], lambda r: r.registers[0] == bits.count("1") % 2
    if name == "add_digits":
        a, b = ("".join(rng.choice("0123456789") for _ in range(size)) for _ in range(2))
        total = numeral(str(int(a or "0") + int(b or "0")).zfill(size + 1)) + [0]
        return numeral(a) + [0] + numeral(b) + [0], [], lambda r: r.memory[: size + 2] == total
    chars = [rng.randrange(1, n) for _ in range(size)]
    target = rng.choice(chars) if chars else 1
    expected = {
        "strlen": lambda r: r.registers[0] == size,
        "count": lambda r: r.registers[0] == chars.count(target),
        "reverse": lambda r: r.memory[: size + 1] == chars[::-1] + [0],
        "sort": lambda r: r.memory[: size + 1] == sorted(chars) + [0],
    }[name]
    return chars + [0], [target] if name == "count" else [], expected


@pytest.mark.parametrize("name", PROGRAM_NAMES)
def test_minimum_machine_is_enough(name):
    """Each program computes on its smallest machine; one register fewer is refused."""
    rng = random.Random(name)
    for size in [0, 1, 2, 5, 9]:
        machine = minimum_machine(name, size)
        program = assemble_library([name], n=machine.n, num_registers=machine.num_registers)[name]
        for _ in range(10):
            memory, inputs, expected = random_case(name, size, machine.n, rng)
            result = run_reference(program, machine.memory_size, memory, inputs, max_steps=step_bound(name, size))
            assert result.halted and expected(result), (name, size, machine, memory, inputs)
    with pytest.raises(ValueError, match="num_registers"):
        assemble_library([name], num_registers=min_registers(name) - 1)


@pytest.mark.parametrize("alu", ["structured", "circuit"])
@pytest.mark.parametrize("name", PROGRAM_NAMES)
def test_delta_runs_every_library_program_exactly(name, alu):
    """Δ on one-hot inputs: the reference interpreter's final state, and the program's answer, on random inputs."""
    n, size = (64 if name in MIN_WORD_SIZE else 32), 6  # 64: words that hold the code points of '0'..'9'
    rng = random.Random(f"{name}-{alu}")
    memory_size = memory_needed(name, size)
    cases = [random_case(name, rng.choice([0, 1, size]), n, rng) for _ in range(6)]
    program = assemble_library([name], n=n)[name]
    machine = DeltaMachine(n, 8, memory_size, alu=alu, programs=[program])
    memories, registers = [c[0] for c in cases], [c[1] for c in cases]
    out = machine(machine.initial_state(memories, registers), max_steps=step_bound(name, size))
    values = out.program_states.values()
    for b, (memory, inputs, expected) in enumerate(cases):
        ref = run_reference(program, memory_size, memory, inputs, max_steps=step_bound(name, size))
        assert ref.halted and expected(ref), (name, memory, inputs)
        assert values["memory"][b, 0].tolist() == ref.memory and values["registers"][b, 0].tolist() == ref.registers
    assert float(out.program_states.confidence().min()) >= 0.999 and bool(out.program_states.halted.min() == 1)


def test_fib_linear_soft_answer_is_the_exact_distribution():
    """On uncertain, independent x0 and x1 (exact depth), Δ's mean-field run of fib_linear gives the answer's exact
    distribution; fib_recursive, which reads x0 and x1 many times, gives a wider one (its copies count as independent).
    Why fib_linear trains at every depth in the minimal network (experiments/README.md, "Fibonacci")."""
    n, depth = 32, 4  # fib_linear is 27 lines: n >= 28 ROM lines
    torch.manual_seed(0)
    inputs = torch.distributions.Dirichlet(torch.full((n,), 0.3)).sample((2, 2))  # (B=2, x0/x1, n)
    x0, x1 = inputs.unbind(1)  # (B, n) each
    registers = torch.cat([inputs, F.one_hot(torch.full((2, 1), depth), n).float()], dim=1)  # (B, 3, n)
    values = torch.arange(n)
    a, b = fibonacci(0, 1, depth - 1, n), fibonacci(0, 1, depth, n)  # x_{d+1} = F(d)·x0 + F(d+1)·x1
    answer = (a * values[:, None] + b * values[None, :]) % n  # (n, n): the answer for (x0, x1)
    joint = x0[:, :, None] * x1[:, None, :]  # (B, n, n)
    exact = torch.zeros(2, n).index_add_(1, answer.flatten(), joint.flatten(1))  # (B, n)
    soft = {}
    for name in STACKED:
        machine = DeltaMachine(n, 8, memory_needed(name, depth), programs={name: LIBRARY[name]})
        run = machine(machine.start_state(registers=registers), max_steps=step_bound(name, depth))
        soft[name] = run.state.registers[:, 0]  # (B, n)
    assert torch.allclose(soft["fib_linear"], exact, atol=1e-5)
    assert (soft["fib_recursive"] - exact).abs().max() > 0.05


def test_results_say_where_each_program_puts_its_result():
    """`RESULTS` (source, format) and `SEQUENCES_READ` / `REGISTERS_READ` against the reference interpreter: every
    program's answer, read only where RESULTS says and written in its format, equals an independent oracle on
    random inputs laid out as `SEQUENCES_READ` / `REGISTERS_READ` say."""
    rng = random.Random(0)
    assert set(RESULTS) == set(SEQUENCES_READ) == set(REGISTERS_READ) == set(LIBRARY)
    letters = list(range(ord("a"), ord("z") + 1))

    def fib(x0, x1, depth):
        for _ in range(depth):
            x0, x1 = x1, (x0 + x1) % N
        return x1

    for _ in range(20):
        numbers = [rng.randrange(N) for _ in range(2)] + [rng.randrange(8)]
        string = random_string(rng, rng.randrange(1, 12), letters)
        bits = random_string(rng, rng.randrange(1, 12), [ord("0"), ord("1")])
        length = rng.randrange(1, 8)
        a, b = (random_string(rng, length, list(range(ord("0"), ord("9") + 1))) for _ in range(2))
        text = "".join(map(chr, string))
        oracle = {op: str(binary_op(op, numbers[0], numbers[1], N)) for op in BINARY_PROGRAMS}
        oracle |= {name: str(fib(*numbers)) for name in ("fib", "fib_recursive", "fib_linear")}
        oracle |= {"strlen": str(len(string)), "count": str(string.count(string[0])), "sum": str(sum(string) % N)}
        oracle |= {"sort": "".join(sorted(text)), "reverse": text[::-1], "parity": str(bits.count(ord("1")) % 2)}
        oracle["add_digits"] = str(int("".join(map(chr, a))) + int("".join(map(chr, b))))
        sequences = {0: [], 1: string + [0], 2: a + [0] + b + [0]}
        for name in LIBRARY:
            memory = bits + [0] if name == "parity" else sequences[SEQUENCES_READ[name]]
            inputs = ([string[0]] if name == "count" else numbers)[: REGISTERS_READ[name]]
            size = {"depth": numbers[2], "unused": 0}.get(size_meaning(name), len(memory) and memory.index(0))
            result = run(name, memory, inputs, size, rng)
            source, answer_format = RESULTS[name]
            if source == "registers":
                answer = str(result.registers[0])
            else:
                cells = result.memory[: result.memory.index(0)]
                answer = "".join(map(chr, cells))
                answer = answer.lstrip("0") or "0" if answer_format == "digits" else answer
            assert (answer_format == "integers") == (source == "registers"), name
            assert answer == oracle[name], name
