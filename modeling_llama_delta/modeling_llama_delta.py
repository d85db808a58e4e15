"""`LlamaDeltaForAlgorithmicQA`: a Llama whose hidden states are parsed into the initial state of Δ.

Paper §3.4: the backbone runs, a head turns a hidden layer into one-hot classifications (Δ's initial
memory cells and registers, and a choice of library program), Δ runs every library program, and the
answer is read from the final state, mixed over programs by the selection. Trained on answers alone.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .compiler import compile_library
from .configuration_llama_delta import LlamaDeltaConfig
from .discrete import DiscreteMachine, one_hot_values
from .machine import DeltaMachine, DeltaState, DeltaTrace
from .parsing import DeltaParser, SlotParser, build_parser, log_probability, token_value_table

# Floor added to answer probabilities before the log: keeps the loss finite and its gradient bounded
# (<= 1/eps) where Δ gives the right answer almost no mass.
ANSWER_EPS = 1e-6


@dataclass
class AlgorithmicQAOutput(ModelOutput):
    """
    loss: cross-entropy on answer elements (only when `labels` are given).
    answer_logits: (B, K, n) log-probabilities of each answer element, read from Δ's final state.
    selection: (B, P) program selection probabilities.
    halt_probability: (B,) P(halted) after the run, mixed over programs.
    parsed_memory / parsed_registers: (B, C, n) / (B, Rin, n) the head's initial cells and registers.
    delta_trace: per-step Δ record, when `return_delta_trace=True`.
    sample_loss: (B, S) the answer loss of each sampled parse (training with `delta_parse_samples`, labels given).
    """

    loss: Tensor | None = None
    answer_logits: Tensor | None = None
    selection: Tensor | None = None
    halt_probability: Tensor | None = None
    parsed_memory: Tensor | None = None
    parsed_registers: Tensor | None = None
    delta_trace: DeltaTrace | None = None
    sample_loss: Tensor | None = None


class DeltaComputerHead(nn.Module):
    """Parser + Δ + answer read-out. The library ROM is a persistent, frozen buffer of the machine (trainable logits
    with `delta_trainable_programs`)."""

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__()
        self.config = config
        self.parser = build_parser(config)
        self.machine = build_machine(config)
        # Parses that pick one program (`delta_parse_samples`) and are exactly one-hot run on the integer interpreter
        # (`discrete.py`): no gradient flows through those runs, and it computes the same final state. False runs
        # them on the soft machine (the reference path, and the benchmarks' baseline).
        self.discrete_runs = True
        self._discrete: DiscreteMachine | None = None
        self._discrete_programs: list | None = None  # the machine's program list `_discrete` was built from

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        input_ids: Tensor | None = None,
        return_trace: bool = False,
    ):
        # Δ is exact only in full precision: no bf16/fp16 autocast inside the head.
        with torch.autocast(hidden.device.type, enabled=False):
            return self._run(hidden, attention_mask, input_ids, return_trace)

    def _run(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor | None, return_trace: bool):
        config = self.config
        parsed = self.parser(hidden, attention_mask, input_ids)
        cells, registers, selection = parsed.cells, parsed.registers, parsed.selection
        inputs, log_q = (cells, registers), None
        program = None  # (B[·S],) the one program each run executes, where the parse picks it
        samples = config.delta_parse_samples
        if config.delta_straight_through:
            inputs = tuple(straight_through_one_hot(values) for values in inputs)
        elif samples and self.training:
            inputs, log_q = self.parser.sample(parsed, samples)  # (B·S, ., n) one-hot each, (B, S)
            program, log_q_program = sample_program(selection, samples)  # (B·S,), (B, S)
            log_q = log_q + log_q_program
        elif samples:
            inputs, program = self.parser.greedy(parsed), selection.argmax(-1)  # (B,)
        final, trace = None, None
        if program is not None and self.discrete_runs and not return_trace:
            final = self._run_discrete(inputs, program)
        if final is None:
            run_selection = selection if program is None else F.one_hot(program, selection.shape[1]).to(selection)
            state = self.machine.start_state(
                memory=inputs[0] if cells.shape[1] else None,
                registers=inputs[1] if registers.shape[1] else None,
                batch_size=run_selection.shape[0],
            )
            run = self.machine(state, selection=run_selection, return_trace=return_trace)
            final, trace = run.state, run.trace
        source = final.registers if config.delta_answer_source == "registers" else final.memory
        answer = source[:, : config.delta_answer_length]  # (B[·S], K, n) probabilities
        halted = final.halted
        if log_q is not None:
            answer = answer.view(-1, samples, *answer.shape[1:])  # (B, S, K, n)
            halted = halted.view(-1, samples).mean(1)  # (B,)
        return answer, selection, halted, cells, registers, trace, log_q

    def discrete_machine(self) -> DiscreteMachine:
        """The integer interpreter of the machine's programs (built once; again only if the programs change)."""
        machine = self.machine
        if self._discrete is None or self._discrete_programs is not machine.programs:
            self._discrete = DiscreteMachine(machine.programs, machine.memory_size)
            self._discrete_programs = machine.programs
        return self._discrete

    def _run_discrete(self, inputs: tuple[Tensor, Tensor], program: Tensor) -> DeltaState | None:
        """Δ's final state (one-hot, batch (B,)) for exactly one-hot parses `inputs` ((B, C, n), (B, Rin, n)) and each
        example's program (B,), run on the integer interpreter; None where a parse is not exactly one-hot or a
        gradient flows through it (the soft machine then runs it)."""
        values = [one_hot_values(t) if t.shape[1] else None for t in inputs]  # (B, C), (B, Rin) or None
        if any(v is None and t.shape[1] for v, t in zip(values, inputs, strict=True)):
            return None
        discrete = self.discrete_machine()
        start = discrete.start_state(program, memory=values[0], registers=values[1])
        final, _ = discrete.run(start, max_steps=self.machine.max_steps)
        return final.one_hot(discrete.n, dtype=inputs[0].dtype)


