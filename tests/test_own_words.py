"""The own-words evaluation set (`data_builders.own_words`): its wordings are no builder's (templates and questions),
its answers are the reference interpreter's on the input read back from the question, and its sizes are the
mixture's training and held-out ones; `experiments.ask_own_words` scores an export on it (right / refused / silently
wrong), checked on tiny exact models; `experiments.zero_shot_smollm2`'s prompt and scoring (SmolLM2 itself only in
a slow test)."""

from __future__ import annotations

import json
import re
from collections import Counter

import datasets
import pytest

from data_builders import (
    FEATURES,
    HELDOUT_SPLIT,
    MIXTURE_TASKS,
    arithmetic,
    fibonacci,
    get_builder,
    read_answer,
    sequences,
)
from data_builders.common import make_example
from data_builders.own_words import OWN_WORDS_TEMPLATES, heldout_sizes, own_words, training_sizes
from experiments.ask_own_words import ask, main, tally
from experiments.zero_shot_smollm2 import chat_prompt, lenient_answer, question_sets, score
from experiments.zero_shot_smollm2 import main as main_zero_shot
from modeling_llama_delta.library import assemble_library
from modeling_llama_delta.reference import binary_op, run_reference
from tests.helpers.models import LETTERS, exact_sorter
from tests.test_data_builders import parse, parsed_input, plain_string_answer, template_regex
from tests.test_export import char_tokenizer

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
            expected = plain_string_answer(row["task"], text, fields.get("c", ""))
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


# --- experiments.ask_own_words on tiny exact sorters (one token per character; tests/helpers/models.py) ---

SAMPLED = {"delta_parse_samples": 2, "max_position_embeddings": 256}  # sized per question; contexts of 256


def sort_row(string: str) -> dict:
    row = make_example(f'SORT "{string}"', "".join(sorted(string)), [], "sort", [], [], "memory", 0, "sort")
    return row | {"task": "sort", "length": len(string)}


def test_ask_tells_right_refused_and_silently_wrong():
    """A sorter whose 'b' token spells 'c' sorts strings with a b wrong, without refusing; a space or a character
    outside the vocabulary inside the string is refused (its token spells nothing); the rest is right."""
    tokenizer = char_tokenizer()
    values = {str(tokenizer.convert_tokens_to_ids(c)): [ord("c" if c == "b" else c)] for c in LETTERS}
    model = exact_sorter(tokenizer, 8, delta_token_values=values, **SAMPLED)
    strings = ["dca", "dcb", "d a", "zyxwvuts", "aéd", "hgfedcba", "qwertyuiopasdfgh"]
    asked = ask(model, tokenizer, datasets.Dataset.from_list([sort_row(s) for s in strings], features=FEATURES))
    assert [item["outcome"] for item in asked] == ["right", "wrong", "refused", "right", "refused", "wrong", "right"]
    assert asked[1]["answer"] == "ccd" and asked[1]["refusal"] is None
    assert "spells no value" in asked[2]["refusal"] and asked[2]["answer"] is None
    counts = tally(asked)["sort"]
    assert counts["all"] == {"right": 3, "refused": 2, "wrong": 2, "total": 7}
    assert counts["sizes"]["length 3"] == {"right": 1, "refused": 2, "wrong": 1, "total": 4, "held_out": False}
    assert counts["sizes"]["length 16"]["right"] == 1


def test_ask_own_words_script_on_an_export(tmp_path):
    """The command on a saved exact sorter: it asks only the tasks its library serves (sort), and every own-words
    sort question is refused, none answered wrong in silence: a one-token-per-character parse with every gate open
    reads the question's words as input too, and the spaces between them spell nothing."""
    tokenizer = char_tokenizer()
    folder = tmp_path / "sorter"
    exact_sorter(tokenizer, 8, **SAMPLED).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    report = main([str(folder), "--per_size", "2"])
    assert set(report["counts"]) == {"sort"}
    assert report["counts"]["sort"]["all"] == {"right": 0, "refused": 12, "wrong": 0, "total": 12}
    assert set(report["counts"]["sort"]["sizes"]) == {f"length {length}" for length in (6, 8, 10, 12, 24, 48)}
    assert all(item["refusal"] for item in report["not_right"]) and len(report["not_right"]) == 12
    saved = json.loads((tmp_path / "own_words.json").read_text())
    assert saved["counts"] == report["counts"] and saved["seed"] == 0
    with pytest.raises(SystemExit, match="serves no own-words task"):
        spin = tmp_path / "spin"
        exact_sorter(tokenizer, 8, delta_programs={"spin": ".func spin\n    halt\n"}).save_pretrained(spin)
        tokenizer.save_pretrained(spin)
        main([str(spin), "--out", str(tmp_path / "spin.json")])


