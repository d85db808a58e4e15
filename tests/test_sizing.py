"""Δ sized per question at run time, and refusals instead of silent wrong answers (`delta_size_per_question`,
`RunReport`): a `tokens` sorter built for strings of length <= 8 answers 24, 32 and 48 with no config edit; what Δ
cannot represent or did not finish is refused with its cause, never truncated."""

import json
import random

import pytest
from transformers import pipeline

from modeling_llama_delta import PIPELINE_TASK, LlamaDeltaConfig
from modeling_llama_delta.library import memory_needed, step_bound
from tests.helpers.configs import TINY_LLAMA
from tests.helpers.models import LETTERS, exact_sorter
from tests.test_export import char_tokenizer

TRAINED_LENGTH = 8  # the longest string the config is sized for
# Evaluation runs the arg-max parse and program exactly on the integer interpreter; a context for 128 letters.
SAMPLED = {"delta_parse_samples": 2, "max_position_embeddings": 256}
# A program outside the library: it never halts, and Δ has no step bound for it.
SPIN = ".func spin\nloop:\n    jmp loop\n"


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def sorter(tokenizer):
    return exact_sorter(tokenizer, TRAINED_LENGTH, **SAMPLED)


def random_strings(length: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(LETTERS) for _ in range(length)) for _ in range(count)]


@pytest.mark.parametrize("length", [24, 32, 48])
def test_longer_strings_than_the_config_are_sorted_exactly(sorter, tokenizer, length):
    strings = random_strings(length, 4, seed=length) + ["".join(sorted(LETTERS * 2, reverse=True))[:length]]
    questions = [f'SORT "{s}"' for s in strings]
    assert sorter.solve(questions, tokenizer, batch_size=3) == ["".join(sorted(s)) for s in strings]
    config = sorter.config
    assert (config.delta_memory_size, config.delta_max_steps, config.delta_answer_length) == (
        memory_needed("sort", TRAINED_LENGTH),
        step_bound("sort", TRAINED_LENGTH),
        TRAINED_LENGTH,
    )  # no config edit: the run was sized, the config was not


def test_details_give_probabilities(sorter, tokenizer):
    details = sorter.solve(['SORT "dcab"', 'SORT "zyxwvutsrqponmlkjihgfedcba"'], tokenizer, return_details=True)
    assert [d["answer"] for d in details] == ["abcd", LETTERS]
    for detail in details:  # open gates, one program, an exact run: certain
        assert detail["refusal"] is None
        assert detail["probability"] == pytest.approx(1.0) and detail["halt_probability"] == 1.0


def test_an_uncertain_answer_is_refused_not_guessed(tokenizer):
    """`delta_min_answer_probability`: the same exact sort, its gates open with probability sigmoid(2) = 0.88 per
    token, is answered while its probability (0.88 per token) stays above the threshold and refused, naming the
    probability, once it falls below (a longer string); the threshold 0 answers everything."""
    import torch

    for threshold, answered in ((0.0, ["abcd", LETTERS]), (0.5, ["abcd", None])):
        model = exact_sorter(tokenizer, TRAINED_LENGTH, **SAMPLED, delta_min_answer_probability=threshold)
        with torch.no_grad():
            model.delta_head.parser.gates.bias.fill_(2.0)
        details = model.solve(['SORT "dcab"', f'SORT "{LETTERS[::-1]}"'], tokenizer, return_details=True, refuse=False)
        assert [d["answer"] for d in details] == answered
        if answered[1] is None:
            assert (
                "probability" in details[1]["refusal"] and "delta_min_answer_probability = 0.5" in details[1]["refusal"]
            )
            assert details[0]["probability"] >= 0.5 > details[1]["probability"]


def test_fixed_sizes_refuse_a_longer_string_never_truncate(tokenizer):
    fixed = exact_sorter(tokenizer, TRAINED_LENGTH, **SAMPLED, delta_size_per_question=False)
    assert fixed.solve('SORT "dcab"', tokenizer) == ["abcd"]
    with pytest.raises(ValueError, match=r"question 0 \('SORT \"[a-z]+\"'\): the input has 24 elements; the parse hol"):
        fixed.solve('SORT "' + random_strings(24, 1, seed=1)[0] + '"', tokenizer)


