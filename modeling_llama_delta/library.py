"""The standard library Λ: readable ISA v1 assembly, one assembly unit per program.

The calling convention, one for every program, so that one parser can feed them all:

- **Numbers** a question gives are in registers r0, r1, ... in the order the program's docstring lists them, which
  is their order in the question's canonical wording ("Subtract 3 from 10" still gives r0 = 10, r1 = 3: which
  number goes where is the parser's to learn). The modulus of a question is Δ's word size n, not an input. A
  single character that a program takes besides its string (`count`'s) is such a number: its code point.
- **A sequence** (a string, a numeral's digits, a bit string) is in memory from m[0], in text order (a numeral
  most significant digit first), as the code points of its characters ('a' = 97, '7' = 55, '1' = 49) and
  zero-terminated; a second sequence (`add_digits`' B) follows the first's terminator. Code points make every
  sequence what its tokens spell, so one parser copies them all. A numeric array (`sum`) holds its values.
- **Results** are where the program's docstring says: r0 for a number; a sequence from m[0], zero-terminated.

Each source opens with a `;;` block (what it computes, inputs and outputs per this convention, the memory it
uses, its exact worst-case step count), then `.func NAME`; its entry function ends in `ret`, which halts because
`ra` starts at the trailing `halt`. Defaults: n = 128, 8 registers (sp = r6, ra = r7). Programs use r0..r5 as
scratch and set every register they read that is not an input, so garbage in non-input registers is harmless.

Step counts count executed lines with the final `halt` (as `run_reference` does); the differentiable
machine's cost is linear in them, which is why inner loops are rotated (test at the bottom) and carry no
needless moves. Sources are string constants so the package stays self-contained as remote code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .assembler import OPERAND_KINDS, Program, assemble

# Binary programs: r0 := r0 OP r1, the ISA's own ALU operation (div/mod by 0 give 0).
BINARY_PROGRAMS: tuple[str, ...] = ("add", "sub", "mul", "div", "mod", "min", "max")
_BINARY_MEANING = {
    "add": "r0 + r1 mod n",
    "sub": "r0 - r1 mod n",
    "mul": "r0 * r1 mod n",
    "div": "r0 // r1 (0 where r1 = 0)",
    "mod": "r0 % r1 (0 where r1 = 0)",
    "min": "the smaller of r0, r1",
    "max": "the larger of r0, r1",
}


def _binary_source(op: str) -> str:
    return f"""\
;; {op}: r0 := {_BINARY_MEANING[op]}.
;; In: r0, r1.  Out: r0.  Memory: none.  Steps: 3.
.func {op}
    {op} r0, r0, r1
    ret
"""


FIB = """\
;; fib (iterative): x_{i+1} = x_i + x_{i-1} mod n.
;; In: r0 = x0, r1 = x1, r2 = depth >= 0.  Out: r0 = x_{depth+1} (depth 0 -> x1, depth 1 -> x0 + x1).
;; Memory: none.  Clobbers r1, r2.
;; Steps: 3*depth + 3, plus 1 for an even depth (unrolled twice: the pair x_{i-1}, x_i is updated in place,
;; the newer value alternating between r1 and r0, so the loop carries no moves).
.func fib
    jez r2, newest_in_r1
pair:
    add r0, r0, r1          ; r0 := next term (newest now in r0)
    dec r2, r2
    jez r2, newest_in_r0
    add r1, r0, r1          ; r1 := next term (newest now in r1)
    dec r2, r2
    jnz r2, pair
newest_in_r1:
    mov r0, r1
newest_in_r0:
    ret
"""

FIB_RECURSIVE = """\
;; fib_recursive: the same sequence as fib, by genuine recursion through a stack in memory.
;; In: r0 = x0, r1 = x1, r2 = depth >= 0, sp = stack base (0 at start).  Out: r0 = x_{depth+1}, r1 = x_depth.
;; f(depth) returns the pair (x_{depth+1}, x_depth): f(0) = (x1, x0); f(d) = (a + b, a) where (a, b) = f(d - 1).
;; Each level pushes ra at m[sp] and calls itself; the addition happens after the call returns.
;; Memory: the stack m[sp .. sp+depth-1] (sp starts at 0: memory_size >= depth); sp is restored on return.
;; Clobbers r2, r3.  Steps: 10*depth + 6 (5 down and 5 up per level, 5 for the base case, the halt).
.func fib_recursive
    jez r2, base
    write sp, ra            ; push the return address
    inc sp, sp
    dec r2, r2
    call fib_recursive      ; r0, r1 := x_depth, x_{depth-1}
    add r0, r0, r1          ; x_{depth+1} = x_depth + x_{depth-1}
    sub r1, r0, r1          ; x_depth = x_{depth+1} - x_{depth-1} (exact mod n)
    dec sp, sp              ; pop the return address
    read ra, sp
    ret
