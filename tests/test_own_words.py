"""The own-words evaluation set (`data_builders.own_words`): its wordings are no builder's (templates and questions),
its answers are the reference interpreter's on the input read back from the question, and its sizes are the
mixture's training and held-out ones; `experiments.ask_own_words` scores an export on it (right / refused / silently
wrong), checked on tiny exact models; `experiments.zero_shot_smollm2`'s prompt and scoring (SmolLM2 itself only in
a slow test)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from data_builders import FEATURES, MIXTURE_TASKS, arithmetic, fibonacci, get_builder, read_answer, sequences
from data_builders.own_words import OWN_WORDS_TEMPLATES, heldout_sizes, own_words, training_sizes
from modeling_llama_delta.library import assemble_library
from modeling_llama_delta.reference import binary_op, run_reference
from tests.test_data_builders import parse, parsed_input, template_regex

N = 128
OWN = own_words()  # the default set (per_size 10, seed 0), shared by the tests that only read it


def builder_templates() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Own-words key (an arithmetic operation or a mixture task) -> (the builders' templates, their suffixes)."""
    out = {}
    for op in arithmetic.OPERATIONS:
        suffixes = ("", *arithmetic.MODULUS_SUFFIXES) if op in arithmetic.WRAPPING else ("",)
        out[op] = (arithmetic.TEMPLATES[op] + arithmetic.HELDOUT_TEMPLATES[op], suffixes)
    out["fibonacci_linear"] = (fibonacci.TEMPLATES + fibonacci.HELDOUT_TEMPLATES, ("",))
    for task in sequences.TEMPLATES:
        out[task] = (sequences.TEMPLATES[task] + sequences.HELDOUT_TEMPLATES[task], ("",))
    return out


def key_of(row: dict) -> str:
    return row["operation"] if row["task"] == "arithmetic" else row["task"]


def normalized(template: str) -> str:
    """A template up to case, punctuation and spacing (the builders' test compares their splits this way)."""
    return " ".join(re.sub(r"[^a-z{} ]", " ", template.lower()).split())


def test_every_task_has_six_or_more_own_wordings():
    keys = set(arithmetic.OPERATIONS) | (set(MIXTURE_TASKS) - {"arithmetic"})
    assert set(OWN_WORDS_TEMPLATES) == keys
    for key, templates in OWN_WORDS_TEMPLATES.items():
        assert len(set(templates)) == len(templates) >= 6, key


def test_no_own_wording_is_a_builder_template():
    """Up to case, punctuation and spacing, with or without the arithmetic modulus suffixes, no own-words template
    is any builder's training or held-out template, of its own task or another."""
    every_builder = {
        normalized(template + suffix)
        for templates, suffixes in builder_templates().values()
        for template in templates
        for suffix in suffixes
    }
    for key, templates in OWN_WORDS_TEMPLATES.items():
        for template in templates:
            assert normalized(template) not in every_builder, (key, template)


def test_no_own_words_question_is_a_builder_question():
    """No question of the set is an instance of a builder template (any task, any suffix: the builders' own
    read-back regexes), and none equals a question of the generated `all` mixture."""
    patterns = [
        template_regex(template, suffix)
        for templates, suffixes in builder_templates().values()
        for template in templates
        for suffix in suffixes
    ]
    for question in OWN["question"]:
        assert not any(pattern.fullmatch(question) for pattern in patterns), question
    mixture = get_builder("all", examples_per_task=120, ood_examples=10, heldout_phrasing_size=20).make_splits()
    asked = {row["question"] for rows in mixture.values() for row in rows}
    assert asked and not asked & set(OWN["question"])


def test_answers_equal_reference_run_on_the_parsed_question():
    """Each question is read back to exactly one own-words template and its fields; Δ's input by the calling
    convention from those fields alone equals the row's; the task's library program, run on it in the reference
    interpreter, leaves the row's answer ids, and the answer text says them. Without "mod n" in the wording an
    add/sub/mul answer is the integer one."""
    programs = assemble_library(sorted(set(OWN["program"])), n=N)
    for row in OWN:
        template, fields = parse(row["question"], OWN_WORDS_TEMPLATES[key_of(row)])
        assert fields.get("n") in (None, str(N)), row
        memory, registers = parsed_input(row, fields)
        assert (memory, registers) == (row["memory"], row["registers"]), row
        result = run_reference(programs[row["program"]], N, memory, registers, max_steps=20_000)
        assert result.halted and read_answer(row, result.memory, result.registers) == row["answer_ids"], row
        if row["answer_in"] == "register":
            assert row["answer"] == str(result.registers[0]), row
        else:
            text = "".join(chr(v) for v in row["answer_ids"])
            assert row["answer"] == (text.lstrip("0") or "0" if row["task"] == "addition" else text), row
        if row["operation"] in arithmetic.WRAPPING and "n" not in fields:
            x, y = registers
            integer = {"add": x + y, "sub": x - y, "mul": x * y}[row["operation"]]
            assert str(integer) == row["answer"] == str(binary_op(row["operation"], x, y, N)), row


def test_plain_python_agrees_on_the_string_tasks():
    """Independent of the library: the string answers from the question's own text."""
    for row in OWN:
        if row["task"] in ("sort", "reverse", "count", "strlen", "parity"):
            fields = parse(row["question"], OWN_WORDS_TEMPLATES[row["task"]])[1]
            text = fields["s"]
            expected = {
                "sort": "".join(sorted(text)),
                "reverse": text[::-1],
                "count": str(text.count(fields.get("c", ""))),
                "strlen": str(len(text)),
                "parity": str(text.count("1") % 2),
            }[row["task"]]
            assert row["answer"] == expected and row["length"] == len(text), row


def test_sizes_wordings_and_columns():
    """Every task at the mixture's training and held-out lengths / depths (arithmetic: every operation), `per_size`
    questions each; every own wording asked; the builders' columns."""
    assert OWN.features == FEATURES
    for task in MIXTURE_TASKS:
        rows = [row for row in OWN if row["task"] == task]
        if task == "arithmetic":
            assert Counter(row["operation"] for row in rows) == dict.fromkeys(arithmetic.OPERATIONS, 10)
            continue
        column = "depth" if task == "fibonacci_linear" else "length"
        sizes = training_sizes(task) + heldout_sizes(task)
        assert heldout_sizes(task) and max(heldout_sizes(task)) == 4 * max(training_sizes(task)), task
        assert Counter(row[column] for row in rows) == dict.fromkeys(sizes, 10), task
    used = Counter((key_of(row), parse(row["question"], OWN_WORDS_TEMPLATES[key_of(row)])[0]) for row in OWN)
    assert set(used) == {(key, t) for key, templates in OWN_WORDS_TEMPLATES.items() for t in templates}


def test_seeded_and_selectable():
    again = own_words(per_size=2, tasks=("sort", "arithmetic"))
    assert again.to_list() == own_words(per_size=2, tasks=("sort", "arithmetic")).to_list()
    assert set(again["task"]) == {"sort", "arithmetic"} and len(again) == 6 * 2 + 7 * 2
    assert (
        own_words(per_size=2, tasks=("sort",), seed=1)["question"] != own_words(per_size=2, tasks=("sort",))["question"]
    )


@pytest.mark.parametrize(
    "settings, message",
    [({"tasks": ("sort_spaced",)}, "tasks item = 'sort_spaced'"), ({"per_size": 0}, "per_size = 0")],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        own_words(**settings)
