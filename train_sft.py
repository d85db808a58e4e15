"""Fine-tune a Llama + Δ (a differentiable register machine running a frozen library of compiled programs) on an
algorithmic task, supervised on answers only, or, as the plain fine-tuning baseline, the same backbone writing the
answer as text (`--method text_sft`). Paper: Saldyt & Kambhampati, §4.2-4.3.

Usage (a preset per model under configuration/, `--preset tiny` by default; later flags override the preset):

    # the paper's minimal LLaMA from scratch (Llama 3 tokenizer), CPU-sized default budget for the task
    python train_sft.py --task sort
    python train_sft.py --task arithmetic --num_train_epochs 10
    # the plain fine-tuning baseline on the same data and budget, printed beside the Δ run's results
    python train_sft.py --task sort --method text_sft --compare_with runs/tiny-sort-delta/results.json
    # a real pretrained backbone, offline: SmolLM2-135M-Instruct from its GGUF file, with its own tokenizer
    python train_sft.py --preset smollm2-135m --task sort_spaced
    # the paper's §4.3 recipe (GPU, bf16): full fine-tuning, lr 1e-5, batch 2, 70% train split
    python train_sft.py --preset llama-3.2-1b --task sort --push_to_hub --hub_model_id you/llama-3.2-1b-delta-sort
    # train on shared data: a folder from `python -m data_builders.export` or a Hub dataset repo (config = the task)
    python train_sft.py --task sort --dataset_name data/llama-delta-tasks
    # LoRA instead of full fine-tuning (the Δ head is trained in full), gradient (activation) checkpointing, resuming
    python train_sft.py --task arithmetic --use_peft --activation_checkpointing --resume_from_checkpoint last
    # DDP on CPU (gloo is chosen when WORLD_SIZE is set and there is no GPU)
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 train_sft.py --task arithmetic

Tasks: arithmetic, fibonacci, fibonacci_linear, sort, sort_spaced, count, strlen, parity, reverse, addition
(`llama_delta.task_settings` derives Δ's settings from the data). Output (`--output_dir`, default
runs/<preset>-<task>-<method>): checkpoints, `results.json`
(test and held-out splits, with length/depth/operation breakdowns, and the Trainer's `log_history`),
`learning_curves.png` (loss, validation exact match per length/operation) and `hub/`, the Hub-ready export whose
model card carries this run's results; `--push_to_hub --hub_model_id ID` uploads it.
"""

from llama_delta.sft import main

if __name__ == "__main__":
    main()