def test_a_character_delta_cannot_represent_is_refused(sorter, tokenizer):
    # "é" is no token of the vocabulary (<unk>), "C" spells no value: both lie inside the string, gates open
    for question in ['SORT "abéd"', 'SORT "abCd"']:
        with pytest.raises(ValueError, match="spells no value in 0..127"):
            sorter.solve(['SORT "ok"', question], tokenizer)
    # outside the input (between no two emitted elements), tokens that spell nothing are no reason to refuse
    assert sorter.solve('SORT "ba".', tokenizer) == ["ab"]


def test_an_input_longer_than_the_memory_n_is_refused(sorter, tokenizer):
    fits, full, over = (random_strings(length, 1, seed=length)[0] for length in (127, 128, 130))
    assert sorter.solve(f'SORT "{fits}"', tokenizer) == ["".join(sorted(fits))]  # 127 + terminator = n cells
    with pytest.raises(ValueError, match=r"needs 129 memory cells for sort \(128 elements\); Δ's memory \(n = 128\)"):
        sorter.solve(f'SORT "{full}"', tokenizer)
    with pytest.raises(ValueError, match=r"the input has 130 elements; the parse holds 128 cells \(n, Δ's memory"):
        sorter.solve(f'SORT "{over}"', tokenizer)


def test_refuse_false_returns_the_causes(sorter, tokenizer):
    details = sorter.solve(['SORT "ba"', 'SORT "bCa"', "x" * 300], tokenizer, return_details=True, refuse=False)
    assert details[0]["answer"] == "ab" and details[0]["refusal"] is None
    assert details[1]["answer"] is None and "question 1" in details[1]["refusal"]
    assert "spells no value" in details[1]["refusal"]
    assert details[2]["answer"] is None and "context is 256" in details[2]["refusal"]
    assert sorter.solve(['SORT "ba"', 'SORT "bCa"'], tokenizer, refuse=False) == ["ab", None]


def test_a_run_that_does_not_halt_is_refused(tokenizer):
    model = exact_sorter(tokenizer, TRAINED_LENGTH, **SAMPLED, delta_programs={"spin": SPIN}, delta_max_steps=50)
    with pytest.raises(ValueError, match="did not halt within its step budget"):
        model.solve('SORT "ab"', tokenizer)


def test_the_pipeline_refuses_as_solve_does(sorter, tokenizer):
    solver = pipeline(PIPELINE_TASK, model=sorter, tokenizer=tokenizer)
    long = random_strings(32, 1, seed=3)[0]
    assert solver([f'SORT "{long}"', 'SORT "ba"'], batch_size=2) == [
        {"answer": "".join(sorted(long))},
        {"answer": "ab"},
    ]
    with pytest.raises(ValueError, match="spells no value"):
        solver(['SORT "ba"', 'SORT "bCa"'], batch_size=2)


def test_old_configs_load_with_fixed_sizes(sorter, tmp_path):
    assert LlamaDeltaConfig(**TINY_LLAMA).delta_size_per_question  # new configs size per question
    sorter.config.save_pretrained(tmp_path)
    assert LlamaDeltaConfig.from_pretrained(tmp_path).delta_size_per_question
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["delta_size_per_question"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert LlamaDeltaConfig.from_pretrained(tmp_path).delta_size_per_question is False


def test_an_answer_longer_than_what_is_read_is_refused(tokenizer):
    cells = dict(delta_memory_size=20, delta_input_cells=19, delta_max_steps=step_bound("sort", 12))
    fixed = exact_sorter(
        tokenizer, TRAINED_LENGTH, **SAMPLED, delta_size_per_question=False, **cells
    )  # reads 8 answer elements
    assert fixed.solve('SORT "hgfedcba"', tokenizer) == ["abcdefgh"]
    with pytest.raises(ValueError, match="the answer is longer than the 8 elements read"):
        fixed.solve('SORT "lkjihgfedcba"', tokenizer)
