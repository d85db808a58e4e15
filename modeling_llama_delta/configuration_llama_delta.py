"""`LlamaDeltaConfig`: a `LlamaConfig` plus the differentiable computer Δ and its library Λ."""

import dataclasses
import difflib
import math

import torch
from transformers import LlamaConfig

from .alu import ALU_BACKENDS
from .compiler import compile_library
from .library import LIBRARY, RESULTS, check_machine_fits
from .parsing import PARSE_MODES, PARSERS

# "program" (source and format together): each example's answer is read where its chosen program puts it,
# and written in that program's format (`library.RESULTS`).
ANSWER_SOURCES = ("registers", "memory", "program")
ANSWER_FORMATS = ("integers", "string", "digits", "program")
# How the sampled parses' programs are chosen in training (`delta_program_choice`).
PROGRAM_CHOICES = ("sample", "enumerate")
# The paper's §4.2 calculator: one program per arithmetic operation.
DEFAULT_PROGRAMS = ("add", "sub", "mul", "div", "mod", "min", "max")


class LlamaDeltaConfig(LlamaConfig):
    r"""
    A Llama backbone whose hidden states are parsed into the initial state of a differentiable register
    machine Δ (Saldyt & Kambhampati, §3.4), which then runs every library program; the answer is read from
    Δ's final state, mixed over programs by the head's selection probabilities.

    delta_word_size (`int`): `n`; every value is a one-hot distribution over `0..n-1`, and the ROM has `n` lines.
    delta_num_registers (`int`): registers `r0..r(R-1)`; `r(R-2)` is `sp`, `r(R-1)` is `ra` (ISA v1).
    delta_memory_size (`int`): memory cells, `1..n`.
    delta_max_steps (`int`): Δ steps per forward pass (a run stops early once every example has halted).
    delta_alu (`str`): ALU backend, one of `table` (the paper's dense lookup), `structured` (same outputs, no
        table), `circuit` (logic gates on binary encodings; `n` a power of two). Swappable after training.
    delta_programs (`dict[str, str]`): library Λ, program name -> ISA v1 assembly source, each starting with
        `.func NAME`; kept sorted by name, which is the order of the selection axis.
        The sources travel with the checkpoint so that the compiled ROM can be rebuilt and checked.
    delta_trainable_programs (`bool`): off (the default): the library is a frozen one-hot ROM, checked against
        its sources at load. On: the ROM is trainable logits `delta_program_sharpness * one_hot(compiled)` (adaptive
        compilation, Bunel et al. 2016: the paper's adaptive programs), trained with the rest of the model; the
        sources are then its starting point, and the export writes what it became as assembly (`decompiled/`).
    delta_program_sharpness (`float`): the trainable ROM's initial logit scale (> 0); each field's top
        probability starts at 1 / (1 + (size - 1) e^-s), e.g. 0.994 for s = 10 and n = 128 immediates.
    delta_feature_layer (`int`): index into the backbone's `hidden_states` tuple feeding the head
        (`-2`: the output of the layer before the last, as in the paper).
    delta_parse_mode (`str`): `last_token` (the paper: one vector from the last token), `slots` (one learned
        query per parsed cell/register/selection, attending over all token states), or `tokens` (every token
        emits up to `delta_elements_per_token` cell values, placed in order from m[0]; registers and selection
        from the last token), or `mixed` (one parse for the whole library: registers copied by slot queries from
        the tokens that write a value, numerals and one-character tokens, cells as `tokens` with an end-of-sequence
        gate per token, the selection from a query; `parsing.MixedParser`).
    delta_elements_per_token (`int`): for `tokens` parsing, how many cell values one token can spell.
    delta_token_values (`dict[str, int | list[int]]`): token id -> the value(s) the token spells, copied instead of
        classified. `slots`: one value per token, read as decimal numerals (Llama 3 spells 0..999 as single
        tokens; adjacent value tokens form one number, so a digit-by-digit tokenizer's "1", "2", "5" is 125); a
        slot attending to a numeral's last token copies its value (a pointer, exact for a sharp attention).
        `tokens` and `mixed`: up to
        `delta_elements_per_token` values per token (the characters of "abc" are [97, 98, 99]); the token's
        elements take those values and only their gates are learned. Under `tokens` and `slots` tokens not listed
        fall back to the learned classifier; under `mixed` a token not listed writes nothing, and a token whose
        characters are all digits also writes the numeral they spell (for a register).
    delta_input_cells (`int`): memory cells `m[0..k-1]` the head writes (the rest start at 0).
    delta_input_registers (`int`): registers `r0..r(k-1)` the head writes (never `sp`/`ra`).
    delta_answer_source (`str`): `registers` or `memory`: where the answer is read after the run; `program`: where
        each example's chosen program puts its result (`library.RESULTS`; soft selections mix the places), which
        needs every program to be a library program and `delta_answer_format = "program"`.
    delta_answer_length (`int`): answer elements, read from index 0 of `delta_answer_source` (`program`: the K of
        memory answers; a register answer is ONE element, followed by K - 1 positions the labels mask with -100).
    delta_answer_format (`str`): how `solve` writes answers as text: `integers` ("7", "3 1 2"), `string`
        (code points up to the first 0: "abbdd"), `digits` (digit characters, most significant first: "1234"), or
        `program` (the chosen program's format, `library.RESULTS`; with `delta_answer_source = "program"`).
    delta_straight_through (`bool`): run Δ on the arg-max (one-hot, hence exact) parse and pass gradients to
        the soft parse straight through; off: Δ runs on the soft parse itself (the paper).
    delta_parse_samples (`int`): 0: Δ runs on the parse itself (the paper, or straight-through). `S >= 2`: in
        training Δ runs exactly on `S` one-hot parses sampled from the head's distributions per example, each
        with one library program sampled from the selection (`delta_program_choice = "sample"`; `enumerate` runs
        every program), and the head learns from the score-function
        (REINFORCE) gradient with a leave-one-out baseline; in evaluation Δ runs the arg-max parse and program.
        These runs take the integer interpreter (`discrete.py`). For long programs, where Δ's soft run is
        unstable (a 1e-5 parse uncertainty grows into a wrong sort over ~250 steps: experiments/README.md).
    delta_program_choice (`str`): with `delta_parse_samples`, in training: `sample` (each sampled parse runs one
        program drawn from the selection, score-function gradient for it too) or `enumerate` (each sampled parse
        runs under every program, B·S·P exact runs; each sample's loss is its marginal answer NLL over the
        programs, -log sum_p selection_p P(answer | parse, p), per answer element, the selection's gradient
        selection - posterior per question, exact; the score function for the parse).
    delta_checkpoint_steps (`int`): gradient checkpointing over blocks of this many Δ steps (0: off).
    delta_size_per_question (`bool`): on (new configs): outside training, runs on the integer interpreter (one
        program, an exactly one-hot parse) size Δ per batch from the parsed input: the `tokens` parse holds up to
        min(n, tokens x `delta_elements_per_token`) cells, and memory, step budget and (memory answers in `string` /
        `digits`) answer length follow the parse and `library.memory_needed` / `library.step_bound` of the chosen
        program, with memory <= n (README "Sizing and refusals"). `delta_memory_size`, `delta_max_steps`,
        `delta_input_cells` and `delta_answer_length` are then the training-time sizes and the smallest ones used.
        Off: those fields are fixed sizes. A saved config without this field loads with it off (the behaviour it
        was trained and evaluated with).
    delta_min_answer_probability (`float`): outside training, an answer whose probability
        (`AlgorithmicQAOutput.answer_probability`) is below this is refused, naming it (0: off, the default; the
        recipe sets 0.5): a question the parse is unsure of gets a refusal, not a guess.
    """

    model_type = "llama_delta"
    # Trainer's evaluation gathers every output tensor; the refusals are per-example text (`solve` reads them)
    keys_to_ignore_at_inference = ["refusals"]

    delta_word_size: int = 128
    delta_num_registers: int = 8
    delta_memory_size: int = 32
    delta_max_steps: int = 64
    delta_alu: str = "structured"
    delta_programs: dict | None = None
    delta_trainable_programs: bool = False
    delta_program_sharpness: float = 10.0
    delta_feature_layer: int = -2
    delta_parse_mode: str = "last_token"
    delta_elements_per_token: int = 1
    delta_token_values: dict | None = None
    delta_input_cells: int = 0
    delta_input_registers: int = 2
    delta_answer_source: str = "registers"
    delta_answer_length: int = 1
    delta_answer_format: str = "integers"
    delta_straight_through: bool = False
    delta_parse_samples: int = 0
    delta_program_choice: str = "sample"
    delta_checkpoint_steps: int = 0
    delta_size_per_question: bool = True
    delta_min_answer_probability: float = 0.0

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        # A config saved before `delta_size_per_question` existed keeps the fixed sizes it was evaluated with.
        if config_dict.get("model_type") == cls.model_type and "delta_size_per_question" not in config_dict:
            config_dict = {**config_dict, "delta_size_per_question": False}
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs):
        if self.delta_programs is None:
            self.delta_programs = {name: LIBRARY[name] for name in DEFAULT_PROGRAMS}
        if isinstance(self.delta_programs, dict):
            # Sorted by name: config.json sorts keys, and the ROM's program axis must survive a save/load.
            self.delta_programs = dict(sorted(self.delta_programs.items(), key=lambda item: str(item[0])))
        for name in ("dtype", "torch_dtype"):  # transformers turns a dtype name into `getattr(torch, name)`
            value = self.dtype if name == "dtype" else kwargs.get(name)
            if isinstance(value, str) and not isinstance(getattr(torch, value, None), torch.dtype):
                raise ValueError(f"{name} = {value!r} is not a torch dtype name (e.g. 'float32', 'bfloat16')")
        super().__post_init__(**kwargs)
        self.validate_delta()

    @classmethod
    def delta_fields(cls) -> dict[str, object]:
        """The Δ fields (`delta_*` annotations of the class and its bases): name -> annotated type."""
        return {field.name: field.type for field in dataclasses.fields(cls) if field.name.startswith("delta_")}

    def _check_field_names_and_types(self) -> None:
        """Refuse unknown `delta_*` attributes (a misspelled field would be ignored silently) and values whose type
        is not the field's annotated `bool` / `int` / `float` / `str` (`"no"` is not False)."""
        fields = self.delta_fields()
        for name in vars(self):
            if name.startswith("delta_") and name not in fields:
                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ValueError(f"unknown config field {name}{hint}; the Δ fields are: {', '.join(fields)}")
        for name, annotated in fields.items():
            kind = annotated if isinstance(annotated, str) else getattr(annotated, "__name__", "")
            value = getattr(self, name)
            if kind == "bool" and not isinstance(value, bool):
                raise ValueError(f"{name} = {value!r} must be a bool (true or false)")
            if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} = {value!r} must be an integer")
            if kind == "float" and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise ValueError(f"{name} = {value!r} must be a finite number")
            if kind == "str" and not isinstance(value, str):
                raise ValueError(f"{name} = {value!r} must be a string")

    def validate_delta(self) -> None:
        """Every Δ field checked at construction; messages name the field, the value and the allowed range.

        (Plain code rather than `huggingface_hub`'s `@strict`, so the Hub copy imports only torch and transformers.)
        """
        self._check_field_names_and_types()
        n, registers = self.delta_word_size, self.delta_num_registers

        def check_range(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} = {value!r} must be an integer in {low}..{high}")
            if not low <= value <= high:
                raise ValueError(f"{name} = {value} is out of range: allowed {low}..{high}")

        def check_choice(name: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} = {getattr(self, name)!r} is not one of {', '.join(allowed)}")

        check_range("delta_word_size", 2, 4096)
        check_range("delta_num_registers", 2, 256)
        check_range("delta_memory_size", 1, n)
        check_range("delta_max_steps", 1, 1_000_000)
        check_choice("delta_alu", ALU_BACKENDS)
        if self.delta_alu == "circuit" and n & (n - 1):
            raise ValueError(f"delta_alu = 'circuit' needs delta_word_size a power of two, got {n}")
        layers = self.num_hidden_layers
        check_range("delta_feature_layer", -(layers + 1), layers)
        check_choice("delta_parse_mode", PARSE_MODES)
        check_range("delta_elements_per_token", 1, 64)
        if self.delta_token_values is not None and not isinstance(self.delta_token_values, dict):
            raise ValueError(
                "delta_token_values must be a dict of token id -> value(s), got "
                f"{type(self.delta_token_values).__name__}"
            )
        parser = PARSERS[self.delta_parse_mode]
        if self.delta_token_values:
            most = parser.values_per_token(self)
            if not most:
                copying = " or ".join(repr(mode) for mode, cls in PARSERS.items() if cls.values_per_token(self))
                raise ValueError(f"delta_token_values needs delta_parse_mode {copying} (values are copied from tokens)")
            for token, spelled in self.delta_token_values.items():
                key = str(token)
                if not (key.isascii() and key.isdigit()) or not 0 <= int(key) < self.vocab_size:
                    raise ValueError(f"delta_token_values key {token!r} is not a token id in 0..{self.vocab_size - 1}")
                values = spelled if isinstance(spelled, list) else [spelled]
                if not 1 <= len(values) <= most:
                    raise ValueError(
                        f"delta_token_values[{token!r}] = {spelled!r} spells {len(values)} values; allowed 1..{most} "
                        f"(delta_parse_mode {self.delta_parse_mode!r}, delta_elements_per_token "
                        f"{self.delta_elements_per_token})"
                    )
                for value in values:
                    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
                        raise ValueError(
                            f"delta_token_values[{token!r}] = {spelled!r}: {value!r} is not a value in 0..{n - 1}"
                        )
        check_range("delta_input_cells", parser.min_input_cells, self.delta_memory_size)
        check_range("delta_input_registers", 0, registers - 2)
        check_choice("delta_answer_source", ANSWER_SOURCES)
        answer_room = registers if self.delta_answer_source == "registers" else self.delta_memory_size
        check_range("delta_answer_length", 1, answer_room)
        check_choice("delta_answer_format", ANSWER_FORMATS)
        if (self.delta_answer_source == "program") != (self.delta_answer_format == "program"):
            raise ValueError(
                f"delta_answer_source = {self.delta_answer_source!r} and delta_answer_format = "
                f"{self.delta_answer_format!r}: 'program' goes with 'program' (each program's place and format)"
            )
        check_choice("delta_program_choice", PROGRAM_CHOICES)
        if self.delta_program_choice == "enumerate" and not self.delta_parse_samples:
            raise ValueError(
                "delta_program_choice = 'enumerate' runs every program on sampled parses: set delta_parse_samples"
            )
        check_range("delta_checkpoint_steps", 0, self.delta_max_steps)
        if self.delta_parse_samples != 0:
            check_range("delta_parse_samples", 2, 256)  # the baseline of a sample is the mean of the others
            if self.delta_straight_through:
                raise ValueError("delta_parse_samples > 0 runs Δ on sampled parses: set delta_straight_through = False")
        if not isinstance(self.delta_programs, dict):
            raise ValueError(
                f"delta_programs must be a dict of program name -> assembly source, got "
                f"{type(self.delta_programs).__name__}"
            )
        if not self.delta_programs:
            raise ValueError("delta_programs is empty: the library needs at least one program")
        library_names = {source: name for name, source in LIBRARY.items()}
        for name, source in self.delta_programs.items():
            if not isinstance(name, str) or not isinstance(source, str):
                raise ValueError(
                    f"delta_programs[{name!r}]: names and sources must be strings, got {type(name).__name__} -> "
                    f"{type(source).__name__}"
                )
            if source in library_names:  # a library program assembles on too few registers, then runs wrong
                try:
                    check_machine_fits(library_names[source], n, registers)
                except ValueError as error:
                    raise ValueError(
                        f"delta_programs[{name!r}]: {error} (delta_num_registers, delta_word_size)"
                    ) from None
        if self.delta_answer_source == "program":
            for name, source in self.delta_programs.items():
                if library_names.get(source) not in RESULTS:
                    raise ValueError(
                        f"delta_programs[{name!r}] is not a library program (its source matches none in LIBRARY): "
                        "delta_answer_source = 'program' reads each answer where its library program puts it"
                    )
        library = compile_library(self.delta_programs, n, registers)  # assembled once per library (cached)
        for name, program in zip(library.names, library.programs, strict=True):
            if name not in program.functions:
                raise ValueError(f"delta_programs[{name!r}] has no '.func {name}' entry point")
        if not 0.0 <= self.delta_min_answer_probability <= 1.0:
            raise ValueError(
                f"delta_min_answer_probability = {self.delta_min_answer_probability!r} is out of range: allowed 0..1"
            )
        if not self.delta_program_sharpness > 0:  # its type and finiteness are checked with every field's
            raise ValueError(f"delta_program_sharpness = {self.delta_program_sharpness!r} must be a finite number > 0")


__all__ = ["LlamaDeltaConfig"]
