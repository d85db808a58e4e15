"""The algorithmic data builders: determinism, leakage, answers (against Δ's reference interpreter
running the named library program, and against plain Python from the question text), settings
validation, caching, export, and the paper-sized generation time."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from data_builders import (
    HELDOUT_SPLIT,
    MIXTURE_TASKS,
    TASKS,
    arithmetic,
    export_dataset,
    fibonacci,
    generator_hash,
    get_builder,
    load_task,
    read_answer,
    sequences,
)
from data_builders.export import main as export_main
from modeling_llama_delta.library import assemble_library
from modeling_llama_delta.reference import binary_op, run_reference

datasets.disable_progress_bars()

# Small but complete settings per task (every split present, held-out lengths/depths and phrasings included).
HELDOUT = {"heldout_phrasing_size": 60}
SMALL = {
    "arithmetic": {"size": 3000, **HELDOUT},
    "fibonacci": {"examples_per_depth": 150, "ood_examples_per_depth": 40, **HELDOUT},
    "fibonacci_minimal": {"examples_per_depth": 150, "ood_examples_per_depth": 40, **HELDOUT},  # no wording: none
    "fibonacci_linear": {"examples_per_depth": 150, "ood_examples_per_depth": 40, **HELDOUT},
    "sort": {"examples_per_length": 150, "ood_examples_per_length": 40, **HELDOUT},
    "sort_spaced": {"examples_per_length": 150, "ood_examples_per_length": 40, "phrasing": "varied", **HELDOUT},
    "count": {"examples_per_length": 150, "ood_examples_per_length": 40, "alphabet": "abc d", **HELDOUT},
    "strlen": {"examples_per_length": 150, "ood_examples_per_length": 40, "alphabet": "xyz ", **HELDOUT},
    "parity": {"examples_per_length": 150, "ood_examples_per_length": 40, "phrasing": "varied", **HELDOUT},
    "reverse": {"examples_per_length": 150, "ood_examples_per_length": 40, "phrasing": "varied", **HELDOUT},
    "addition": {"examples_per_length": 150, "ood_examples_per_length": 40, "phrasing": "varied", **HELDOUT},
    "all": {"examples_per_task": 120, "ood_examples": 10, "heldout_phrasing_size": 20},
    "compose": {"examples_per_composition": 60, "unseen_examples_per_composition": 20, "heldout_phrasing_size": 40},
}
TEXT_TASKS = [task for task in sorted(TASKS) if task not in ("fibonacci_minimal", "all", "compose")]  # one program
SINGLE_PROGRAM_TASKS = [task for task in sorted(TASKS) if task != "compose"]  # compose: tests/test_composition_data.py
SPLITS = {}  # task -> make_splits() of its SMALL settings, shared by the tests that only read it


def splits_of(task: str) -> dict[str, list[dict]]:
    if task not in SPLITS:
        SPLITS[task] = get_builder(task, **SMALL[task]).make_splits()
    return SPLITS[task]


def test_every_task_has_small_settings():
    assert set(SMALL) == set(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_deterministic_by_seed(task):
    first = splits_of(task)
    assert get_builder(task, **SMALL[task]).make_splits() == first
    other = get_builder(task, seed=1, **SMALL[task]).make_splits()
    assert list(other) == list(first)
    assert other["train"] != first["train"]


def test_deterministic_across_processes():
    """Same seed, same data in a fresh interpreter with another string-hash seed (no set/dict-order leaks)."""
    script = (
        "import json; from data_builders import get_builder; "
        "splits = get_builder('arithmetic', size=3000, heldout_phrasing_size=60).make_splits(); "
        "print(json.dumps(splits, sort_keys=True))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[1]
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(output.stdout) == splits_of("arithmetic")


def problem_of(row: dict) -> tuple:
    problem = (row["program"], tuple(row.get("calls", ())), tuple(row["memory"]), tuple(row["registers"]))
    if row["task"] == "arithmetic" and row["operation"] in arithmetic.COMMUTATIVE:
        problem = (row["program"], (), (), tuple(sorted(row["registers"])))  # "Add 3 and 4" = "Add 4 and 3"
    return problem


@pytest.mark.parametrize("task", sorted(TASKS))
def test_no_question_or_problem_in_two_splits(task):
    """Train, validation, test and the held-out lengths never share a question or a problem; the held-out
    phrasings ask test problems only, in questions no other split holds."""
    splits = splits_of(task)
    assert {"train", "validation", "test"} <= set(splits)
    assert any("ood_" in s for s in splits) == (task not in ("arithmetic", "compose"))  # no length or depth held out
    assert all(row["task"] in (task if task != "all" else MIXTURE_TASKS) for rows in splits.values() for row in rows)
    seen_question: dict[str, str] = {}
    seen_input: dict[tuple, str] = {}
    for split, rows in splits.items():
        for row in rows:
            assert seen_question.setdefault(row["question"], split) == split, row
            if split != HELDOUT_SPLIT:
                assert seen_input.setdefault(problem_of(row), split) == split, row
    for row in splits.get(HELDOUT_SPLIT, []):
        assert seen_input[problem_of(row)] == "test", row
    assert (HELDOUT_SPLIT in splits) == (task != "fibonacci_minimal")


@pytest.mark.parametrize("task", ["arithmetic", "fibonacci", "sort"])
def test_split_fractions_per_stratum(task):
    """70/30 train/test with validation from the 70, in every operation / depth / length."""
    splits = splits_of(task)
    key = {"arithmetic": "operation", "fibonacci": "depth", "sort": "length"}[task]
    counts = {split: Counter(row[key] for row in splits[split]) for split in ("train", "validation", "test")}
    for stratum in counts["train"]:
        total = sum(c[stratum] for c in counts.values())
        for split, fraction in (("train", 0.6), ("validation", 0.1), ("test", 0.3)):
            assert abs(counts[split][stratum] - fraction * total) <= 2, (stratum, split, counts)
    held_out = {row[key] for split, rows in splits.items() if split.startswith("ood_") for row in rows}
    assert not held_out & set(counts["train"])


def test_spaced_and_plain_sorting_share_problems_and_splits():
    plain, spaced = splits_of("sort"), splits_of("sort_spaced")
    for split in plain:
        assert [r["memory"] for r in plain[split]] == [r["memory"] for r in spaced[split]]
        assert [r["answer_ids"] for r in plain[split]] == [r["answer_ids"] for r in spaced[split]]
        row = spaced[split][0]
        assert row["question"].count(" ") > row["length"] - 1 and row["answer"] == " ".join(row["answer"][::2])


def sample_rows(task: str, count: int) -> list[dict]:
    rows = [row for split in splits_of(task).values() for row in split]
    return random.Random(task).sample(rows, count)


QUOTED_FIELDS = ("s", "c")  # `phrase` quotes these (either kind of quote, or none)


def template_regex(template: str, suffix: str = "") -> re.Pattern:
    """A template ("Add {x} and {y}.") as a regex whose named groups capture the fields, allowing what `vary` and
    `phrase` change: the first letter's case, the trailing punctuation and the quotes around a string."""
    body, ending = (
        (template[:-1], template[-1]) if template[-1:] in ".?!" and template[-2:-1] != " " else (template, "")
    )
    pattern = re.escape(body)
    for field in re.findall(r"\{(\w+)\}", template):
        # strings may be quoted; nouns are words; numbers may be spaced out
        if field in QUOTED_FIELDS:
            # quoted: anything but a quote; bare (`phrase` leaves only a string without spaces bare): no spaces
            value = rf"(?:(?P<q_{field}>[\"'])(?P<{field}>[^\"']*?)(?P=q_{field})|(?P<bare_{field}>[^\"'\s]+?))"
        else:
            value = rf"(?P<{field}>[a-z]+)" if field in ("additions", "steps", "times") else rf"(?P<{field}>[\d ]+?)"
        pattern = pattern.replace(re.escape("{" + field + "}"), value, 1)
    first = template[0]
    if first.isalpha():
        pattern = f"[{first.upper()}{first.lower()}]" + pattern[len(re.escape(first)) :]
    suffix = re.escape(suffix).replace(re.escape("{n}"), r"(?P<n>\d+)")
    return re.compile(pattern + ("[.?!]?" if ending else "") + suffix)


