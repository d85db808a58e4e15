"""Ask an exported sort checkpoint what its training data never held: longer strings and other wordings.

    python train_sft.py --task sort --output_dir runs/sort && python -m experiments.probe_export runs/sort/hub

Loads the export as a user would (remote code, its own tokenizer), answers 20 random lower-case strings at each of
lengths 16, 24 and 32 (the default run trains on 8/10/12; Δ is sized per question), and a few rephrased or
unrepresentable questions, printing each answer, its probability, its halting probability and any refusal.
"""

import argparse
import random

from transformers import AutoModel, AutoTokenizer

PROBES = (
    'Put the letters of "dlifdbab" in alphabetical order.',
    'Sort the string "hello world"',
    'Sort the string "abcÉd"',
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an export folder (train_sft.py's hub/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = AutoModel.from_pretrained(args.folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(args.folder, trust_remote_code=True)
    rng = random.Random(args.seed)
    for length in (16, 24, 32):
        strings = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length)) for _ in range(20)]
        answers = model.solve([f'Sort the string "{s}"' for s in strings], tokenizer, return_details=True, refuse=False)
        right = sum(a["answer"] == "".join(sorted(s)) for a, s in zip(answers, strings, strict=True))
        refused = sum(a["refusal"] is not None for a in answers)
        print(f"length {length}: {right}/20 right, {refused} refused, {20 - right - refused} wrong")
    for question in PROBES:
        print(repr(question), model.solve([question], tokenizer, return_details=True, refuse=False)[0])


if __name__ == "__main__":
    main()
