"""`LlamaDeltaForComposedQA`: a Llama whose head writes a main() of up to K library calls, which Δ runs (issue #17).

The head parses the question's values as `LlamaDeltaForAlgorithmicQA` does (its `delta_parse_mode` parser: the
values in registers, a string in cells) and, per call k, reads the token states with its own query to choose a
program of the library or "stop", and, per input register, a source: a parsed value or the previous call's result.
Training runs the soft chain (`composition.run_main_soft`: the mean field over mains, differentiable in every
choice; exact and cheap for short programs such as the binary ones), from answers alone. Evaluation takes the
arg-max main() and runs it exactly on the integer machine (`run_main_discrete`). `explain` prints the decoded
main() as assembly (`to_assembly`), so a user sees which programs ran on which inputs.

Not yet here: sampled mains (the score-function path `delta_parse_samples` gives single calls, which long
programs such as sort need), per-question sizing and refusals, the pipeline and Hub export of this class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlamaModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .composition import KEEP, MAX_CALLS, PREVIOUS, PROGRAM_INPUTS, Call, MainProgram, run_main_discrete, run_main_soft
from .composition import to_assembly as main_to_assembly
from .configuration_llama_delta import LlamaDeltaConfig
from .discrete import DiscreteMachine
from .modeling_llama_delta import ANSWER_EPS, LlamaDeltaPreTrainedModel, build_machine, format_answer
from .parsing import build_parser


@dataclass
class ComposedQAOutput(ModelOutput):
    """
    loss: cross-entropy on answer elements (labels given).
    answer_logits: (B, A, n) log-probabilities of the answer elements.
    selections: (B, K, P + 1) per call, the programs' and stop's probabilities.
    sources: (B, K, I, V + 1) per call and input register, the parsed values' and the previous result's.
    parsed_registers: (B, V, n) the question's values as parsed.
    halt_probability: (B,) P(every call halted).
    """

    loss: Tensor | None = None
    answer_logits: Tensor | None = None
    selections: Tensor | None = None
    sources: Tensor | None = None
    parsed_registers: Tensor | None = None
    halt_probability: Tensor | None = None


@dataclass
class DecodedMain:
    """One question's arg-max main(): the program, the parsed values its `const`s write, the parsed memory."""

    main: MainProgram
    parsed_values: list[int]
    memory: list[int]


