"""The paper's §4.1 minimal network: one layer before Δ, one after, one-hot inputs, answer supervision only.

Model: each input (x0, x1 and, for Fibonacci, the depth) is a one-hot vector over n; one linear layer per input
register (n -> n logits, softmax) gives Δ's start register r_i, so the identity-like routing must be LEARNED from
answers (random init: at step 0 the registers are near uniform). Δ runs its one program (the library's calling
convention: r0 = x0, r1 = x1, r2 = depth, answer in r0); one linear layer maps P(r0) to answer logits;
cross-entropy on the answer. Adam on random training pairs; exact accuracy (arg-max) on held-out (x0, x1) pairs.

- `table1` (paper Table 1): Fibonacci (`--program fib_recursive`, recursion through a stack in memory; `fib`,
  iterative; `fib_linear`, reading x0 and x1 once), ONE MODEL PER DEPTH (the paper reports one accuracy per depth),
  several seeds and word sizes.
- `fig3` (paper Figure 3): one ALU op (`add` mod n) with the `table`, `circuit` and `structured` ALU backends;
  learning curves (held-out accuracy vs step) for several seeds, plotted.

Outputs in --out: `<study>.json` (config, per-run results and curves), `<study>.md` (table), `<study>.png` (curves);
table1's study name carries the program (`table1_fib_linear`).
Each run takes one thread (`--jobs` runs run side by side):

    # measured (results/minimal_network): the routing layers random, the layer after Δ the identity, depth given
    python -m experiments.minimal_network table1 --program fib_linear --n 128 --depths 1 2 3 4 5 6 8 12 \
        --seeds 0 1 2 --steps 300 --lr 1e-1 --adam_eps 1e-16 --after_init identity --depth_input given \
        --eval_every 50 --jobs 2
    python -m experiments.minimal_network table1 --program fib_linear --n 256 --depths 1 3 6 --seeds 0 \
        --steps 450 --jobs 2 --lr 1e-1 --adam_eps 1e-16 --after_init identity --depth_input given --eval_every 50 \
        --out experiments/results/minimal_network/base256
    OMP_NUM_THREADS=1 python -m experiments.minimal_network table1 --program fib --n 128 --depths 1 2 3 4 5 6 \
        --seeds 0 1 --steps 250 --lr 1e-1 --after_init identity --depth_input given --eval_every 50
    OMP_NUM_THREADS=1 python -m experiments.minimal_network fig3 --n 16 --alus table circuit structured \
        --seeds 0 1 --steps 150 --lr 1e-1 --after_init identity --eval_every 25
    OMP_NUM_THREADS=1 python -m experiments.minimal_network table1 --quick   # seconds: n = 16, depths 1-2, 1 seed
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modeling_llama_delta.library import LIBRARY, memory_needed, step_bound
from modeling_llama_delta.machine import DeltaMachine

RESULTS = Path(__file__).resolve().parent / "results" / "minimal_network"


@dataclass
class RunConfig:
    """One training run: `program` on inputs (x0, x1[, depth]) with a fixed depth (0 for binary ops)."""

    program: str = "fib_recursive"
    n: int = 128
    depth: int = 1
    alu: str = "structured"
    seed: int = 0
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-2
    adam_eps: float = 1e-8  # 1e-16: see --adam_eps
    test_pairs: int = 512
    eval_every: int = 25
    after_init: str = "random"  # "identity": the layer after Δ starts as 10·I (passes Δ's answer through)
    depth_input: str = "learned"  # "learned": the depth goes through its layer too; "given": r2 is one-hot(depth)


@dataclass
class RunResult:
    config: RunConfig
    start_accuracy: float
    accuracy: float
    wall_s: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out accuracy)


def answers(program: str, x0: Tensor, x1: Tensor, depth: int, n: int) -> Tensor:
    """Reference answers: x_{depth+1} of x_{i+1} = x_i + x_{i-1} mod n for fib, else x0 + x1 mod n."""
    if program not in ("fib", "fib_recursive", "fib_linear"):
        if program != "add":
            raise ValueError(f"program = {program!r} is not supported; one of fib, fib_recursive, fib_linear, add")
        return (x0 + x1) % n
    older, newer = x0, x1
    for _ in range(depth):
        older, newer = newer, (older + newer) % n
    return newer


class MinimalNetwork(nn.Module):
    """One-hot inputs -> one linear layer per input register -> Δ -> one linear layer on P(r0)."""

    def __init__(self, machine: DeltaMachine, num_inputs: int, given_inputs: int = 0):
        super().__init__()
        n = machine.n
        self.given_inputs = given_inputs  # the last inputs go to their registers as exact one-hots
        self.before = nn.ModuleList(nn.Linear(n, n) for _ in range(num_inputs - given_inputs))
        self.machine = machine
        self.after = nn.Linear(n, n)

    def forward(self, inputs: Tensor) -> Tensor:
        """inputs (B, I) values -> answer logits (B, n)."""
        n = self.machine.n
        onehots = F.one_hot(inputs, n).float()  # (B, I, n)
        learned = [layer(onehots[:, i]).softmax(-1) for i, layer in enumerate(self.before)]  # each (B, n)
        given = list(onehots[:, len(self.before) :].unbind(1))
        registers = torch.stack(learned + given, dim=1)  # (B, I, n): r0..r(I-1); the rest take ISA start values
        state = self.machine.start_state(registers=registers)
        run = self.machine(state, selection=torch.ones(inputs.shape[0], 1))
        # On P(r0) itself, not its log: log(p + eps) spans [-14, 0] and Adam's first steps on it blew the loss up
        # to > 100 at n = 128.
        return self.after(run.state.registers[:, 0])  # (B, n)


def split_pairs(n: int, test_pairs: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """All (x0, x1) pairs, shuffled: (train, test), each (k, 2); the test pairs are never trained on."""
    pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n))  # (n², 2)
    pairs = pairs[torch.randperm(n * n, generator=generator)]
    test_pairs = min(test_pairs, n * n // 4)
    return pairs[test_pairs:], pairs[:test_pairs]


def with_depth(pairs: Tensor, program: str, depth: int) -> Tensor:
    """(k, 2) pairs -> (k, I) network inputs: the depth is a third input for Fibonacci."""
    if program == "add":
        return pairs
    return torch.cat([pairs, torch.full_like(pairs[:, :1], depth)], dim=1)  # (k, 3)


@torch.no_grad()
def accuracy(model: MinimalNetwork, inputs: Tensor, targets: Tensor, chunk: int = 256) -> float:
    correct = sum(
        (model(inputs[i : i + chunk]).argmax(-1) == targets[i : i + chunk]).sum().item()
        for i in range(0, len(inputs), chunk)
    )
    return correct / len(inputs)


def train(config: RunConfig) -> RunResult:
    """Train one minimal network; held-out accuracy every `eval_every` steps."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    name, n, depth = config.program, config.n, config.depth
    machine = DeltaMachine(
        n=n,
        num_registers=8,
        memory_size=min(n, memory_needed(name, depth)),
        alu=config.alu,
        max_steps=step_bound(name, depth),
        programs={name: LIBRARY[name]},
    )
    train_pairs, test_pairs = split_pairs(n, config.test_pairs, generator)
    test_inputs = with_depth(test_pairs, name, depth)
    test_targets = answers(name, test_pairs[:, 0], test_pairs[:, 1], depth, n)
    if config.depth_input not in ("learned", "given"):
        raise ValueError(f"depth_input = {config.depth_input!r}; one of learned, given")
    given = int(config.depth_input == "given" and name != "add")
    model = MinimalNetwork(machine, test_inputs.shape[1], given)
    if config.after_init == "identity":
        # From a random after-layer AND random before-layers nothing was learned in 100-300 steps (chance level at
        # n = 16 and 128): each layer's gradient is noise until the other is right. An identity start breaks that.
        with torch.no_grad():
            model.after.weight.copy_(10 * torch.eye(n))
            model.after.bias.zero_()
    elif config.after_init != "random":
        raise ValueError(f"after_init = {config.after_init!r}; one of random, identity")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, eps=config.adam_eps)
    curve = [(0, accuracy(model, test_inputs, test_targets))]
    for step in range(1, config.steps + 1):
        batch = train_pairs[torch.randint(len(train_pairs), (config.batch_size,), generator=generator)]  # (B, 2)
        logits = model(with_depth(batch, name, depth))
        loss = F.cross_entropy(logits, answers(name, batch[:, 0], batch[:, 1], depth, n))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % config.eval_every == 0 or step == config.steps:
            curve.append((step, accuracy(model, test_inputs, test_targets)))
    return RunResult(config, curve[0][1], curve[-1][1], time.perf_counter() - start, curve)


