"""From the course to the paper's 7B run (docs/paper.md §7, Q3): the commands and the memory.

The paper's self-improvement experiment: the policy and the frozen reward both start from
Qwen2.5-Math-7B, RL on MATH-lighteval, responses of at most 1024 tokens, KL coefficient 0.01
(eq. 5); the reward is the reference's endogenous reward (eq. 12). The paper ran PPO; the
recipe runs TRL's GRPO (``endorm-mini grpo``), whose group baseline makes ``V(s_1)`` cancel
(``scale.reward.group_advantages``). docs/scale.md's section "From the course to the paper's
7B run" and lesson 12 print what this module computes, so their numbers cannot drift from it.

Not verified offline (no hub access here): Qwen2.5-Math-7B's shapes below are those of its
``config.json`` as published; the data sets' column names (MATH-lighteval: ``problem``,
``solution`` with the answer in ``\\boxed{}``; MATH-500: ``problem``, ``answer``, split
``test``) are as published. ``endorm-mini grpo`` refuses a missing column, naming the ones
there are.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..worlds.gsm8k import GSM8K_INSTRUCTION

GB = 1e9   # memory in decimal gigabytes (10⁹ bytes)


@dataclass(frozen=True)
class Qwen2Shape:
    """The sizes of a Qwen2 decoder that fix its parameter count."""
    vocab: int            #: vocabulary size (embedding and LM-head rows)
    hidden: int           #: model width
    intermediate: int     #: MLP width (gate, up and down projections)
    layers: int           #: decoder layers
    heads: int            #: query heads
    kv_heads: int         #: key/value heads (grouped-query attention)
    tied: bool            #: LM head shares the embedding matrix

    def parameters(self) -> int:
        """Exact parameter count: embeddings, per layer attention (q, k, v with biases; o
        without) + MLP (3 matrices) + 2 RMSNorms, the final norm, the LM head if untied."""
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        attention = (self.hidden * self.hidden + self.hidden) + 2 * (self.hidden * kv + kv) \
            + self.hidden * self.hidden
        mlp = 3 * self.hidden * self.intermediate
        layer = attention + mlp + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * layer + self.hidden

    def lora_parameters(self, rank: int) -> int:
        """Parameters of a rank-``rank`` LoRA adapter on every linear layer but the LM head
        (peft's ``all-linear``): ``rank × (in + out)`` for q, k, v, o, gate, up and down."""
        kv = self.kv_heads * (self.hidden // self.heads)
        attention = 2 * (2 * self.hidden) + 2 * (self.hidden + kv)   # q, o; k, v
        sides = attention + 3 * (self.hidden + self.intermediate)     # gate, up, down
        return self.layers * rank * sides


QWEN25_MATH_7B = Qwen2Shape(vocab=152064, hidden=3584, intermediate=18944, layers=28, heads=28,
                            kv_heads=4, tied=False)
MODEL, DATASET, EVAL_DATASET = ("Qwen/Qwen2.5-Math-7B", "DigitalLearningGmbH/MATH-lighteval",
                                "HuggingFaceH4/MATH-500")
GPUS = 8


@dataclass(frozen=True)
class MemoryLine:
    """One line of the budget: ``bytes_per_parameter × parameters``, on each GPU whole or
    sharded over the GPUs by ZeRO-3; ``separate_only``: only with the reward's own reference
    copy (not with ``--reuse-kl-reference``)."""
    what: str
    bytes_per_parameter: int
    sharded: bool
    separate_only: bool = False

    def total(self, parameters: int) -> float:
        return self.bytes_per_parameter * parameters / GB

    def per_gpu(self, parameters: int, gpus: int) -> float:
        return self.total(parameters) / (gpus if self.sharded else 1)


# DeepSpeed ZeRO-3 with bf16 (its bf16 engine): bf16 weights, gradients reduced into fp32
# partitions, fp32 master weights and Adam's two moments, all sharded; TRL's KL reference is
# prepared by DeepSpeed too (sharded, bf16). The reward's own reference is one whole bf16 copy
# per process (loaded outside zero.Init); --reuse-kl-reference drops it (eq. 12 from TRL's
# KL reference forward). Activations, the KV cache and logits come on top.
BUDGET = (
    MemoryLine("policy weights, bf16", 2, True),
    MemoryLine("policy gradients, fp32 partitions (DeepSpeed)", 4, True),
    MemoryLine("Adam: fp32 master weights + 2 moments", 12, True),
    MemoryLine("TRL's KL reference (beta 0.01), bf16", 2, True),
    MemoryLine("the reward's frozen reference, bf16 (one per process)", 2, False, True),
    MemoryLine("policy gathered for generation, bf16 (transient)", 2, False),
)
# One GPU without DeepSpeed (configs/single_gpu.yaml, lesson 12's Colab section): the policy in
# fp32 under bf16 autocast (TRL's default, and grpo_config's), so fp32 gradients and Adam's two
# moments; TRL builds its KL reference in the policy's dtype (fp32); the reward's own reference
# in bf16, none with --reuse-kl-reference. Nothing sharded, nothing to gather.
ONE_GPU = (
    MemoryLine("policy weights, fp32 (bf16 autocast)", 4, False),
    MemoryLine("policy gradients, fp32", 4, False),
    MemoryLine("Adam: 2 fp32 moments", 8, False),
    MemoryLine("TRL's KL reference (beta 0.01), fp32 like the policy", 4, False),
    MemoryLine("the reward's frozen reference, bf16", 2, False, True),
)
VLLM_UTILIZATION = 0.3   # TRL's default vllm_gpu_memory_utilization (colocate)
GPU_MEMORY = 80.0        # GB of an H100 / A100 80GB
CHECKPOINT_BYTES = 2 + 12  # a checkpoint-N: bf16 weights + fp32 master weights and moments
SAVE_TOTAL_LIMIT = 2     # checkpoints kept by endorm-mini grpo (GRPOConfig.save_total_limit)


def per_gpu(parameters: int, gpus: int = GPUS, reuse: bool = False, vllm: bool = False) -> float:
    """GB a GPU before activations: the budget's lines for the option; with vLLM colocate its
    share of the GPU (its own bf16 weights and KV cache) replaces the gathered policy."""
    lines = [line for line in BUDGET if not (reuse and line.separate_only)
             and not (vllm and "gathered" in line.what)]
    vllm_share = VLLM_UTILIZATION * GPU_MEMORY if vllm else 0.0
    return sum(line.per_gpu(parameters, gpus) for line in lines) + vllm_share


def one_gpu(parameters: int, reuse: bool = False) -> tuple[float, list[int]]:
    """GB on one GPU without DeepSpeed before activations, and the bytes a parameter of each
    ``ONE_GPU`` line counted (the reward's own reference dropped with ``reuse``)."""
    lines = [line for line in ONE_GPU if not (reuse and line.separate_only)]
    return (sum(line.total(parameters) for line in lines),
            [line.bytes_per_parameter for line in lines])


LORA_RANK = 16          # the LoRA line's rank (endorm-mini grpo --lora-rank 16)
SERVER_UTILIZATION = 0.9   # `trl vllm-serve`'s default --gpu_memory_utilization


def one_gpu_lora(shape: Qwen2Shape, rank: int = LORA_RANK, reuse: bool = False) -> float:
    """GB on one bf16 GPU with ``--lora-rank``, before activations: the frozen base in bf16 (it
    is also TRL's KL reference, the adapter disabled), the adapter's fp32 weights, gradients and
    2 Adam moments (16 bytes a parameter), and the reward's own bf16 copy unless ``reuse``."""
    n = shape.parameters()
    return (2 * n + 16 * shape.lora_parameters(rank) + (0 if reuse else 2 * n)) / GB


def vllm_server(parameters: int, gpus: int = GPUS, server_gpus: int = 1,
                reuse: bool = False) -> tuple[float, float]:
    """``(GB a training GPU, GB the vLLM GPU)`` with ``--vllm-mode server``: ZeRO-3 over the
    ``gpus − server_gpus`` training GPUs, nothing gathered for generation (``trl vllm-serve``
    generates; TRL's weight sync after each step gathers the parameters piecewise: transient, not
    counted); the server's GPU holds vLLM's bf16 weights and KV cache within its memory
    utilization (0.9 of the GPU by default)."""
    lines = [line for line in BUDGET if not (reuse and line.separate_only)
             and "gathered" not in line.what]
    training = sum(line.per_gpu(parameters, gpus - server_gpus) for line in lines)
    return training, SERVER_UTILIZATION * GPU_MEMORY


PROMPTS, GENERATIONS, ACCUMULATION = 64, 8, 16   # the recipe's step (commands())


def reward_memory(shape: Qwen2Shape = QWEN25_MATH_7B, gpus: int = GPUS) -> dict:
    """The endogenous reward's memory per process in the 7B recipe, GB: ``own``, the reward's
    whole bf16 reference; ``reuse`` (``--reuse-kl-reference``), transient: the LM head
    gathered under ZeRO-3 for ``V(s_{T+1})`` (bf16) and one fp32 row of logits a completion of
    the micro-batch (``micro_batch`` = prompts × generations / (GPUs × accumulation))."""
    micro_batch = PROMPTS * GENERATIONS // (gpus * ACCUMULATION)
    head = shape.vocab * shape.hidden * 2
    return {"own": 2 * shape.parameters() / GB, "micro_batch": micro_batch,
            "reuse": (head + micro_batch * shape.vocab * 4) / GB}


def options_table(shape: Qwen2Shape = QWEN25_MATH_7B) -> str:
    """docs/scale.md's table of the other layouts: LoRA on one GPU, vLLM in server mode."""
    n = shape.parameters()
    adapter = shape.lora_parameters(LORA_RANK)
    rows = ["| layout | own reference | with --reuse-kl-reference |", "|---|---|---|",
            f"| one GPU, `--lora-rank {LORA_RANK}` ({adapter:,} adapter parameters): bf16 base "
            f"(also the KL reference, adapter off) + the adapter's fp32 weights, gradients, Adam "
            f"| {one_gpu_lora(shape):.2f} GB | {one_gpu_lora(shape, reuse=True):.2f} GB |"]
    (own, server), (reused, _) = vllm_server(n), vllm_server(n, reuse=True)
    rows.append(f"| `--vllm-mode server`: a training GPU ({GPUS - 1} of them, ZeRO-3, nothing "
                f"gathered for generation) | {own:.2f} GB | {reused:.2f} GB |")
    rows.append(f"| `--vllm-mode server`: the vLLM GPU (`trl vllm-serve`, {SERVER_UTILIZATION} of "
                f"{GPU_MEMORY:.0f} GB: bf16 weights + KV cache) | {server:.2f} GB | "
                f"{server:.2f} GB |")
    return "\n".join(rows)


def memory_table(parameters: int | None = None, gpus: int = GPUS) -> str:
    """The budget of the 7B run as a Markdown table, the arithmetic in every row, for the
    reward's own reference copy and for ``--reuse-kl-reference``, with transformers' generate
    or vLLM colocate; then the disk a run's checkpoints take."""
    n = QWEN25_MATH_7B.parameters() if parameters is None else parameters
    lines = [f"| what | bytes × parameters | total | per GPU ({gpus} GPUs, ZeRO-3): own "
             "reference | with --reuse-kl-reference |", "|---|---|---|---|---|"]
    for line in BUDGET:
        share = f"÷ {gpus} = " if line.sharded else "whole: "
        own = f"{share}{line.per_gpu(n, gpus):.2f} GB"
        lines.append(f"| {line.what} | {line.bytes_per_parameter} × {n:,} | "
                     f"{line.total(n):.2f} GB | {own} | {'—' if line.separate_only else own} |")
    lines.append(f"| **per GPU, before activations** (transformers' generate) | | | "
                 f"**{per_gpu(n, gpus):.2f} GB** | **{per_gpu(n, gpus, reuse=True):.2f} GB** |")
    share = VLLM_UTILIZATION * GPU_MEMORY
    lines.append(f"| vLLM colocate in place of the gathered policy: {VLLM_UTILIZATION} of an "
                 f"{GPU_MEMORY:.0f} GB GPU (its bf16 weights + KV cache) | | {share:.2f} GB | "
                 f"whole: {share:.2f} GB | whole: {share:.2f} GB |")
    lines.append(f"| **per GPU, before activations, with vLLM colocate** | | | "
                 f"**{per_gpu(n, gpus, vllm=True):.2f} GB** | "
                 f"**{per_gpu(n, gpus, reuse=True, vllm=True):.2f} GB** |")
    trained = 16 * n / GB
    lines.append(f"| without sharding (plain DDP), the trained policy alone: fp32 weights, "
                 f"gradients, 2 moments | 16 × {n:,} | {trained:.2f} GB | whole: "
                 f"{trained:.2f} GB | whole: {trained:.2f} GB |")
    checkpoint = CHECKPOINT_BYTES * n / GB
    disk = SAVE_TOTAL_LIMIT * checkpoint + 2 * n / GB
    lines.append(f"| disk: a checkpoint-N (bf16 weights + fp32 master and moments), "
                 f"{SAVE_TOTAL_LIMIT} kept, + final/ in bf16 | {CHECKPOINT_BYTES} × {n:,} "
                 f"each | {disk:.2f} GB | {checkpoint:.2f} GB a checkpoint | same |")
    return "\n".join(lines)


def commands(out: str = "runs/math7b") -> str:
    """The recipe's shell commands: install, train on 8 GPUs (ZeRO-3), evaluate base and RL."""
    system = "--system \"" + GSM8K_INSTRUCTION.replace("\\", "\\\\") + "\""
    evaluate = [f"    --dataset {EVAL_DATASET} --split test "
                "--prompt-column problem --answer-column answer \\", f"    {system} \\",
                "    --max-new-tokens 1024 --dtype bf16"]
    return "\n".join([
        "pip install -e \".[scale,colab]\" deepspeed     # on the GPU machine (math-verify: colab)",
        "accelerate launch --config_file configs/zero3_8gpu.yaml -m endorm_mini.cli grpo \\",
        f"    --model {MODEL} --dataset {DATASET} \\",
        "    --prompt-column problem --answer-column solution \\",
        f"    {system} \\",
        "    --reward endogenous --beta 0.01 --max-completion-length 1024 --learning-rate 1e-6 \\",
        f"    --prompts-per-step {PROMPTS} --num-generations {GENERATIONS} "
        f"--gradient-accumulation-steps {ACCUMULATION} \\",
        f"    --steps 500 --save-every 50 --reuse-kl-reference --out {out}",
        f"endorm-mini grpo-eval --model {MODEL} \\", *evaluate[:-1],
        f"{evaluate[-1]} --out {out}/math500-base.jsonl",
        f"endorm-mini grpo-eval --model {out}/final \\", *evaluate[:-1],
        f"{evaluate[-1]} --out {out}/math500-rl.jsonl",
    ])