def parse(question: str, templates, suffixes=("",)) -> tuple[str, dict[str, str]]:
    """The template that `question` is an instance of (with its suffix), and its fields."""
    matches = [
        (template, {k.removeprefix("bare_"): v for k, v in m.groupdict().items() if v is not None and k[:2] != "q_"})
        for template in templates
        for suffix in suffixes
        if (m := template_regex(template, suffix).fullmatch(question))
    ]
    assert len({template for template, _ in matches}) == 1, (question, matches)
    return matches[0]


def family_templates(task: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(training templates, held-out templates, suffixes) of a task whose questions are words."""
    if task in ("fibonacci", "fibonacci_linear"):
        return fibonacci.TEMPLATES, fibonacci.HELDOUT_TEMPLATES, ("",)
    family = "sort" if task.startswith("sort") else task
    return sequences.TEMPLATES[family], sequences.HELDOUT_TEMPLATES[family], ("",)


def parse_row(row: dict, n: int) -> tuple[str, dict[str, str]]:
    """The template and fields of a row's question, from the training or the held-out templates."""
    if row["task"] == "arithmetic":
        op = row["operation"]
        suffixes = ("", *arithmetic.MODULUS_SUFFIXES) if op in arithmetic.WRAPPING else ("",)
        template, fields = parse(row["question"], arithmetic.TEMPLATES[op] + arithmetic.HELDOUT_TEMPLATES[op], suffixes)
        assert fields.get("n") in (None, str(n))
        return template, fields
    train, heldout, suffixes = family_templates(row["task"])
    return parse(row["question"], train + heldout, suffixes)


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_heldout_phrasings_never_occur_in_training(task):
    """Every question is read back to the one template it instantiates: training questions only ever come from
    training templates, `heldout_phrasing` questions only from held-out ones, and the two sets share no template
    even up to case and punctuation. Varied training draws from at least 10 templates."""
    splits, n = splits_of(task), get_builder(task).config.n
    train, heldout = (
        (arithmetic.TEMPLATES, arithmetic.HELDOUT_TEMPLATES) if task == "arithmetic" else family_templates(task)[:2]
    )
    train_set = set(train) if task != "arithmetic" else {t for ts in train.values() for t in ts}
    heldout_set = set(heldout) if task != "arithmetic" else {t for ts in heldout.values() for t in ts}
    norm = lambda templates: {re.sub(r"[^a-z{} ]", "", t.lower()).strip() for t in templates}  # noqa: E731
    assert not norm(train_set) & norm(heldout_set)
    used = {name: Counter(parse_row(row, n)[0] for row in rows) for name, rows in splits.items()}
    for name, templates in used.items():
        assert set(templates) <= (heldout_set if name == HELDOUT_SPLIT else train_set), name
    assert used[HELDOUT_SPLIT]
    if get_builder(task, **SMALL[task]).config.phrasing == "varied":
        per_family = [set(train_set)] if task != "arithmetic" else [set(ts) for ts in train.values()]
        for templates in per_family:
            assert len(templates & set(used["train"])) >= 10, sorted(templates - set(used["train"]))


def parsed_input(row: dict, fields: dict[str, str]) -> tuple[list[int], list[int]]:
    """Δ's memory and registers per the library's calling convention, from the question's text alone."""
    task = row["task"]
    if task == "arithmetic":
        return [], [int(fields["x"]), int(fields["y"])]
    if task.startswith("fibonacci"):
        return [], [int(fields["a"]), int(fields["b"]), int(fields["d"])]
    if task == "addition":
        a, b = fields["a"].replace(" ", ""), fields["b"].replace(" ", "")
        return [ord(c) for c in a] + [0] + [ord(c) for c in b] + [0], []
    text = fields["s"] if row["task"] != "sort_spaced" else fields["s"].replace(" ", "")
    return [ord(c) for c in text] + [0], [ord(fields["c"])] if task == "count" else []


@pytest.mark.parametrize("task", SINGLE_PROGRAM_TASKS)
def test_answers_equal_reference_run_on_the_parsed_question(task):
    """Read Δ's input back from the question text by the calling convention, run the task's library program on it
    in the reference interpreter, and check the row's inputs, answer ids and answer text against that run."""
    n = get_builder(task).config.n
    rows = [row for rows in splits_of(task).values() for row in rows]
    rows = random.Random(task).sample(rows, 300) + splits_of(task).get(HELDOUT_SPLIT, [])[:60]
    programs = assemble_library(sorted({row["program"] for row in rows}), n=n)
    for row in rows:
        if task == "fibonacci_minimal":
            memory, registers = [], [int(v) for v in row["question"].split()]
        else:
            memory, registers = parsed_input(row, parse_row(row, n)[1])
        assert (memory, registers) == (row["memory"], row["registers"]), row
        result = run_reference(programs[row["program"]], n, memory, registers, max_steps=20_000)
        assert result.halted, row
        assert read_answer(row, result.memory, result.registers) == row["answer_ids"], row
        if row["answer_in"] == "register":
            assert row["answer"] == str(result.registers[0])
        else:
            text = "".join(chr(v) for v in row["answer_ids"])
            answer = row["answer"].replace(" ", "") if row["task"] == "sort_spaced" else row["answer"]
            assert answer == (text.lstrip("0") or "0" if row["task"] == "addition" else text)


def plain_string_answer(task: str, text: str, character: str = "") -> str:
    """A string task's answer in plain Python, independent of the library: sort, reverse, count, strlen, parity."""
    return {
        "sort": "".join(sorted(text)),
        "reverse": text[::-1],
        "count": str(text.count(character)),
        "strlen": str(len(text)),
        "parity": str(text.count("1") % 2),
    }[task]


def test_answers_equal_plain_python():
    """The answers against plain Python on the question's fields (independent of the library)."""
    for task in TEXT_TASKS:
        n = get_builder(task).config.n
        for row in sample_rows(task, 100):
            fields = parse_row(row, n)[1]
            if task == "arithmetic":
                x, y = int(fields["x"]), int(fields["y"])
                integer = {"add": x + y, "sub": x - y, "mul": x * y}.get(row["operation"])
                expected = binary_op(row["operation"], x, y, n)
                if integer is not None and integer != expected:  # wrapped: the question must say "mod n"
                    assert fields.get("n") == str(n), row
                if "n" not in fields:  # without "mod n" the integer answer is meant: it must be the answer
                    assert integer in (None, expected), row
            elif task.startswith("fibonacci"):
                sequence = [int(fields["a"]), int(fields["b"])]
                while len(sequence) < int(fields["d"]) + 2:
                    sequence.append((sequence[-1] + sequence[-2]) % n)
                expected = sequence[-1]
            elif task == "addition":
                expected = int(fields["a"].replace(" ", "")) + int(fields["b"].replace(" ", ""))
            else:
                text = fields["s"] if task != "sort_spaced" else fields["s"].replace(" ", "")
                expected = plain_string_answer("sort" if task.startswith("sort") else task, text, fields.get("c", ""))
            answer = row["answer"].replace(" ", "") if task == "sort_spaced" else row["answer"]
            assert answer == str(expected), row


def test_mixture_holds_every_task_as_its_own_builder_makes_it():
    """`all`: each shared split holds every task (and only the rows that task's builder makes for it, with the
    mixture's settings); each task's held-out lengths or depths are its own splits, at 2x and 4x its longest."""
    splits = splits_of("all")
    config = get_builder("all", **SMALL["all"]).config
    assert set(config.tasks) == set(MIXTURE_TASKS) >= {"arithmetic", "fibonacci_linear", "count", "strlen", "addition"}
    for task in config.tasks:
        own = TASKS[task](config_name=task, **config.task_overrides(task)).make_splits()
        for name in ("train", "validation", "test", HELDOUT_SPLIT):
            assert [row for row in splits[name] if row["task"] == task] == own[name], (task, name)
        ood = {name.removeprefix(f"{task}_"): rows for name, rows in splits.items() if name.startswith(f"{task}_ood_")}
        assert ood == {name: rows for name, rows in own.items() if name.startswith("ood_")}, task
        sizes = [row["length"] if row["depth"] < 0 else row["depth"] for row in own["train"]]
        if task != "arithmetic":
            held_out = sorted(
                {row["length"] if row["depth"] < 0 else row["depth"] for rows in ood.values() for row in rows}
            )
            assert held_out == [2 * max(sizes), 4 * max(sizes)], task
    assert sum(map(len, splits.values())) == sum(
        len(rows)
        for task in config.tasks
        for rows in TASKS[task](config_name=task, **config.task_overrides(task)).make_splits().values()
    )
    with pytest.raises(ValueError, match="tasks item = 'fibonacci' is not allowed"):
        get_builder("all", tasks=("sort", "fibonacci"))


@pytest.mark.parametrize(
    ("task", "settings", "message"),
    [
        ("sort", {"lengths": (0, 8)}, r"lengths\[0\] = 0 is not allowed"),
        ("sort", {"n": 64}, r"alphabet character 'a' has code point 97, outside Δ's values 1..63"),
        ("sort", {"ood_lengths": (200,)}, r"length 200 is too long for n = 128"),
        ("sort", {"lengths": (8, 16)}, r"overlap"),
        ("sort", {"separator": "a"}, r"separator = 'a' is not allowed"),
        ("reverse", {"alphabet": "aa"}, r"repeats a character"),
        ("parity", {"lengths": (3,), "examples_per_length": 100}, r"more than the 8 distinct parity inputs"),
        ("addition", {"n": 32}, r"needs word size n >= 58"),
        ("arithmetic", {"operations": ("add", "pow")}, r"operations item = 'pow' is not allowed"),
        ("arithmetic", {"n": 8}, r"size = 45151 is not allowed: an integer 1\.\.4\d\d"),
        ("arithmetic", {"train_fraction": 0.8, "validation_fraction": 0.2}, r"leave no test split"),
        ("fibonacci", {"depths": (1, -2)}, r"depths\[1\] = -2"),
        ("fibonacci", {"ood_depths": (300,)}, r"depth 300 is too deep for n = 128"),
        ("fibonacci", {"program": "fibo"}, r"program = 'fibo' is not allowed"),
        ("fibonacci", {"phrasing": "random"}, r"phrasing = 'random'"),
        ("sort", {"lenghts": (8,)}, r"doesn't have a 'lenghts' key"),
    ],
)
def test_bad_settings_fail_at_construction(task, settings, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        get_builder(task, cache_dir=tmp_path, **settings)
    assert not list(tmp_path.rglob("*.arrow"))


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'sorting'; available"):
        load_task("sorting")


def test_load_task_caches_by_settings_and_generator_code(tmp_path, monkeypatch):
    first = load_task("parity", cache_dir=tmp_path, **SMALL["parity"])
    assert {name: len(rows) for name, rows in splits_of("parity").items()} == first.num_rows
    assert first["train"].to_list() == splits_of("parity")["train"]
    builder = get_builder("parity", tmp_path, **SMALL["parity"])
    assert generator_hash(type(builder), builder.config) in builder.cache_dir and builder.info.splits  # in the cache
    assert get_builder("parity", tmp_path, **{**SMALL["parity"], "seed": 3}).cache_dir != builder.cache_dir
    # As if a generating table changed (the sequence family's GENERATOR lists its functions and tables).
    edited_generator = (*sequences.SequenceBuilder.GENERATOR, "an edited template")
    monkeypatch.setattr(sequences.SequenceBuilder, "GENERATOR", edited_generator)
    edited = get_builder("parity", tmp_path, **SMALL["parity"])
    assert edited.cache_dir != builder.cache_dir and not edited.info.splits  # regenerates
    monkeypatch.undo()
    only_test = load_task("parity", split="test", cache_dir=tmp_path, **SMALL["parity"])
    assert list(only_test) == ["test"] and only_test["test"].to_list() == first["test"].to_list()
    with pytest.raises(ValueError, match="has no split 'dev'"):
        load_task("parity", split="dev", cache_dir=tmp_path, **SMALL["parity"])


def test_cache_key_follows_generating_code_and_settings_not_file_names_or_card_text(tmp_path):
    """Two copies of the package under other names: one with a family module renamed and the card text edited
    (the dataset card's body and a builder's docstring), one with a question template edited. The first keeps the
    key, the second moves it; so do the settings, including a default (`examples_per_length`) given explicitly."""
    root = Path(__file__).resolve().parents[1]

    def copy(name: str) -> Path:
        folder = tmp_path / "elsewhere" / name
        shutil.copytree(root / "data_builders", folder, ignore=shutil.ignore_patterns("__pycache__"))
        return folder

    def replace(path: Path, old: str, new: str) -> None:
        text = path.read_text()
        assert old in text, (path, old)
        path.write_text(text.replace(old, new))

    moved = copy("moved_builders")
    (moved / "sequences.py").rename(moved / "string_tasks.py")
    for path in moved.glob("*.py"):
        path.write_text(path.read_text().replace("from .sequences import", "from .string_tasks import"))
    replace(moved / "card.py", "Synthetic data for augmenting Llama", "Generated data for augmenting Llama")
    replace(moved / "string_tasks.py", '"""Character-level sorting,', '"""Sorting the characters of a string,')
    edited = copy("edited_builders")
    replace(edited / "sequences.py", '"Sort the string {s}",', '"Sort this string {s}",')
    script = (
        "import moved_builders, edited_builders; "
        "print(moved_builders.get_builder('sort').hash, edited_builders.get_builder('sort').hash)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "elsewhere"), str(root)])}
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    moved_key, edited_key = output.stdout.split()
    key = get_builder("sort").hash
    assert moved_key == key and edited_key != key
    assert get_builder("sort", examples_per_length=10_000).hash == key  # the default, given: the same data
    assert get_builder("sort", examples_per_length=9_999).hash != key
    assert (
        get_builder("sort", alphabet="abcdefghijklmnopqrstuvwxy").hash != key
        and get_builder("sort", seed=1).hash != key
    )


def test_tasks_share_one_schema(tmp_path):
    parts = [load_task(task, "test", tmp_path, **SMALL[task])["test"] for task in ("arithmetic", "sort")]
    assert len(datasets.concatenate_datasets(parts)) == sum(len(p) for p in parts)


def test_export_parquet_and_card(tmp_path):
    exported = export_dataset("sort_spaced", tmp_path / "out", cache_dir=tmp_path / "cache", **SMALL["sort_spaced"])
    for split, part in exported.items():
        table = pq.read_table(tmp_path / "out" / "sort_spaced" / f"{split}-00000-of-00001.parquet")
        assert table.num_rows == part.num_rows and table.column_names == part.column_names
    reloaded = datasets.load_dataset(str(tmp_path / "out"), "sort_spaced", cache_dir=str(tmp_path / "reload"))
    assert {s: d.to_list() for s, d in reloaded.items()} == {s: d.to_list() for s, d in exported.items()}
    card = DatasetCard.load(tmp_path / "out" / "README.md")
    assert card.data.configs[0]["config_name"] == "sort_spaced" and card.data.license == "apache-2.0"
    assert f"| ood_length_24 | {exported['ood_length_24'].num_rows} |" in card.text
    key = get_builder("sort_spaced", **SMALL["sort_spaced"]).hash
    assert '"separator": " "' in card.text and key in card.text


def test_two_tasks_in_one_folder_one_config_each(tmp_path):
    """The export CLI writes two tasks into one folder; exporting one of them again replaces only its part (a split
    it no longer has is gone), and `load_dataset(folder, task)` reads each task back row for row."""
    out, cache = tmp_path / "tasks", tmp_path / "cache"
    small = {"sort": {"examples_per_length": 20, "ood_examples_per_length": 5}, "arithmetic": {"size": 300}}
    common = ["--out", str(out), "--cache_dir", str(cache)]
    export_main(["--task", "sort", "arithmetic", *common, "--overrides", json.dumps(small)])
    small["sort"]["ood_lengths"] = [16]  # the held-out length 24 dropped
    export_main(["--task", "sort", *common, "--overrides", json.dumps({"sort": small["sort"]})])
    card = DatasetCard.load(out / "README.md")
    assert [config["config_name"] for config in card.data.configs] == ["arithmetic", "sort"]
    assert card.text.count("<!-- task: sort -->") == card.text.count("<!-- task: arithmetic -->") == 1
    assert "ood_length_24" not in card.text and not list((out / "sort").glob("ood_length_24-*"))
    infos = {info["config_name"]: info for info in card.data.dataset_info}
    total = 0
    for task, settings in small.items():
        expected = load_task(
            task, cache_dir=cache, **{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        )
        loaded = datasets.load_dataset(str(out), task, cache_dir=str(tmp_path / f"reload_{task}"))
        assert {s: d.to_list() for s, d in loaded.items()} == {s: d.to_list() for s, d in expected.items()}
        assert {split["name"]: split["num_examples"] for split in infos[task]["splits"]} == expected.num_rows
        total += sum(expected.num_rows.values())
    assert card.data.size_categories == ("n<1K" if total < 1000 else "1K<n<10K")  # both tasks' rows together
    with pytest.raises(SystemExit):
        export_main(["--task", "sort", *common, "--overrides", '{"parity": {}}'])  # a task that is not exported


def test_paper_sized_arithmetic_generates_in_seconds(tmp_path):
    start = time.perf_counter()
    dataset = load_task("arithmetic", cache_dir=tmp_path)
    elapsed = time.perf_counter() - start
    assert sum(dataset.num_rows.values()) == 45_151
    assert dataset["test"].num_rows == pytest.approx(0.3 * 45_151, abs=10)
    assert elapsed < 30, f"paper-sized arithmetic took {elapsed:.1f} s"


def test_push_to_hub_and_load_back(tmp_path):
    """Two tasks pushed one after the other to one dataset repo: both configs load, the card describes both."""
    from tests.helpers.local_hub import local_hub

    with local_hub(tmp_path / "hub") as hub:
        repo = hub.repo_id("algorithmic-tasks")
        pushed = {
            task: export_dataset(task, tmp_path / "out", push_to=repo, cache_dir=tmp_path / "cache", **SMALL[task])
            for task in ("parity", "reverse")
        }
        loaded = {
            task: datasets.load_dataset(repo, task, cache_dir=str(tmp_path / f"reload_{task}")) for task in pushed
        }
        card = DatasetCard.load(repo, repo_type="dataset")
    for task in pushed:
        assert {s: d.to_list() for s, d in loaded[task].items()} == {s: d.to_list() for s, d in pushed[task].items()}
        assert f"<!-- task: {task} -->" in card.text
    assert card.data.license == "apache-2.0"
    assert [config["config_name"] for config in card.data.configs] == ["parity", "reverse"]