def _train_one_thread(config: RunConfig) -> RunResult:
    torch.set_num_threads(1)  # one run per core: small ops gain nothing from a second thread
    result = train(config)
    _log(result)
    return result


def run_all(configs: list[RunConfig], jobs: int) -> list[RunResult]:
    """Every run, `jobs` at a time in worker processes (results in the order of `configs`)."""
    if jobs <= 1:
        return [_train_one_thread(config) for config in configs]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.map(_train_one_thread, configs, chunksize=1)


def _log(result: RunResult) -> None:
    c = result.config
    print(
        f"{c.program} n={c.n} depth={c.depth} ({c.depth_input}, after {c.after_init}) alu={c.alu} seed={c.seed} "
        f"lr={c.lr} eps={c.adam_eps:g} steps={c.steps}: "
        f"{result.start_accuracy:.1%} -> {result.accuracy:.1%} ({result.wall_s:.0f} s)",
        flush=True,
    )


def table1_markdown(results: list[RunResult]) -> str:
    """One row per (n, seed): exact accuracy per depth, then the Δ steps per depth."""
    depths = sorted({r.config.depth for r in results})
    program = results[0].config.program
    header = "| base n | seed | " + " | ".join(f"depth {d}" for d in depths) + " |"
    lines = [header, "|" + "---|" * (len(depths) + 2)]
    lines.append("| Δ steps | | " + " | ".join(str(step_bound(program, d)) for d in depths) + " |")
    by_key = {(r.config.n, r.config.seed, r.config.depth): r for r in results}
    for n, seed in sorted({(r.config.n, r.config.seed) for r in results}):
        cells = [by_key.get((n, seed, d)) for d in depths]
        lines.append(f"| {n} | {seed} | " + " | ".join("-" if r is None else f"{r.accuracy:.1%}" for r in cells) + " |")
    return "\n".join(lines) + "\n"


