"""Conformance CLI (ISA.md "Conformance format"): reference and soft results per JSON line."""

import json
import subprocess
import sys
from pathlib import Path

from modeling_llama_delta.conformance import run_case, run_cases

GOOD = {
    "id": "c1",
    "source": "loop: add r0, r0, r1\ndec r2, r2\njnz r2, loop\nwrite r1, r0\ncall f\nhalt\nf: read r3, r1\nret",
    "n": 16,
    "num_registers": 8,
    "memory_size": 16,
    "memory": [3, 1, 2],
    "registers": [0, 5, 3],
    "entry": None,
    "max_steps": 200,
}
BAD = {"id": "bad", "source": "const r0, 1\nadd r0, r1", "n": 16, "num_registers": 8, "memory_size": 16}
ENTRY = {
    "id": "e",
    "source": "const r0, 1\nhalt\n.func g\nconst r1, 7\nret",
    "n": 8,
    "num_registers": 4,
    "memory_size": 4,
    "entry": "g",
    "max_steps": 50,
}


def _check_good(answer):
    assert answer["id"] == "c1" and answer["error"] is None
    reference, soft = answer["reference"], answer["soft"]
    assert reference["registers"] == [15, 5, 0, 15, 0, 0, 0, 5] and reference["halted"] and reference["steps"] == 14
    assert reference["memory"][5] == 15 and len(reference["memory"]) == 16
    assert soft["memory"] == reference["memory"] and soft["registers"] == reference["registers"]
    assert soft["halted"] and soft["halt_probability"] == 1.0 and soft["min_confidence"] >= 0.999


def test_cli_answers_every_line_in_order(tmp_path: Path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(json.dumps(case) for case in (GOOD, BAD, ENTRY)) + "\n")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "modeling_llama_delta.conformance", str(cases), "--alu", "structured"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        check=True,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [answer["id"] for answer in answers] == ["c1", "bad", "e"]
    _check_good(answers[0])
    assert answers[1]["error"].startswith("line 2: 'add' takes 3 operand(s)") and "reference" not in answers[1]
    assert answers[2]["soft"]["registers"] == answers[2]["reference"]["registers"] == [0, 7, 0, 4]


def test_every_backend_and_stdin_style_lines():
    lines = ["", json.dumps(GOOD), "not json", json.dumps({"id": "x", "source": "halt"})]
    for alu in ("structured", "table", "circuit"):
        answers = list(run_cases(lines, alu))
        _check_good(answers[0])
        assert answers[1]["error"].startswith("input line 3: not JSON")
        assert answers[2] == {"id": "x", "error": "missing field 'n'"}
    assert run_case({**GOOD, "memory": [99]})["error"] == "memory[0] = 99 is not an integer in 0..15"
