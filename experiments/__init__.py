"""Experiments and diagnostics behind the README's results, run from the repository root as modules:
`python -m experiments.minimal_network ...` (see experiments/README.md and each module)."""