def fig3_markdown(results: list[RunResult]) -> str:
    """One row per (ALU, seed): held-out accuracy at each evaluated step and the wall time."""
    steps = [s for s, _ in results[0].curve]
    lines = [
        "| ALU | seed | " + " | ".join(f"step {s}" for s in steps) + " | wall s |",
        "|" + "---|" * (len(steps) + 3),
    ]
    for r in results:
        cells = " | ".join(f"{a:.1%}" for _, a in r.curve)
        lines.append(f"| {r.config.alu} | {r.config.seed} | {cells} | {r.wall_s:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[RunResult], label_fields: tuple[str, ...], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the machine
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    groups = sorted({tuple(getattr(r.config, f) for f in label_fields) for r in results})
    colors = {group: f"C{i}" for i, group in enumerate(groups)}
    for r in results:
        group = tuple(getattr(r.config, f) for f in label_fields)
        steps, accuracies = zip(*r.curve, strict=True)
        first = r is next(x for x in results if tuple(getattr(x.config, f) for f in label_fields) == group)
        label = ", ".join(f"{f}={v}" for f, v in zip(label_fields, group, strict=True)) if first else None
        axis.plot(steps, accuracies, color=colors[group], alpha=0.8, label=label)
    axis.set(xlabel="training step", ylabel="held-out exact accuracy", ylim=(-0.02, 1.02), title=title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save(study: str, results: list[RunResult], markdown: str, out: Path, label_fields: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{study}.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    (out / f"{study}.md").write_text(markdown)
    plot(results, label_fields, f"minimal network, {study}", out / f"{study}.png")
    print(markdown)


def main(argv: list[str] | None = None) -> list[RunResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=["table1", "fig3"])
    parser.add_argument("--n", type=int, nargs="+", default=None, help="word sizes (table1: 128; fig3: 16)")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="table1 Fibonacci depths")
    parser.add_argument("--program", default=None, help="table1: fib_recursive (default) or fib; fig3: add")
    parser.add_argument("--alus", nargs="+", default=["table", "circuit", "structured"], help="fig3 ALU backends")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps (table1: 300; fig3: 200)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (table1: 3e-2; fig3: 1e-2)")
    parser.add_argument("--eval_every", type=int, default=25)
    parser.add_argument(
        "--adam_eps",
        type=float,
        default=1e-8,
        help="Adam's epsilon; 1e-16 lets a routing row stuck on a rival solution (its softmax saturated, gradients "
        "below 1e-8) climb out",
    )
    parser.add_argument("--after_init", choices=["random", "identity"], default="random", help="layer after Δ")
    parser.add_argument(
        "--depth_input", choices=["learned", "given"], default="learned", help="table1: r2 through a layer or exact"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each (at most the cores)")
    parser.add_argument("--quick", action="store_true", help="seconds: n = 16, depths 1-2, seed 0, 40 steps")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.depths, args.seeds, args.steps, args.eval_every = [16], [1, 2], [0], 40, 10
        args.out = args.out / "quick"

    configs = []
    if args.study == "table1":
        program = args.program or "fib_recursive"
        for n in args.n or [128]:
            for seed in args.seeds:
                for depth in args.depths:
                    config = RunConfig(program, n, depth, "structured", seed, args.steps or 300, args.batch_size)
                    config.lr, config.eval_every, config.adam_eps = args.lr or 3e-2, args.eval_every, args.adam_eps
                    config.depth_input, config.after_init = args.depth_input, args.after_init
                    configs.append(config)
    else:
        program = args.program or "add"
        for n in args.n or [16]:
            for alu in args.alus:
                for seed in args.seeds:
                    config = RunConfig(program, n, 0, alu, seed, args.steps or 200, args.batch_size)
                    config.lr, config.eval_every, config.adam_eps = args.lr or 1e-2, args.eval_every, args.adam_eps
                    config.after_init = args.after_init
                    configs.append(config)
    results = run_all(configs, args.jobs)
    if args.study == "table1":
        save(f"table1_{program}", results, table1_markdown(results), args.out, ("n", "depth"))
    else:
        save(args.study, results, fig3_markdown(results), args.out, ("alu", "n"))
    return results


if __name__ == "__main__":
    main()