def sample_program(selection: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """One library program per sampled parse, drawn from the selection (B, P) as the parse is: program (B·S,)
    (example-major) and its log-probability (B, S), which joins the parse's log q (score-function gradient)."""
    if selection.shape[1] == 1:  # one program: nothing to draw (and the parse draws' random stream is unchanged)
        picks = selection.new_zeros(selection.shape[0], samples, dtype=torch.long)  # (B, S)
    else:
        picks = torch.multinomial(selection.detach(), samples, replacement=True)  # (B, S)
    return picks.flatten(), log_probability(selection.gather(1, picks))


def straight_through_one_hot(probabilities: Tensor) -> Tensor:
    """The arg-max as an exact one-hot forward, the probabilities' gradient backward (straight-through).

    Δ is exact on one-hot inputs, while soft inputs drift: a counter split by a branch on a slightly
    uncertain value writes both paths into the same registers, and over hundreds of steps (insertion sort)
    the mixture compounds. A one-hot start keeps the run exact; the gradient is Δ's Jacobian at that point.
    """
    hard = F.one_hot(probabilities.argmax(-1), probabilities.shape[-1]).to(probabilities)
    return hard + (probabilities - probabilities.detach())  # exactly `hard`: the difference is exactly 0


def build_machine(config: LlamaDeltaConfig) -> DeltaMachine:
    """Δ as the config describes it, holding the compiled library (`compile_library`: frozen one-hot ROM, or
    trainable ROM logits with `delta_trainable_programs`).

    Built on the CPU even inside `from_pretrained`'s meta-device context: its buffers are exact functions
    of the config, cheap to compute and not all computable on meta tensors.
    """
    library = compile_library(config.delta_programs, config.delta_word_size, config.delta_num_registers)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # `from_pretrained(dtype=...)` sets the default dtype while building
    try:
        with torch.device("cpu"):
            return DeltaMachine(
                n=config.delta_word_size,
                num_registers=config.delta_num_registers,
                memory_size=config.delta_memory_size,
                alu=config.delta_alu,
                max_steps=config.delta_max_steps,
                checkpoint_steps=config.delta_checkpoint_steps,
                programs=library,
                trainable_programs=config.delta_trainable_programs,
                sharpness=config.delta_program_sharpness,
            )
    finally:
        torch.set_default_dtype(default_dtype)


class LlamaDeltaPreTrainedModel(LlamaPreTrainedModel):
    config: LlamaDeltaConfig
    config_class = LlamaDeltaConfig
    # Δ runs in float32 whatever the backbone's dtype (from_pretrained(dtype=torch.bfloat16) included)
    _keep_in_fp32_modules_strict = ["delta_head"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DeltaParser):
            if isinstance(module, SlotParser):
                std = self.config.initializer_range
                init.normal_(module.queries, std=std)
                init.normal_(module.values, std=std)
                init.zeros_(module.values_bias)
            if module.copies_tokens:  # non-persistent: loading leaves it uninitialised
                init.copy_(module.token_values, token_value_table(self.config).to(module.token_values.device))
        if isinstance(module, DeltaMachine):
            # Every Δ buffer (the library ROM, the control tables, the ALU's index tables) and the initial
            # trainable ROM logits are pure functions of the config: rebuild them wherever loading did not fill
            # them (`copy_` leaves loaded values alone).
            fresh = build_machine(self.config)
            fresh_tensors = {**dict(fresh.named_buffers()), **dict(fresh.named_parameters())}
            for name, tensor in [*module.named_buffers(), *module.named_parameters()]:
                init.copy_(tensor, fresh_tensors[name].to(tensor.dtype))


class LlamaDeltaForAlgorithmicQA(LlamaDeltaPreTrainedModel):
    """A Llama backbone + `DeltaComputerHead`; `forward` returns `AlgorithmicQAOutput`."""

    # The loss is a mean over answer elements; never rescale it by accumulation steps (OFFLINE-STACK.md).
    accepts_loss_kwargs = False

    def __init__(self, config: LlamaDeltaConfig):
        config.validate_delta()  # from_pretrained sets keyword overrides on the config after its own validation
        super().__init__(config)
        self.model = LlamaModel(config)
        self.delta_head = DeltaComputerHead(config)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        # `output_loading_info=True` returns (model, loading_info)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.verify_library()
        model.verify_finite()
        return loaded

    def verify_finite(self) -> None:
        """Refuse NaN / inf weights or buffers (one NaN in the parser silently turns every answer into '')."""
        for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all():
                bad = int((~torch.isfinite(tensor)).sum())
                raise ValueError(f"checkpoint tensor {name!r} holds {bad} non-finite value(s) (NaN or inf)")

    def verify_library(self) -> None:
        """Refuse a library whose ROM disagrees with (or cannot be rebuilt from) its assembly source.

        A frozen ROM must equal its compiled sources exactly. A trainable one (`delta_trainable_programs`) has
        learned away from them by design: only its shape is checked (`delta_head.machine.decompile()` gives what
        it runs).
        """
        config = self.config
        library = compile_library(config.delta_programs, config.delta_word_size, config.delta_num_registers)
        rom = self.delta_head.machine.rom_distribution()  # (P, n, F)
        if rom.shape != library.rom.shape:
            raise ValueError(
                f"the ROM has shape {tuple(rom.shape)}; config.delta_programs compiles to {tuple(library.rom.shape)}"
            )
        if config.delta_trainable_programs:
            return
        for index, name in enumerate(library.names):
            expected = library.rom[index].to(rom.device, rom.dtype)  # (n, F)
            if not torch.equal(rom[index], expected):
                lines = (rom[index] != expected).any(-1).nonzero().flatten().tolist()
                raise ValueError(
                    f"library program {name!r}: the ROM buffer disagrees with its assembly source on lines "
                    f"{lines[:10]}; the checkpoint's weights do not match its config.delta_programs"
                )

    def resize_delta(self, *, max_steps: int) -> None:
        """Run Δ for at most `max_steps` steps per forward pass from now on: in the config (what `save_pretrained`
        writes) and in every Δ of the model (a PEFT wrapper holds the original head and its trained copy).

        A run stops early only once every example has halted exactly, which soft parses rarely reach, so the limit
        is what a batch costs: size it to the data being run (train_sft.py uses each split's step bound). A
        checkpoint block (`delta_checkpoint_steps`) longer than the new limit shrinks to it.
        """
        config = self.config
        before = config.delta_max_steps, config.delta_checkpoint_steps
        config.delta_max_steps = max_steps
        if isinstance(max_steps, int) and not isinstance(max_steps, bool):
            config.delta_checkpoint_steps = min(config.delta_checkpoint_steps, max_steps)
        try:
            config.validate_delta()
        except ValueError:
            config.delta_max_steps, config.delta_checkpoint_steps = before
            raise
        for machine in (module for module in self.modules() if isinstance(module, DeltaMachine)):
            machine.max_steps, machine.checkpoint_steps = max_steps, config.delta_checkpoint_steps

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        return_delta_trace: bool = False,
        **kwargs,
    ) -> AlgorithmicQAOutput:
        """labels: (B, K) answer elements in 0..n-1, -100 where an answer is shorter than K."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=True,
            use_cache=False,
            **kwargs,
        )
        hidden = outputs.hidden_states[self.config.delta_feature_layer]  # (B, T, H)
        answer, selection, halted, cells, registers, trace, log_q = self.delta_head(
            hidden, attention_mask, input_ids, return_trace=return_delta_trace
        )
        loss = sample_loss = None
        if log_q is not None:  # sampled parses: answer (B, S, K, n)
            if labels is not None:
                loss, sample_loss = score_function_loss(torch.log(answer + ANSWER_EPS), labels, log_q)
            answer = answer.mean(1)  # (B, K, n): the answer distribution over the samples
        answer_logits = torch.log(answer + ANSWER_EPS)  # (B, K, n)
        if labels is not None and loss is None:
            loss = F.nll_loss(answer_logits.flatten(0, 1), labels.flatten().to(answer_logits.device), ignore_index=-100)
        return AlgorithmicQAOutput(loss, answer_logits, selection, halted, cells, registers, trace, sample_loss)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, declaring the `algorithmic-qa` pipeline in `config.custom_pipelines`:
        its file ships with the remote code, so `pipeline(model=folder, trust_remote_code=True)` works."""
        from .pipeline_llama_delta import custom_pipelines  # here, not at the top: that module imports this one

        self.config.custom_pipelines = custom_pipelines()
        super().save_pretrained(save_directory, *args, **kwargs)

    def check_question(self, question: str, num_tokens: int, index: int | None = None) -> None:
        """Refuse (never truncate) a question longer than the backbone's context, and, for `integers` answers, a
        question mentioning a number outside `0..n-1`: Δ cannot represent it."""
        n, context = self.config.delta_word_size, self.config.max_position_embeddings
        name = "the question" if index is None else f"question {index}"
        if num_tokens > context:
            raise ValueError(f"{name} has {num_tokens} tokens; the model's context is {context}")
        if self.config.delta_answer_format == "integers":
            for number in re.findall(r"(?<![\w)])-?\d+", question):
                if not 0 <= int(number) < n:
                    raise ValueError(f"{name} mentions {number}, outside 0..{n - 1} (the word size n)")

    @torch.no_grad()
    def answer_values(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) tokenized questions -> (B, K) the most likely answer elements, in eval mode (the arg-max parse)."""
        was_training = self.training
        self.eval()
        values = self(input_ids=input_ids, attention_mask=attention_mask).answer_logits.argmax(-1)  # (B, K)
        self.train(was_training)
        return values

    def solve(self, questions: str | Sequence[str], tokenizer, batch_size: int = 32) -> list[str]:
        """Answer questions as text, batched: `["7", "abbdddefijll"]` (`check_question` refuses what Δ cannot
        answer). The `algorithmic-qa` pipeline (`pipeline_llama_delta.py`) answers the same way."""
        questions = [questions] if isinstance(questions, str) else list(questions)
        for index, question in enumerate(questions):
            self.check_question(question, len(tokenizer(question)["input_ids"]), index)
        answers = []
        for start in range(0, len(questions), batch_size):
            batch = tokenizer(questions[start : start + batch_size], return_tensors="pt", padding=True)
            values = self.answer_values(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            answers.extend(format_answer(row.tolist(), self.config.delta_answer_format) for row in values)
        return answers


def score_function_loss(answer_logits: Tensor, labels: Tensor, log_q: Tensor) -> tuple[Tensor, Tensor]:
    """The answer loss over sampled parses, with the score-function gradient for the parse.

    answer_logits (B, S, K, n) log-probabilities from Δ's exact runs, labels (B, K) (-100: padding), log_q (B, S)
    the samples' log-probabilities under the head. Each sample's loss is its mean answer NLL; its baseline is the
    mean loss of the other samples of the same example (leave-one-out). The value returned is the mean sample
    loss; its gradient adds (loss - baseline) * d log q for the parse to the exact gradient for the selection.
    Returns (loss, per-sample losses (B, S)).
    """
    b, s, k, _ = answer_logits.shape
    labels = labels.to(answer_logits.device)[:, None].expand(b, s, k)  # (B, S, K)
    valid = labels != -100
    picked = answer_logits.gather(-1, labels.clamp_min(0)[..., None])[..., 0]  # (B, S, K)
    sample_loss = -(picked * valid).sum(-1) / valid.sum(-1).clamp_min(1)  # (B, S)
    baseline = (sample_loss.sum(1, keepdim=True) - sample_loss) / (s - 1)  # (B, S) leave-one-out
    advantage = (sample_loss - baseline).detach()
    surrogate = advantage * (log_q - log_q.detach())  # value 0; gradient advantage * d log q
    return sample_loss.mean() + surrogate.mean(), sample_loss


def format_answer(values: list[int], answer_format: str) -> str:
    """Answer elements -> text, per `config.delta_answer_format`."""
    if answer_format in ("string", "digits"):
        end = values.index(0) if 0 in values else len(values)
        text = "".join(chr(v) for v in values[:end])
        # A numeral's characters, most significant first, with the carry digit in front: "0579" reads "579".
        return text.lstrip("0") or text[-1:] if answer_format == "digits" else text
    return " ".join(str(v) for v in values)


__all__ = [
    "AlgorithmicQAOutput",
    "DeltaComputerHead",
    "LlamaDeltaForAlgorithmicQA",
    "LlamaDeltaPreTrainedModel",
    "format_answer",
]