base:
    mov r3, r0              ; (r0, r1) := (x1, x0)
    mov r0, r1
    mov r1, r3
    ret
"""

FIB_LINEAR = """\
;; fib_linear: the same x_{depth+1} as fib, reading each input once: x_{d+1} = F(d)*x0 + F(d+1)*x1 mod n,
;; the Fibonacci coefficients F(d+1), F(d) by fib_recursive's recursion run on (0, 1) instead of (x0, x1).
;; Why a second Fibonacci: Δ's soft run treats every read of a register as an independent draw (mean field), so
;; fib_recursive, which adds x0 into the answer F(d) times, turns an uncertain x0 into a sum of F(d) independent
;; copies whose gradient fades with each copy; here x0 and x1 are read once each, and on exact depth and
;; independent inputs Δ's soft answer is the answer's exact distribution (experiments/README.md, "Fibonacci").
;; In: r0 = x0, r1 = x1, r2 = depth >= 0, sp = stack base (0 at start).  Out: r0 = x_{depth+1}.
;; Memory: the stack m[sp .. sp+depth] (sp starts at 0: memory_size >= depth + 1); sp is restored on return.
;; Clobbers r1..r5.  Steps: 10*depth + 19 (7 before the recursion, 10*depth + 5 in it, 6 after, the halt).
.func fib_linear
    write sp, ra            ; push the return address (the recursion's calls overwrite ra)
    inc sp, sp
    mov r4, r0              ; r4 := x0
    mov r5, r1              ; r5 := x1
    const r0, 0
    const r1, 1
    call coefficients       ; r0, r1 := F(depth+1), F(depth)
    mul r4, r4, r1          ; F(depth) * x0
    mul r5, r5, r0          ; F(depth+1) * x1
    add r0, r4, r5
    dec sp, sp              ; pop the return address
    read ra, sp
    ret
coefficients:               ; fib_recursive's body: (r0, r1) := (x_{r2+1}, x_{r2}) of the sequence from (r0, r1)
    jez r2, base
    write sp, ra
    inc sp, sp
    dec r2, r2
    call coefficients
    add r0, r0, r1
    sub r1, r0, r1
    dec sp, sp
    read ra, sp
    ret
base:
    mov r3, r0
    mov r0, r1
    mov r1, r3
    ret
"""

STRLEN = """\
;; strlen: length of the zero-terminated string at m[0].
;; In: the string (characters 1..n-1), length L <= min(memory_size - 1, n - 1).  Out: r0 = L.
;; Memory: reads m[0..L].  Clobbers r1.  Steps: 3*L + 6.
.func strlen
    const r0, -1            ; r0 := index - 1 (n - 1; the first inc wraps it to 0)
scan:
    inc r0, r0
    read r1, r0
    jnz r1, scan            ; stops on the terminator, at index L
    ret
"""

COUNT = """\
;; count: occurrences of a character in the zero-terminated string at m[0].
;; In: r0 = character (1..n-1), the string, length L <= min(memory_size - 1, n - 1).  Out: r0 = count.
;; Memory: reads m[0..L].  Clobbers r1..r4.  Steps: 5*L + 10.
;; The terminator goes through the loop body too: it never matches, since characters are nonzero.
.func count
    mov r2, r0              ; r2 := the character
    const r0, 0             ; r0 := count
    const r1, 0             ; r1 := index
scan:
    read r3, r1
    eq r4, r3, r2
    add r0, r0, r4
    inc r1, r1
    jnz r3, scan            ; r3 = 0: that was the terminator
    ret
"""

REVERSE = """\
;; reverse: reverses the zero-terminated string at m[0] in place (the terminator stays).
;; In: the string (characters 1..n-1), length L <= min(memory_size - 1, n - 1).  Out: the string reversed.
;; Memory: m[0..L-1], reads m[L].  Clobbers r0..r3.  Steps: 3*L + 10 + 8*ceil(L/2).
.func reverse
    const r1, -1            ; r1 := index - 1 (n - 1; the first inc wraps it to 0)
find_end:
    inc r1, r1
    read r2, r1
    jnz r2, find_end        ; r1 := L, one past the right end
    const r0, 0             ; r0 := i, the left end
    jmp test
swap:
    dec r1, r1              ; r1 := j, the right end (j = i in the middle of an odd L: a harmless self-swap)
    read r2, r0
    read r3, r1
    write r0, r3
    write r1, r2
    inc r0, r0
test:
    lt r2, r0, r1           ; while i < j + 1 (testing before the dec keeps L = 0 from wrapping)
    jnz r2, swap
    ret
"""

SORT = """\
;; sort: insertion sort, ascending, of the zero-terminated string at m[0], in place (the terminator stays).
;; In: the string (characters 1..n-1), length L <= min(memory_size - 1, n - 1).  Out: the string sorted.
;; Memory: m[0..L-1], reads m[L] (and m[n-1] when a key reaches the front; the value is not used).
;; Clobbers r0..r5.  Steps: 12*L - 4 + 7*S for L >= 1, where S = number of inversions (shifts);
;; worst case (strictly decreasing) 12*L - 4 + 7*L*(L-1)/2; 5 for the empty string.
.func sort
    const r0, 0             ; r0 := i
    read r1, r0
    jez r1, done            ; the empty string is sorted
next:
    inc r0, r0              ; m[0..i-1] is sorted; insert m[i]
    read r1, r0             ; r1 := key = m[i]
    jez r1, done            ; the terminator: all sorted
    mov r2, r0              ; r2 := j, the hole the key will fill
    dec r3, r0              ; r3 := j - 1
    jmp test
shift:
    write r2, r4            ; m[j] := m[j-1]
    mov r2, r3              ; j := j - 1
    dec r3, r3
test:
    read r4, r3             ; r4 := m[j-1] (j = 0 reads m[n-1]; the min below ignores it)
    lt r5, r1, r4           ; key < m[j-1] ...
    min r5, r5, r2          ; ... and j > 0 (min of a 0/1 flag and j is their AND)
    jnz r5, shift
    write r2, r1            ; m[j] := key
    jmp next
done:
    ret
"""

SUM = """\
;; sum: sum mod n of the zero-terminated array of numbers at m[0].
;; In: the values (1..n-1: a 0 ends the array, and a zero element adds nothing, so leave it out), L of them,
;; L <= memory_size - 1.  Out: r0 = sum mod n.
;; Memory: reads m[0..L].  Clobbers r1, r2.  Steps: 4*L + 8.
;; The terminator goes through the loop body too: it adds 0.
.func sum
    const r0, 0             ; r0 := running sum
    const r1, 0             ; r1 := index
add_next:
    read r2, r1
    add r0, r0, r2
    inc r1, r1
    jnz r2, add_next        ; r2 = 0: that was the terminator
    ret
"""

PARITY = """\
;; parity: parity of a bit string, written as the characters '0' and '1'.
;; In: the zero-terminated string at m[0] (code points 48 = '0', 49 = '1'), length L <= min(memory_size - 1, n - 1).
;; Out: r0 = (number of '1's) % 2.  Memory: reads m[0..L].  Clobbers r1..r4.  Needs n >= 50 (the code point of
;; '1'; 2 is a constant too).  Steps: 5*L + 12.
;; The count of ones is at most L <= n - 1, so summing mod n is exact; one mod 2 at the end. The terminator goes
;; through the loop body too: it is not '1'.
.func parity
    const r0, 0             ; r0 := number of '1's
    const r1, 0             ; r1 := index
    const r2, '1'
scan:
    read r3, r1
    eq r4, r3, r2
    add r0, r0, r4
    inc r1, r1
    jnz r3, scan            ; r3 = 0: that was the terminator
    const r2, 2
    mod r0, r0, r2
    ret
"""

ADD_DIGITS = """\
;; add_digits: multi-digit base-10 addition with carries, on decimal numerals written as characters, in place.
;; In: A and B, L digits each, most significant first, as characters '0'..'9' (code points 48..57), each
;; zero-terminated: A at m[0..L-1], m[L] = 0, B at m[L+1..2L], m[2L+1] = 0 (B's terminator is not read).
;; Out: A + B as L+1 digit characters at m[0..L], most significant first (m[0] is the final carry, '0' or '1'),
;; zero-terminated at m[L+1]. Sum digit k (from the right) goes to m[L-k] once a_k = m[L-1-k] and b_k = m[2L-k]
;; are read, so no unread digit is overwritten and the answer always starts at m[0], whatever L is.
;; Memory: memory_size >= 2L + 2.  Needs n >= 58 (the code point of '9'; a digit sum is at most 19, and
;; character arithmetic mod n is exact: (a + b + carry - 2*'0') mod n is the digit sum).
;; Clobbers r0..r5.  Steps: 18*L + 16.
.func add_digits
    const r0, -1            ; r0 := index - 1 (n - 1; the first inc wraps it to 0)
find_end:
    inc r0, r0
    read r1, r0
    jnz r1, find_end        ; r0 := L, A's terminator: where sum digit 0 goes
    add r1, r0, r0          ; r1 := 2L, the address of b_0
    const r2, 0             ; r2 := carry
    const r5, 10            ; r5 := the base
    jez r0, last            ; L = 0: the sum is the single digit 0
digit:
    dec r3, r0              ; r3 := the address of a_k
    read r3, r3
    read r4, r1
    add r3, r3, r4
    add r3, r3, r2          ; a_k + b_k + carry, as characters
    const r4, 96            ; two '0's
    sub r3, r3, r4          ; s := the digit sum, 0..19
    div r2, r3, r5          ; carry := s // 10
    mod r3, r3, r5
    const r4, '0'
    add r3, r3, r4          ; the character of s % 10
    write r0, r3
    dec r1, r1
    dec r0, r0
    jnz r0, digit           ; while digits remain (the write position reaches 0)
last:
    const r4, '0'
    add r2, r2, r4
    write r0, r2            ; m[0] := the final carry's character
    inc r1, r1              ; r1 := L + 1 (b_0's address, read already)
    const r4, 0
    write r1, r4            ; the sum's terminator
    ret
"""

LIBRARY: dict[str, str] = {
    **{op: _binary_source(op) for op in BINARY_PROGRAMS},
    "fib": FIB,
    "fib_recursive": FIB_RECURSIVE,
    "fib_linear": FIB_LINEAR,
    "strlen": STRLEN,
    "count": COUNT,
    "reverse": REVERSE,
    "sort": SORT,
    "sum": SUM,
    "parity": PARITY,
    "add_digits": ADD_DIGITS,
}
PROGRAM_NAMES: tuple[str, ...] = tuple(LIBRARY)

# name -> (what `size` measures, memory cells needed, worst-case steps with the halt), matching the `;;` blocks.
_SIZES: dict[str, tuple[str, Callable[[int], int], Callable[[int], int]]] = {
    **{op: ("unused", lambda s: 1, lambda s: 3) for op in BINARY_PROGRAMS},
    "fib": ("depth", lambda d: 1, lambda d: 3 * d + 3 + (d % 2 == 0)),
    "fib_recursive": ("depth", lambda d: max(1, d), lambda d: 10 * d + 6),
    "fib_linear": ("depth", lambda d: d + 1, lambda d: 10 * d + 19),
    "strlen": ("string length", lambda s: s + 1, lambda s: 3 * s + 6),
    "count": ("string length", lambda s: s + 1, lambda s: 5 * s + 10),
    "reverse": ("string length", lambda s: s + 1, lambda s: 3 * s + 10 + 8 * ((s + 1) // 2)),
    "sort": ("string length", lambda s: s + 1, lambda s: max(5, 12 * s - 4 + 7 * s * (s - 1) // 2)),
    "sum": ("array length", lambda s: s + 1, lambda s: 4 * s + 8),
    "parity": ("string length", lambda s: s + 1, lambda s: 5 * s + 12),
    "add_digits": ("digits per operand", lambda s: 2 * s + 2, lambda s: 18 * s + 16),
}
# name -> (source, format): where each program's result is and how it reads as text, as its `;;` block says:
# ("registers", "integers") is the ONE value r0; ("memory", "string") a zero-terminated string from m[0];
# ("memory", "digits") digit characters from m[0], most significant (the carry) first, zero-terminated.
RESULTS: dict[str, tuple[str, str]] = {
    **{op: ("registers", "integers") for op in BINARY_PROGRAMS},
    **{name: ("registers", "integers") for name in ("fib", "fib_recursive", "fib_linear", "strlen", "count", "sum")},
    "parity": ("registers", "integers"),
    "sort": ("memory", "string"),
    "reverse": ("memory", "string"),
    "add_digits": ("memory", "digits"),
}
# name -> how many zero-terminated sequences it reads from m[0] (add_digits: A then B, of one length each).
SEQUENCES_READ: dict[str, int] = {
    **{op: 0 for op in BINARY_PROGRAMS},
    **{name: 0 for name in ("fib", "fib_recursive", "fib_linear")},
    **{name: 1 for name in ("strlen", "count", "reverse", "sort", "sum", "parity")},
    "add_digits": 2,
}
# name -> how many input registers r0, r1, ... it reads (its `;;` block's "In:"; count's character is r0).
REGISTERS_READ: dict[str, int] = {
    **{op: 2 for op in BINARY_PROGRAMS},
    **{name: 3 for name in ("fib", "fib_recursive", "fib_linear")},
    **{name: 0 for name in ("strlen", "reverse", "sort", "sum", "parity", "add_digits")},
    "count": 1,
}
# name -> the input registers that hold a character's code point rather than a number (count's r0).
CHARACTER_INPUTS: dict[str, tuple[int, ...]] = {"count": (0,)}
# Word sizes below which a program computes wrong values (its ROM length is a separate, larger limit).
MIN_WORD_SIZE: dict[str, int] = {"parity": 50, "add_digits": 58}


def library_source(name: str) -> str:
    """Assembly text of library program `name`."""
    if name not in LIBRARY:
        raise KeyError(f"unknown library program {name!r}; known: {', '.join(PROGRAM_NAMES)}")
    return LIBRARY[name]


def size_meaning(name: str) -> str:
    """What the `size` argument of `memory_needed` / `step_bound` counts for `name`."""
    library_source(name)
    return _SIZES[name][0]


def memory_needed(name: str, size: int = 0) -> int:
    """Fewest memory cells (the minimum `memory_size`) for an input of `size` (see `size_meaning`).

    Assumes sp = 0 for `fib_recursive`, whose stack needs sp + depth cells.
    """
    library_source(name)
    return _SIZES[name][1](size)


def step_bound(name: str, size: int = 0) -> int:
    """Worst-case executed lines, the final halt included, for an input of `size` (exact: some input meets it)."""
    library_source(name)
    return _SIZES[name][2](size)


@functools.cache
def _default_program(name: str) -> Program:
    return assemble(library_source(name), n=128, num_registers=8)


def min_registers(name: str) -> int:
    """Fewest registers for `name`: its scratch registers r0..rK must stay clear of sp = r(R-2) and ra = r(R-1)."""
    used = [
        getattr(ins, kind)
        for ins in _default_program(name).instructions
        for kind in OPERAND_KINDS[ins.op]
        if kind in "dab"
    ]
    scratch = [r for r in used if r < 6]  # r6, r7 here are sp and ra, named as such in the sources
    return max(scratch) + 3


class MachineSize(NamedTuple):
    """The smallest Δ a library program needs: word size, registers, memory cells (`minimum_machine`)."""

    n: int
    num_registers: int
    memory_size: int


def minimum_machine(name: str, size: int = 0) -> MachineSize:
    """Smallest machine that runs `name` correctly on every input of `size` (see `size_meaning`).

    n covers the ROM (program + trailing halt), the memory, the size itself as a register value and
    MIN_WORD_SIZE; num_registers is `min_registers`; memory_size is `memory_needed`.
    """
    rom_lines = len(_default_program(name).instructions)
    memory_size = memory_needed(name, size)
    size_as_value = 0 if name in BINARY_PROGRAMS else size + 1  # a length or depth sits in a register
    n = max(rom_lines, MIN_WORD_SIZE.get(name, 2), memory_size, size_as_value)
    return MachineSize(n, min_registers(name), memory_size)


def assemble_library(names: Iterable[str] | None = None, n: int = 128, num_registers: int = 8) -> dict[str, Program]:
    """Assemble library programs (all when `names` is None) for one machine; name -> Program."""
    names = PROGRAM_NAMES if names is None else tuple(names)
    unknown = [name for name in names if name not in LIBRARY]
    if unknown:
        raise KeyError(f"unknown library program(s) {unknown}; known: {', '.join(PROGRAM_NAMES)}")
    programs = {}
    for name in names:
        check_machine_fits(name, n, num_registers)
        programs[name] = assemble(LIBRARY[name], n=n, num_registers=num_registers)
    return programs


def check_machine_fits(name: str, n: int, num_registers: int) -> None:
    """Refuse a machine too small for library program `name`: its word size, or registers that would put its
    scratch registers on sp / ra (it would then assemble but run wrong, or never halt)."""
    if n < MIN_WORD_SIZE.get(name, 2):
        raise ValueError(f"library program {name!r} needs word size n >= {MIN_WORD_SIZE[name]}; got n = {n}")
    if num_registers < min_registers(name):
        raise ValueError(
            f"library program {name!r} needs num_registers >= {min_registers(name)} "
            f"(scratch registers plus sp and ra); got {num_registers}"
        )
