"""The `compose` task: its compositional split is disjoint, its held-out phrasings never occur in training, and
every answer is the chained reference run of the row's main() and what plain Python computes from the question's
text."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from data_builders import HELDOUT_SPLIT, get_builder
from data_builders.arithmetic import MODULUS_SUFFIXES
from data_builders.composition import COMPOSITIONS, HELDOUT_TEMPLATES, SEEN, TEMPLATES, UNSEEN, UNSEEN_SPLIT, main_of
from modeling_llama_delta.composition import run_main_reference
from modeling_llama_delta.library import PROGRAM_NAMES, assemble_library
from tests.test_data_builders import SMALL, parse

N = 128
SPLITS = get_builder("compose", **SMALL["compose"]).make_splits()
SEEN_SPLITS = ("train", "validation")


def call_pairs(calls) -> set[tuple[str, str]]:
    return set(zip(calls, calls[1:], strict=False))


def test_splits_and_every_composition_present():
    assert set(SPLITS) == {"train", "validation", "test", HELDOUT_SPLIT, UNSEEN_SPLIT}
    assert {row["operation"] for row in SPLITS["train"]} == set(SEEN)
    assert {row["operation"] for row in SPLITS[UNSEEN_SPLIT]} == set(UNSEEN)
    assert sum(len(COMPOSITIONS[name].calls) == 3 for name in SEEN) >= 2
    assert len(COMPOSITIONS) >= 6


def test_compositional_split_is_disjoint():
    """No call sequence of the unseen split occurs in train or validation; each has a consecutive pair of calls
    that training never chains (a new pair or a new order); every program it calls occurs in training."""
    seen_sequences = {tuple(row["calls"]) for split in SEEN_SPLITS for row in SPLITS[split]}
    seen_pairs = set().union(*(call_pairs(calls) for calls in seen_sequences))
    seen_programs = {program for calls in seen_sequences for program in calls}
    unseen_sequences = {tuple(row["calls"]) for row in SPLITS[UNSEEN_SPLIT]}
    assert unseen_sequences and not unseen_sequences & seen_sequences
    for calls in unseen_sequences:
        assert call_pairs(calls) - seen_pairs, calls
        assert set(calls) <= seen_programs, calls
    # The test and held-out phrasing splits ask seen compositions only.
    for split in ("test", HELDOUT_SPLIT):
        assert {tuple(row["calls"]) for row in SPLITS[split]} <= seen_sequences
    questions = {row["question"] for split in SEEN_SPLITS for row in SPLITS[split]}
    assert not questions & {row["question"] for row in SPLITS[UNSEEN_SPLIT]}


def normalised(templates) -> set[str]:
    return {re.sub(r"[^a-z{} ]", "", t.lower()).strip() for t in templates}


def template_of(row: dict) -> tuple[str, dict[str, str]]:
    name = row["operation"]
    suffixes = MODULUS_SUFFIXES if COMPOSITIONS[name].inputs == "numbers" else ("",)
    return parse(row["question"], TEMPLATES[name] + HELDOUT_TEMPLATES.get(name, ()), suffixes)


def test_heldout_phrasings_never_occur_in_training():
    """Every question is read back to the one template it instantiates: held-out templates ask only the
    `heldout_phrasing` split, never a training question, and share no template with training up to case and
    punctuation; training draws >= 10 templates of every seen composition; unseen ones have >= 10 of their own."""
    for name in COMPOSITIONS:
        assert len(TEMPLATES[name]) >= 10
        assert not normalised(TEMPLATES[name]) & normalised(HELDOUT_TEMPLATES.get(name, ()))
    assert set(HELDOUT_TEMPLATES) == set(SEEN)
    heldout = {t for ts in HELDOUT_TEMPLATES.values() for t in ts}
    used = {split: Counter(template_of(row)[0] for row in rows) for split, rows in SPLITS.items()}
    assert used[HELDOUT_SPLIT] and set(used[HELDOUT_SPLIT]) <= heldout
    for split in ("train", "validation", "test", UNSEEN_SPLIT):
        assert not set(used[split]) & heldout, split
    for name in SEEN:
        assert len(set(TEMPLATES[name]) & set(used["train"])) >= 10, name


def plain_python(name: str, fields: dict[str, str]) -> str:
    """The answer from the question's text alone, without Δ or its library."""
    x, y, z, w = (int(fields[k]) if k in fields else 0 for k in "xyzw")
    s, c = fields.get("s", ""), fields.get("c", "")
    total = str(int(fields.get("a", 0)) + int(fields.get("b", 0)))
    answers = {
        "add_then_mul": lambda: (x + y) * z % N,
        "max_then_sub": lambda: (max(x, y) - z) % N,
        "add_then_mul_then_sub": lambda: ((x + y) * z - w) % N,
        "mul_then_add": lambda: (x * y + z) % N,
        "max_then_mul": lambda: max(x, y) * z % N,
        "sub_then_add_then_mul": lambda: (x - y + z) * w % N,
        "sort_then_reverse": lambda: "".join(sorted(s, reverse=True)),
        "reverse_then_strlen": lambda: len(s),
        "sort_then_count": lambda: s.count(c),
        "reverse_then_count": lambda: s.count(c),
        "add_digits_then_count": lambda: total.count(fields.get("d", "")),
        "add_digits_then_sort_then_reverse": lambda: "".join(sorted(total, reverse=True)),
        "add_digits_then_reverse": lambda: total[::-1],
    }
    return str(answers[name]())


def test_answers_equal_chained_reference_run_and_plain_python():
    library = assemble_library(PROGRAM_NAMES, n=N)
    programs = [library[name] for name in PROGRAM_NAMES]
    checked = Counter()
    for split, rows in SPLITS.items():
        for row in rows[::3]:
            result = run_main_reference(
                main_of(row["calls"], row["sources"]), programs, row["registers"], row["memory"], N, max_steps=100_000
            )
            assert result.halted, row
            if row["answer_in"] == "register":
                assert row["answer_ids"] == [result.registers[0]], row
            else:
                assert row["answer_ids"] == result.memory[: len(row["answer_ids"])], row
                assert result.memory[len(row["answer_ids"])] == 0, row
                assert row["answer"] == "".join(map(chr, row["answer_ids"]))
            assert row["answer"] == plain_python(row["operation"], template_of(row)[1]), row
            checked[split] += 1
    assert set(checked) == set(SPLITS)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"unseen_compositions": ("add_then_mul",)}, "a seen composition calls too"),
        ({"compositions": ("add_then_mul",), "unseen_compositions": ("reverse_then_count",)}, "which no seen one"),
        ({"compositions": ("nope",)}, "compositions item"),
        ({"digits": (70,)}, "too small"),
    ],
)
def test_bad_settings_fail_at_construction(settings, message):
    with pytest.raises(ValueError, match=message):
        get_builder("compose", **settings)