class MainHead(nn.Module):
    """Parser + call choices + Δ. K = `MAX_CALLS` calls; I = the most inputs a library program takes; V =
    `delta_input_registers` parsed values."""

    def __init__(self, config: LlamaDeltaConfig, max_calls: int = MAX_CALLS):
        super().__init__()
        self.config, self.max_calls = config, max_calls
        self.names = list(config.delta_programs)
        unknown = [name for name in self.names if name not in PROGRAM_INPUTS]
        if unknown:
            raise ValueError(f"composition needs library programs (their input registers are known); not: {unknown}")
        self.parser = build_parser(config)
        self.machine = build_machine(config)
        self._discrete: DiscreteMachine | None = None
        h, p = config.hidden_size, len(self.names)
        self.num_parsed = config.delta_input_registers
        self.max_inputs = max(1, *(len(PROGRAM_INPUTS[name]) for name in self.names))
        self.register_buffer(
            "program_inputs", torch.tensor([len(PROGRAM_INPUTS[name]) for name in self.names]), persistent=False
        )
        self.call_queries = nn.Parameter(torch.empty(max_calls, h))  # (K, H)
        self.call_keys = nn.Linear(h, h, bias=False)
        self.choose = nn.Linear(h, p + 1)  # the programs, then stop
        self.source = nn.Linear(h, self.max_inputs * (self.num_parsed + 1))  # per register: parsed values, previous

    @property
    def discrete(self) -> DiscreteMachine:
        if self._discrete is None:
            self._discrete = DiscreteMachine(self.machine.programs, self.machine.memory_size, self.machine.max_steps)
        return self._discrete

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor | None):
        """-> parsed (`ParsedQuestion`), selections (B, K, P + 1), sources (B, K, I, V + 1). The first call cannot
        stop or take a previous result (there is none)."""
        with torch.autocast(hidden.device.type, enabled=False):  # Δ is exact in full precision only
            parsed = self.parser(hidden, attention_mask, input_ids)
            states = self.parser.norm(hidden).float()  # (B, T, H)
            scores = torch.einsum("kh,bth->bkt", self.call_queries.float(), self.call_keys(states))
            scores = scores / math.sqrt(states.shape[-1])
            if attention_mask is not None:
                scores = scores.masked_fill(attention_mask[:, None, :] == 0, torch.finfo(scores.dtype).min)
            read = torch.einsum("bkt,bth->bkh", scores.softmax(-1), states)  # (B, K, H)
            b, k, p, v = read.shape[0], self.max_calls, len(self.names), self.num_parsed
            choice = self.choose(read)  # (B, K, P + 1)
            source = self.source(read).view(b, k, self.max_inputs, v + 1)  # (B, K, I, V + 1)
            first = torch.zeros_like(choice[0, :, 0], dtype=torch.bool)  # (K,)
            first[0] = True
            choice = choice.masked_fill(first[:, None] & (torch.arange(p + 1, device=choice.device) == p), -torch.inf)
            source = source.masked_fill(
                first[:, None, None] & (torch.arange(v + 1, device=source.device) == v), -torch.inf
            )
            return parsed, choice.softmax(-1), source.softmax(-1)

    def run_soft(self, parsed, selections: Tensor, sources: Tensor):
        """The soft chain: (B, M, n) memory, (B, R, n) registers, (B,) P(halted)."""
        keep = sources.new_zeros(*sources.shape[:-1], 1)  # every input register is set: programs ignore the rest
        memory = parsed.cells if parsed.cells.shape[1] else None
        state = run_main_soft(self.machine, selections, torch.cat([sources, keep], -1), parsed.registers, memory)
        return state.memory, state.registers, state.halted

    def greedy(self, parsed, selections: Tensor, sources: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The arg-max main() as tensors: programs (B, K) (-1 from the first stop on), sources (B, K, I) (`PREVIOUS`,
        a parsed value, `KEEP` beyond the program's inputs), parsed values (B, V), memory (B, C) or None."""
        p, v = len(self.names), self.num_parsed
        programs = selections.argmax(-1)  # (B, K)
        stopped = (programs == p).long().cummax(1).values.bool()
        programs = programs.masked_fill(stopped, -1)
        chosen = sources.argmax(-1)  # (B, K, I)
        chosen = torch.where(chosen == v, PREVIOUS, chosen)
        inputs = self.program_inputs[programs.clamp_min(0)]  # (B, K)
        registers = torch.arange(self.max_inputs, device=chosen.device)
        chosen = torch.where(registers < inputs[..., None], chosen, KEEP)
        memory = parsed.cells.argmax(-1) if parsed.cells.shape[1] else None
        return programs, chosen, parsed.registers.argmax(-1), memory

    def run_greedy(self, parsed, selections: Tensor, sources: Tensor):
        """The arg-max main() run exactly on the integer machine, as one-hot states like `run_soft`'s."""
        programs, chosen, values, memory = self.greedy(parsed, selections, sources)
        final = run_main_discrete(self.discrete, programs, chosen, values, memory)
        n, dtype = self.machine.n, parsed.registers.dtype
        return F.one_hot(final.memory, n).to(dtype), F.one_hot(final.registers, n).to(dtype), final.halted.to(dtype)


class LlamaDeltaForComposedQA(LlamaDeltaPreTrainedModel):
    """A Llama backbone + `MainHead`; `forward` returns `ComposedQAOutput`; `explain` prints the main() it runs."""

    accepts_loss_kwargs = False

    def __init__(self, config: LlamaDeltaConfig):
        config.validate_delta()
        super().__init__(config)
        self.model = LlamaModel(config)
        self.delta_head = MainHead(config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MainHead):
            init.normal_(module.call_queries, std=self.config.initializer_range)

    def head_inputs(self, input_ids: Tensor, attention_mask: Tensor | None):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = outputs.hidden_states[self.config.delta_feature_layer]  # (B, T, H)
        return self.delta_head(hidden, attention_mask, input_ids)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None
    ) -> ComposedQAOutput:
        """labels (B, A): answer elements, -100 past an answer's end. With gradients, Δ runs the soft chain;
        without, the arg-max main() runs exactly."""
        parsed, selections, sources = self.head_inputs(input_ids, attention_mask)
        head = self.delta_head
        run = head.run_soft if torch.is_grad_enabled() else head.run_greedy
        memory, registers, halted = run(parsed, selections, sources)
        answer_source = registers if self.config.delta_answer_source == "registers" else memory
        answer_logits = torch.log(answer_source[:, : self.config.delta_answer_length] + ANSWER_EPS)  # (B, A, n)
        loss = None
        if labels is not None:
            labels = labels.to(answer_logits.device)
            loss = F.nll_loss(answer_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return ComposedQAOutput(loss, answer_logits, selections, sources, parsed.registers, halted)

    @torch.no_grad()
    def decode(self, questions: Sequence[str], tokenizer) -> list[DecodedMain]:
        """The arg-max main() of each question, with its parsed values and memory."""
        batch = tokenizer(list(questions), return_tensors="pt", padding=True).to(self.device)
        parsed, selections, sources = self.head_inputs(batch["input_ids"], batch["attention_mask"])
        programs, chosen, values, memory = self.delta_head.greedy(parsed, selections, sources)
        decoded = []
        for b in range(len(questions)):
            calls = []
            for k in range(programs.shape[1]):
                if programs[b, k] < 0:
                    break
                sources_k = tuple(s for s in chosen[b, k].tolist() if s != KEEP)
                calls.append(Call(int(programs[b, k]), sources_k))
            cells = [] if memory is None else memory[b].tolist()
            decoded.append(DecodedMain(MainProgram(tuple(calls)), values[b].tolist(), cells))
        return decoded

    def explain(self, question: str, tokenizer) -> str:
        """The main() the model runs for `question`, as ISA v1.1 assembly (it assembles, and run in the reference
        interpreter it gives the model's answer), headed by the question and that answer as comments."""
        (decoded,) = self.decode([question], tokenizer)
        (answer,) = self.solve([question], tokenizer)
        config = self.config
        text = main_to_assembly(
            decoded.main,
            self.delta_head.names,
            decoded.parsed_values,
            config.delta_programs,
            config.delta_word_size,
            config.delta_num_registers,
            decoded.memory,
        )
        return f";; question: {question}\n;; answer: {answer}\n{text}"

    @torch.no_grad()
    def solve(self, questions: Sequence[str], tokenizer, batch_size: int = 32) -> list[str]:
        """Answers as text, from the arg-max main() run exactly."""
        answers = []
        was_training = self.training
        self.eval()
        for start in range(0, len(questions), batch_size):
            batch = tokenizer(list(questions[start : start + batch_size]), return_tensors="pt", padding=True)
            out = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            for values in out.answer_logits.argmax(-1).tolist():
                answers.append(format_answer(values, self.config.delta_answer_format))
        self.train(was_training)
        return answers


__all__ = ["ComposedQAOutput", "DecodedMain", "LlamaDeltaForComposedQA", "MainHead"]
