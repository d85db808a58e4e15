"""The `mixed` parse and `delta_answer_source = "program"`: ONE parser for the whole library (numerals copied into
registers, characters into cells, a terminator between two sequences, the selection), each answer read where its
program puts it, and the refusals that depend on the chosen program.

A rigged tiny model (`rig`) makes the parse known exactly: the feature layer is the embeddings (layer 0), each
token's embedding marks its role (a character of the input, the end of a sequence, the numeral register r_i reads),
and the head's weights turn the roles into saturated gates and attentions, so that every answer is checkable
against the library's own semantics, with the real Llama 3 tokenizer.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, pipeline

from llama_delta.task_settings import spelled_token_values
from llama_delta.tokenizer import load_llama3_tokenizer
from modeling_llama_delta import LIBRARY, LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA
from modeling_llama_delta.library import BINARY_PROGRAMS, RESULTS
from modeling_llama_delta.modeling_llama_delta import RunReport, program_answers, score_function_loss
from modeling_llama_delta.parsing import ParsedMixed, spelled_numerals
from tests.helpers.configs import TINY_LLAMA
from tests.test_remote_code import load_in_fresh_process

MIXTURE_PROGRAMS = (*BINARY_PROGRAMS, "fib_linear", "sort", "reverse", "count", "strlen", "parity", "add_digits")
PER_TOKEN = 3  # Llama 3 spells numerals up to 999 as one token
NONE, CHAR, END, REG0 = 0, 1, 2, 3  # embedding dimensions marking a token's role; r_i's numeral: REG0 + i
BIG = 1e4  # saturates every sigmoid and softmax exactly in float32


@pytest.fixture(scope="module")
def tokenizer():
    return load_llama3_tokenizer()


@pytest.fixture(scope="module")
def table(tokenizer):
    return spelled_token_values(tokenizer, 128, PER_TOKEN)


def mixture_config(tokenizer, table, **overrides) -> LlamaDeltaConfig:
    settings = dict(
        **TINY_LLAMA | dict(vocab_size=len(tokenizer)),
        delta_word_size=128,
        delta_memory_size=16,
        delta_max_steps=200,
        delta_programs={name: LIBRARY[name] for name in MIXTURE_PROGRAMS},
        delta_feature_layer=0,
        delta_parse_mode="mixed",
        delta_elements_per_token=PER_TOKEN,
        delta_token_values=table,
        delta_input_cells=12,
        delta_input_registers=3,
        delta_answer_source="program",
        delta_answer_format="program",
        delta_answer_length=13,
        delta_parse_samples=2,
    )
    return LlamaDeltaConfig(**settings | overrides)


@pytest.fixture(scope="module")
def model(tokenizer, table):
    torch.manual_seed(0)
    return LlamaDeltaForAlgorithmicQA(mixture_config(tokenizer, table)).eval()


def rig(model, tokenizer, question: str, roles: dict[str, tuple[int, ...]], program: str):
    """Make the parse of `question` exact: tokens whose text is in `roles` get those roles (CHAR: its characters
    are cells; END: it ends a sequence; REG0 + i: register r_i attends to it), the selection picks `program`, and
    registers copy the token they attend to (`count`'s character: its code point). Returns the token ids."""
    ids = tokenizer(question)["input_ids"]
    parser, hidden = model.delta_head.parser, model.config.hidden_size
    registers, k = parser.num_registers, parser.per_token
    with torch.no_grad():
        embeddings = model.model.embed_tokens.weight
        for token in ids:
            embeddings[token] = F.one_hot(torch.tensor(NONE), hidden).float()
            for role in roles.get(tokenizer.decode([token]), ()):
                embeddings[token, role] = 1.0
        attended = {role for text in roles for role in roles[text]}
        writes = [t for t in ids[1:] if len(tokenizer.decode([t])) == 1 or tokenizer.decode([t]).isdigit()]
        for slot in range(registers):  # a register no token is marked for reads the first token writing a value
            if REG0 + slot not in attended and writes:
                embeddings[writes[0], REG0 + slot] = 1.0
        parser.norm.weight.fill_(1.0)
        parser.keys.weight.copy_(BIG * torch.eye(hidden))
        parser.queries.zero_()
        for slot in range(registers):
            parser.queries[slot, REG0 + slot] = 1.0
        parser.gates.weight.zero_()
        parser.gates.weight[:k, CHAR] = BIG
        parser.gates.weight[k, END] = BIG
        parser.gates.bias.fill_(-BIG / 8)
        parser.select.weight.zero_()
        parser.select.bias.zero_()
        parser.select.bias[list(model.config.delta_programs).index(program)] = BIG
    return ids


def parse(model, ids) -> ParsedMixed:
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        hidden = model.model.embed_tokens(input_ids)
        return model.delta_head.parser(hidden, torch.ones_like(input_ids), input_ids)


# (program, question, roles, the answer the program's semantics give)
QUESTIONS = [
    ("add", "Compute 17 plus 9", {"17": (REG0,), "9": (REG0 + 1,)}, "26"),
    ("sub", "Compute 17 plus 9", {"17": (REG0,), "9": (REG0 + 1,)}, "8"),
    ("mul", "Compute 17 plus 9", {"17": (REG0,), "9": (REG0 + 1,)}, str(17 * 9 % 128)),
    ("div", "Compute 17 plus 9", {"17": (REG0,), "9": (REG0 + 1,)}, "1"),
    ("mod", "Compute 17 plus 9", {"17": (REG0,), "9": (REG0 + 1,)}, "8"),
    ("min", "Compute 17 plus 9", {"17": (REG0,), "9": (REG0 + 1,)}, "9"),
    ("max", "Compute 17 plus 9", {"17": (REG0,), "9": (REG0 + 1,)}, "17"),
    (
        "fib_linear",
        "Fibonacci from 3 and 5 after 4 steps",
        {"3": (REG0,), "5": (REG0 + 1,), "4": (REG0 + 2,)},
        "34",  # 3, 5, 8, 13, 21, 34: depth 4 gives x5
    ),
    ("sort", 'Sort "dcab"', {"dc": (CHAR,), "ab": (CHAR,)}, "abcd"),
    ("reverse", 'Reverse "xyzw"', {"xyz": (CHAR,), "w": (CHAR,)}, "wzyx"),
    ("count", 'How many "r" in "rrar"', {"r": (REG0,), "rr": (CHAR,), "ar": (CHAR,)}, "3"),
    ("strlen", 'Sort "dcab"', {"dc": (CHAR,), "ab": (CHAR,)}, "4"),
    ("parity", "Bits 1101", {"110": (CHAR,), "1": (CHAR,)}, "1"),
    (
        "add_digits",
        "If you add 7910 and 2032, what do you get?",
        {"791": (CHAR,), "0": (CHAR, END), "203": (CHAR,), "2": (CHAR, END)},
        "9942",
    ),
]


def test_the_mixture_programs_are_all_served():
    assert {row[0] for row in QUESTIONS} == set(MIXTURE_PROGRAMS)


def test_numerals_go_to_registers_and_characters_to_cells_in_one_pass(model, tokenizer):
    """ "118" is copied as 118 into r0 while its characters '1', '1', '8' are cells, in the same forward pass."""
    ids = rig(
        model, tokenizer, 'Add 118 and 79 to "abc"', {"118": (CHAR, REG0), "79": (REG0 + 1,), "abc": (CHAR,)}, "add"
    )
    parsed = parse(model, ids)
    n, t = 128, len(ids)
    assert parsed.registers.shape == (1, 3, n) and parsed.cells.shape == (1, 12, n)
    assert parsed.gates.shape == (1, t * (PER_TOKEN + 1)) and parsed.elements.shape == (1, t * (PER_TOKEN + 1), n)
    assert torch.equal(parsed.registers[0, :2], F.one_hot(torch.tensor([118, 79]), n).float())  # exact copies
    expected = [ord(c) for c in "118abc"] + [0] * 6
    assert torch.equal(parsed.cells[0], F.one_hot(torch.tensor(expected), n).float())
    assert parsed.selection[0].argmax() == list(model.config.delta_programs).index("add")


def test_numerals_are_read_from_the_characters_tokens_spell():
    spelled = torch.tensor([[[55, 57, 49], [48, -1, -1], [32, -1, -1], [51, 48, 48], [97, 98, -1], [53, -1, -1]]])
    assert spelled_numerals(spelled).tolist() == [[-1, 7910, -1, 300, -1, 5]]


def test_a_terminator_separates_two_sequences_and_long_numerals_are_not_refused(model, tokenizer):
    """add_digits' A 0 B 0 from the end gates of '0' and '2'; 7910 and 2032 are >= n as numbers, but add_digits reads
    them as characters, so neither check_question nor the run refuses them."""
    program, question, roles, answer = QUESTIONS[-1]
    ids = rig(model, tokenizer, question, roles, program)
    cells = parse(model, ids).cells[0].argmax(-1).tolist()
    assert cells == [ord(c) for c in "7910"] + [0] + [ord(c) for c in "2032"] + [0] * 3
    [details] = model.solve(question, tokenizer, return_details=True)
    assert details["answer"] == answer and details["refusal"] is None and details["program"] == "add_digits"


@pytest.mark.parametrize("row", QUESTIONS, ids=[row[0] for row in QUESTIONS])
def test_every_program_answers_where_it_puts_it_on_the_discrete_and_the_soft_path(model, tokenizer, row):
    """The same answer from the integer interpreter (sampled-parse model, arg-max parse) and from the soft machine
    running all 14 programs mixed by an exactly one-hot selection (delta_parse_samples = 0)."""
    program, question, roles, answer = row
    rig(model, tokenizer, question, roles, program)
    [discrete] = model.solve(question, tokenizer, return_details=True)
    assert discrete == dict(discrete, answer=answer, refusal=None, program=program)
    model.config.delta_parse_samples = 0
    try:
        [soft] = model.solve(question, tokenizer, return_details=True)
    finally:
        model.config.delta_parse_samples = 2
    assert soft["answer"] == answer and soft["refusal"] is None and soft["program"] == program


def test_a_soft_selection_mixes_the_places(model, tokenizer):
    """With the selection split between sort (memory) and strlen (registers), the answer distribution is the
    selection-weighted mixture of sort's memory answer and strlen's r0 (then K - 1 zeros)."""
    ids = rig(model, tokenizer, 'Sort "dcab"', {"dc": (CHAR,), "ab": (CHAR,)}, "sort")
    names = list(model.config.delta_programs)
    with torch.no_grad():
        model.delta_head.parser.select.bias[names.index("strlen")] = BIG + 0.5  # 0.62 strlen, 0.38 sort
    model.config.delta_parse_samples = 0
    try:
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            hidden = model.model.embed_tokens(input_ids)
            answer, selection, *_ = model.delta_head(hidden, torch.ones_like(input_ids), input_ids)
    finally:
        model.config.delta_parse_samples = 2
    k, n = model.config.delta_answer_length, 128
    sort_answer = F.one_hot(torch.tensor([ord(c) for c in "abcd"] + [0] * (k - 4)), n).float()
    strlen_answer = F.one_hot(torch.tensor([4] + [0] * (k - 1)), n).float()
    p_sort, p_strlen = selection[0, names.index("sort")], selection[0, names.index("strlen")]
    assert 0.3 < p_sort < 0.45 and p_sort + p_strlen > 1 - 1e-6
    torch.testing.assert_close(answer[0], p_sort * sort_answer + p_strlen * strlen_answer, atol=1e-5, rtol=0)


def test_program_answers_take_one_register_element_and_k_memory_cells():
    n, k = 8, 3
    registers = F.one_hot(torch.tensor([[5, 6, 7]]), n).float()  # (1, R, n)
    memory = F.one_hot(torch.tensor([[1, 2, 3, 4]]), n).float()  # (1, M, n)
    state = type("State", (), {"registers": registers, "memory": memory})
    from_registers = program_answers(state, torch.tensor([False]), k).argmax(-1)
    from_memory = program_answers(state, torch.tensor([True]), k).argmax(-1)
    assert from_registers.tolist() == [[5, 0, 0]] and from_memory.tolist() == [[1, 2, 3]]


def test_sampled_parse_log_q_carries_the_gradient_of_registers_gates_and_selection(model, tokenizer):
    ids = rig(model, tokenizer, 'Add 118 and 79 to "abc"', {"118": (REG0,), "79": (REG0 + 1,), "abc": (CHAR,)}, "add")
    torch.manual_seed(0)
    fresh = LlamaDeltaForAlgorithmicQA(model.config).train()  # random weights: every factor uncertain
    parser = fresh.delta_head.parser
    input_ids = torch.tensor([ids])
    hidden = fresh.model.embed_tokens(input_ids)
    parsed = parser(hidden, torch.ones_like(input_ids), input_ids)
    (cells, registers), log_q = parser.sample(parsed, 4)
    assert cells.shape == (4, 12, 128) and registers.shape == (4, 3, 128) and log_q.shape == (1, 4)
    assert torch.equal(cells.sum(-1), torch.ones(4, 12)) and bool((log_q < 0).all())
    log_q.sum().backward()
    for name in ("gates.weight", "queries", "keys.weight"):
        grad = dict(parser.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_greedy_parse_is_exact_and_discrete_runs_equal_soft_runs_for_every_program(model, tokenizer):
    """For every program of the mixture, Δ's soft machine and the integer interpreter give the same final answer
    from the same one-hot parse (read where the program puts it)."""
    head = model.delta_head
    places = head.answers_in_memory
    for program, question, roles, answer in QUESTIONS:
        ids = rig(model, tokenizer, question, roles, program)
        parsed = parse(model, ids)
        inputs = head.parser.greedy(parsed)
        index = torch.tensor([list(model.config.delta_programs).index(program)])
        discrete = head._run_discrete(inputs, index)
        state = head.machine.start_state(memory=inputs[0][:, : head.machine.memory_size], registers=inputs[1])
        soft = head.machine(state, selection=F.one_hot(index, len(places)).float()).state
        k = model.config.delta_answer_length
        expected = program_answers(discrete, places[index], k)
        assert torch.equal(program_answers(soft, places[index], k), expected), program
        assert model.answer_text(expected.argmax(-1)[0].tolist(), int(index)) == answer, program


@pytest.mark.parametrize(
    ("program", "question", "roles", "cause"),
    [
        ("add", "Compute 300 plus 5", {"300": (REG0,), "5": (REG0 + 1,)}, "reads the numeral 300"),
        ("add", "Add seven and 5?", {"?": (REG0,), "5": (REG0 + 1,)}, "reads the character '?'"),
        ("count", 'How many 7 in "rrar"', {"7": (REG0,), "rr": (CHAR,), "ar": (CHAR,)}, "not a character"),
        ("add", "Add seven and five", {}, "no token of the question writes a value for register r0"),
        ("sort", 'Sort "dcab"', {"dc": (CHAR, END), "ab": (CHAR,)}, "ends a sequence inside the input"),
        ("sort", 'Sort "abécd"', {"ab": (CHAR,), "é": (CHAR,), "cd": (CHAR,)}, "spells no value"),
        (
            "add_digits",
            "If you add 7910 and 2032, what do you get?",
            {"791": (CHAR,), "0": (CHAR,), "203": (CHAR,), "2": (CHAR, END)},
            "reads two zero-terminated sequences",
        ),
        (
            "add_digits",
            "If you add 7910 and 2032, what do you get?",
            {"791": (CHAR,), "0": (END,), "203": (CHAR,), "2": (CHAR, END)},
            "numerals of one length",
        ),
    ],
)
def test_what_the_chosen_program_cannot_read_is_refused(model, tokenizer, program, question, roles, cause):
    rig(model, tokenizer, question, roles, program)
    with pytest.raises(ValueError, match=cause):
        model.solve(question, tokenizer)
    [details] = model.solve(question, tokenizer, return_details=True, refuse=False)
    assert details["answer"] is None and cause in details["refusal"] and details["program"] == program


def test_what_the_program_does_not_read_is_not_refused(model, tokenizer):
    """300 >= n in r2, which add never reads, and an open gate on " plus" (which spells nothing at k = 3) between
    emitted characters, in memory, which add never reads: no refusal (check_question lets the mixed model through
    too). strlen reads that memory: refused."""
    question = "Compute 17 plus 9 not 300"
    roles = {"17": (REG0, CHAR), "9": (REG0 + 1, CHAR), "300": (REG0 + 2,), " plus": (CHAR,)}
    rig(model, tokenizer, question, roles, "add")
    assert model.solve(question, tokenizer) == ["26"]
    rig(model, tokenizer, question, roles, "strlen")
    with pytest.raises(ValueError, match="spells no value"):
        model.solve(question, tokenizer)


def test_program_size_measures_digits_per_operand_and_string_length(model, tokenizer):
    head = model.delta_head
    for program, question, roles, size in (
        ("add_digits", "If you add 7910 and 2032, what do you get?", QUESTIONS[-1][2], 4),
        ("count", 'How many "r" in "rrar"', QUESTIONS[10][2], 4),
        ("strlen", 'Sort "dcab"', QUESTIONS[11][2], 4),
    ):
        parsed = parse(model, rig(model, tokenizer, question, roles, program))
        report = RunReport.of_parse(parsed, 128)
        assert report.program_size(0, program, head.parser.greedy(parsed)) == size, program


def test_enumerating_programs_moves_the_selection_toward_the_right_program(tokenizer, table):
    """delta_program_choice = "enumerate": every sampled parse runs under every program, and the selection's score
    goes up for the program whose answer is right."""
    config = mixture_config(tokenizer, table, delta_program_choice="enumerate")
    torch.manual_seed(0)
    model = LlamaDeltaForAlgorithmicQA(config).train()
    rig(model, tokenizer, "Compute 17 plus 9", QUESTIONS[0][2], "add")
    names = list(config.delta_programs)
    with torch.no_grad():
        model.delta_head.parser.select.bias.zero_()  # a uniform selection
    batch = tokenizer(["Compute 17 plus 9"], return_tensors="pt")
    labels = torch.tensor([[26] + [-100] * (config.delta_answer_length - 1)])
    out = model(**batch, labels=labels)
    assert out.sample_loss.shape == (1, 2)
    out.loss.backward()
    grad = model.delta_head.parser.select.bias.grad
    assert grad[names.index("add")] < 0  # the right program's score goes up
    assert grad[names.index("add")] == grad.min()


def test_the_selection_gradient_is_selection_minus_the_posterior():
    """The enumerated loss: each sample's value is its marginal answer NLL per element, and the selection logits get
    exactly (selection - posterior over programs given the answer), averaged over samples and divided by the batch,
    whatever the answer's length (an expected loss would give a gradient proportional to the selection instead)."""
    torch.manual_seed(0)
    b, s, p, k, n = 3, 4, 5, 6, 7
    answer_logits = torch.randn(b, s, p, k, n).log_softmax(-1)
    labels = torch.randint(n, (b, k))
    labels[0, 2:] = -100  # answers of different lengths
    logits = torch.randn(b, p, requires_grad=True)
    selection = logits.softmax(-1)
    log_q = torch.zeros(b, s, requires_grad=True)
    loss, sample_loss = score_function_loss(answer_logits, labels, log_q, selection)
    loss.backward()
    valid = (labels != -100)[:, None, None]  # (B, 1, 1, K)
    picked = answer_logits.gather(-1, labels.clamp_min(0)[:, None, None, :, None].expand(b, s, p, k, 1))[..., 0]
    log_likelihood = (picked * valid).sum(-1)  # (B, S, P)
    posterior = (log_likelihood + selection.detach().log()[:, None]).softmax(-1).mean(1)  # (B, P)
    torch.testing.assert_close(logits.grad, (selection.detach() - posterior) / b)
    marginal = torch.logsumexp(log_likelihood + selection.detach().log()[:, None], -1)  # (B, S)
    torch.testing.assert_close(sample_loss, -marginal / valid.sum(-1)[:, :, 0])
    torch.testing.assert_close(loss, sample_loss.mean())


def test_program_mode_config_is_validated(tokenizer, table):
    with pytest.raises(ValueError, match="'program' goes with 'program'"):
        mixture_config(tokenizer, table, delta_answer_format="integers")
    with pytest.raises(ValueError, match=r"delta_programs\['mine'\] is not a library program"):
        mine = ".func mine\n    ret\n"
        mixture_config(tokenizer, table, delta_programs={"add": LIBRARY["add"], "mine": mine})
    with pytest.raises(ValueError, match="delta_program_choice"):
        mixture_config(tokenizer, table, delta_program_choice="all")
    with pytest.raises(ValueError, match="set delta_parse_samples"):
        mixture_config(tokenizer, table, delta_program_choice="enumerate", delta_parse_samples=0)


def test_results_table_covers_the_library():
    assert set(RESULTS) == set(LIBRARY)


def test_save_reload_and_remote_code_keep_the_mixed_model(model, tokenizer, tmp_path):
    """Saved and reloaded (in-process), then loaded as remote code in a fresh process: the same answers."""
    program, question, roles, answer = QUESTIONS[-1]
    ids = rig(model, tokenizer, question, roles, program)
    model.save_pretrained(tmp_path / "mixed")
    reloaded = AutoModel.from_pretrained(tmp_path / "mixed", trust_remote_code=True).eval()
    assert reloaded.config.delta_parse_mode == "mixed" and reloaded.config.delta_answer_source == "program"
    assert reloaded.config.delta_token_values == model.config.delta_token_values
    assert reloaded.solve(question, tokenizer, return_details=True)[0]["program"] == "add_digits"
    assert reloaded.solve(question, tokenizer) == [answer]
    tokenizer.save_pretrained(tmp_path / "mixed")
    solver = pipeline(model=str(tmp_path / "mixed"), trust_remote_code=True)
    assert solver([question]) == [{"answer": answer}]  # written in add_digits' format, not the config's
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    inputs["labels"] = torch.tensor([[ord(c) for c in "09942"] + [0] + [-100] * 7])
    tensors, _ = load_in_fresh_process(str(tmp_path / "mixed"), inputs, tmp_path, HF_HUB_OFFLINE="1")
    with torch.no_grad():
        expected = model(**inputs)
    torch.testing.assert_close(tensors["out.answer_logits"], expected.answer_logits, rtol=0, atol=0)
    torch.testing.assert_close(tensors["out.loss"], expected.loss.reshape(-1), rtol=0, atol=0)


def test_delta_is_sized_per_question_for_operands_longer_than_the_config(model, tokenizer):
    """8-digit operands need 18 cells (memory 16) from 18 elements (delta_input_cells 12): the parse and Δ grow
    with the question, as for `tokens`."""
    question = "If you add 99999999 and 11111111, what do you get?"
    roles = {"999": (CHAR,), "99": (CHAR, END), "111": (CHAR,), "11": (CHAR, END)}
    ids = rig(model, tokenizer, question, roles, "add_digits")
    assert [tokenizer.decode([t]) for t in ids].count("99") == 1
    assert model.solve(question, tokenizer) == [str(99999999 + 11111111)]
    model.config.delta_size_per_question = False
    try:
        [details] = model.solve(question, tokenizer, return_details=True, refuse=False)
    finally:
        model.config.delta_size_per_question = True
    assert details["answer"] is None and "delta_input_cells" in details["refusal"]


def test_registers_hold_only_values_the_question_writes(tokenizer, table):
    """With spelled tokens the registers are copied, never classified: whatever the weights, a register's
    distribution lies on the numerals and one-character tokens of the question (a classifier would let the
    backbone compute the answer into a register, where `add`/`min` pass it through)."""
    torch.manual_seed(1)
    fresh = LlamaDeltaForAlgorithmicQA(mixture_config(tokenizer, table)).eval()
    question = 'Add 118 and 79 to "abc" (mod 128)'
    ids = tokenizer(question)["input_ids"]
    written = {118, 79} | {ord(tokenizer.decode([t])) for t in ids[1:] if len(tokenizer.decode([t])) == 1}
    written.add(0)  # the numeral 128 >= n is listed with the value 0 (its refusal names it)
    parsed = parse(fresh, ids)
    support = set((parsed.registers[0] > 0).nonzero()[:, 1].tolist())
    assert support <= written and {118, 79} <= support
    assert torch.allclose(parsed.registers.sum(-1), torch.ones(1, parsed.registers.shape[1]))