# --- experiments.zero_shot_smollm2: prompt, sampling and scoring (SmolLM2 itself: the slow test) ---


def test_chat_prompt_is_one_user_turn_with_the_instruction():
    tokenizer = char_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    expected = "<user>What's 17 times 3?\nAnswer with the answer only.<assistant>"
    assert chat_prompt(tokenizer, "What's 17 times 3?") == expected


def test_question_sets_sample_each_task_from_each_set():
    sets = question_sets(per_task=3, seed=0)
    assert list(sets) == ["test", HELDOUT_SPLIT, "own_words"]
    for name, rows in sets.items():
        assert Counter(rows["task"]) == dict.fromkeys(MIXTURE_TASKS, 3), name
    assert set(sets["own_words"]["question"]) <= set(OWN["question"])
    heldout = get_builder("all").make_splits()[HELDOUT_SPLIT]
    assert set(sets[HELDOUT_SPLIT]["question"]) <= {row["question"] for row in heldout}


def test_replies_are_scored_as_the_text_baseline_and_leniently():
    rows = own_words(per_size=1, tasks=("sort", "arithmetic", "addition"))
    rows = rows.filter(lambda row: row["answer"] == row["answer"].strip())  # see the next test
    right = score(rows, rows["answer"])
    assert all(m["exact_match"] == m["lenient_exact_match"] == 1.0 for m in right["tasks"].values())
    chatty = score(rows, [f'The answer is "{answer}".' for answer in rows["answer"]])
    # a number is the reply's first integer (right here); a string is the whole reply (wrong), unless read leniently
    assert chatty["tasks"]["arithmetic"]["exact_match"] == 1.0
    assert chatty["tasks"]["sort"]["exact_match"] == chatty["tasks"]["addition"]["exact_match"] == 0.0
    assert chatty["tasks"]["sort"]["lenient_exact_match"] == chatty["tasks"]["addition"]["lenient_exact_match"] == 1.0
    assert chatty["mean_over_tasks"]["exact_match"] == pytest.approx(1 / 3)
    wrong = score(rows, ["I can't do that."] * len(rows))
    assert wrong["mean_over_tasks"] == {"exact_match": 0.0, "element_accuracy": 0.0, "lenient_exact_match": 0.0}


def test_a_string_answer_with_outer_spaces_counts_only_quoted():
    """`parse_answer_text` strips the reply, so a sorted string with a space (it starts with it) is never right bare;
    the lenient reading of a quoted reply keeps the spaces."""
    rows = own_words(per_size=1, tasks=("sort",)).filter(lambda row: row["answer"].startswith(" "))
    assert len(rows)
    assert score(rows, rows["answer"])["tasks"]["sort"]["exact_match"] == 0.0
    assert score(rows, [f"'{answer}'" for answer in rows["answer"]])["tasks"]["sort"]["lenient_exact_match"] == 1.0


@pytest.mark.parametrize(
    "text, answer_format, length, expected",
    [
        ("17 * 3 = 51", "integers", 1, [51]),
        ("no number", "integers", 1, []),
        ("The sum is 1168708.", "digits", 7, [ord(c) for c in "1168708"]),
        ("The sum is 1168708.", "digits", 8, [ord(c) for c in "01168708"]),
        ("It is 123456789", "digits", 3, []),
        ("The sorted string is 'abc'.", "string", 3, [97, 98, 99]),
        ("abc.", "string", 3, [97, 98, 99]),
    ],
)
def test_lenient_reading(text, answer_format, length, expected):
    assert lenient_answer(text, answer_format, length) == expected


@pytest.mark.slow
def test_zero_shot_smollm2_runs_end_to_end(tmp_path):
    report = main_zero_shot(["--per_task", "1", "--out", str(tmp_path / "zero_shot.json")])
    assert set(report["results"]) == {"test", HELDOUT_SPLIT, "own_words"}
    for result in report["results"].values():
        assert set(result["tasks"]) == set(MIXTURE_TASKS)
        assert all(m["num_examples"] == 1 for m in result["tasks"].values())
    assert json.loads((tmp_path / "zero_shot.json").read_text())["results"] == report["results"]
