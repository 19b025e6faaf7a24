"""configs/ (accelerate configs) and the 7B recipe (endorm_mini.scale.recipe): every config
loads in accelerate's own config class with no key it does not know (a typo fails), says when
to use it and gives a command that ``endorm-mini`` accepts; the recipe's parameter count is a
real Qwen2's, its memory arithmetic adds up, and docs/scale.md prints exactly what it computes."""
import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
pytest.importorskip("trl")

from endorm_mini import cli  # noqa: E402
from endorm_mini.scale import recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCALE = ROOT / "docs" / "scale.md"   # moved out of the README: the 7B recipe's page
EXPECTED = {  # file -> (distributed_type, processes)
    "single_gpu.yaml": ("NO", 1),
    "ddp_8gpu.yaml": ("MULTI_GPU", 8),
    "zero3_8gpu.yaml": ("DEEPSPEED", 8),
    "vllm_colocate.yaml": ("DEEPSPEED", 8),
    "vllm_server.yaml": ("DEEPSPEED", 7),       # + 1 GPU for `trl vllm-serve`
    "zero3_2x8gpu.yaml": ("DEEPSPEED", 16),     # 2 machines × 8
}
SLURM = "grpo_2nodes.slurm"
# the multi-node commands' shell variables, as one machine would expand them
SHELL_VARIABLES = {"NODE_RANK": "1", "SLURM_NODEID": "1", "MAIN_IP": "node-a", "MAIN": "node-a",
                   "PORT": "29500"}
MIXED_PRECISION = ("no", "fp16", "bf16", "fp8")   # accelerate launch --mixed_precision choices


def check_config(path: Path):
    """accelerate's ClusterConfig from ``path``; ValueError for a key accelerate does not know.

    ``load_config_from_file`` refuses unknown top-level keys; the nested sections are copied
    by ``accelerate launch`` into its arguments of the same name (``fsdp_`` prefixed), where a
    typo would be ignored silently, so they are checked against the launch parser here.
    """
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))
    known = {action.dest for action in launch_command_parser()._actions}
    for section in ("deepspeed_config", "fsdp_config", "fp8_config", "dynamo_config"):
        for key in getattr(config, section) or {}:
            prefix = {"fsdp_config": "fsdp_", "fp8_config": "fp8_",
                      "dynamo_config": "dynamo_"}.get(section, "")
            name = key if key.startswith(prefix) else prefix + key
            if name not in known:
                raise ValueError(f"{path.name}: {section}.{key} is not an accelerate setting")
    if config.mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"{path.name}: mixed_precision {config.mixed_precision!r}")
    return config


def commands_in(text: str, program: str) -> list[list[str]]:
    """The arguments after ``program`` of every (backslash-continued) command in ``text``."""
    joined = re.sub(r"\\\n\s*(#\s*)?", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.lstrip("# ").strip()
        if program in line:
            words = shlex.split(line.split("#  ")[0])
            found.append(words[words.index(program) + 1:])
    return found


def launches_in(text: str) -> list[list[str]]:
    """The words after ``accelerate launch`` of every (backslash-continued) such command."""
    joined = re.sub(r"\\\n\s*(#\s*)?", " ", text)
    for name, value in SHELL_VARIABLES.items():
        joined = joined.replace(f'"${name}"', value).replace(f"${name}", value)
    return [shlex.split(line.split("accelerate launch", 1)[1])
            for line in joined.splitlines() if "accelerate launch" in line]


def test_the_configs_are_shipped():
    assert sorted(p.name for p in (ROOT / "configs").glob("*.yaml")) == sorted(EXPECTED)
    assert (ROOT / "configs" / SLURM).exists()


def check_launch(words: list[str], config) -> object:
    """accelerate's own parser on an ``accelerate launch`` line (the words after ``launch``):
    a flag it does not know fails; the config file is shipped and runs our command."""
    from accelerate.commands.launch import launch_command_parser

    args = launch_command_parser().parse_args(words)
    assert args.module and args.training_script == "endorm_mini.cli"
    if args.config_file.startswith("configs/"):   # not a rehearsal's copy of one
        assert (ROOT / args.config_file).exists()
    if config.num_machines > 1:   # the per-machine placeholders are given on the command line
        assert args.machine_rank is not None and args.main_process_ip
    return args


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_config_is_valid_says_when_and_gives_a_command_we_accept(name):
    path = ROOT / "configs" / name
    config = check_config(path)
    assert (config.distributed_type.value, config.num_processes) == EXPECTED[name]
    if config.distributed_type.value == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 3
    text = path.read_text()
    header = text.split("\ncompute_environment")[0]
    assert "When:" in header and f"accelerate launch --config_file configs/{name}" in header
    launched = commands_in(header, "endorm_mini.cli")
    assert launched, "no endorm-mini command in the header"
    launches = launches_in(header)
    assert launches
    for words in launches:
        check_launch(words, config)
    for argv in launched:
        args = cli.build_parser().parse_args(argv)
        assert args.command == "grpo"
        assert args.vllm == name.startswith("vllm")
        assert args.vllm_mode == ("server" if name == "vllm_server.yaml" else "colocate")
        if "--num-generations" in argv:   # the recipe's step splits over the config's GPUs
            per_step = config.num_processes * args.gradient_accumulation_steps
            assert args.prompts_per_step * args.num_generations % per_step == 0
        if args.reuse_kl_reference:
            assert args.beta > 0 and args.alpha == args.temperature


@pytest.mark.parametrize("edit", [("--machine_rank $NODE_RANK", ""),        # rank forgotten
                                  ("--main_process_port", "--main_proces_port"),   # a typo
                                  ("-m endorm_mini.cli", "endorm_mini.cli")])      # not -m
def test_a_bad_launch_line_fails(edit):
    header = (ROOT / "configs" / "zero3_2x8gpu.yaml").read_text().split("\ncompute_environment")[0]
    assert edit[0] in header
    words, = launches_in(header.replace(edit[0], edit[1]))
    config = check_config(ROOT / "configs" / "zero3_2x8gpu.yaml")
    with pytest.raises((AssertionError, SystemExit)):
        check_launch(words, config)


def test_the_slurm_script_launches_the_two_machine_config():
    """configs/grpo_2nodes.slurm: valid bash; one task a machine, each an ``accelerate launch``
    of zero3_2x8gpu.yaml with its own --machine_rank and machine 0's address; the GPUs it asks
    for are the config's processes; the command is one we accept, its step splits evenly."""
    import subprocess

    path = ROOT / "configs" / SLURM
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    text = path.read_text()
    sbatch = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", text))
    config = check_config(ROOT / "configs" / "zero3_2x8gpu.yaml")
    assert int(sbatch["nodes"]) == config.num_machines and sbatch["ntasks-per-node"] == "1"
    assert int(sbatch["nodes"]) * int(sbatch["gpus-per-node"]) == config.num_processes
    srun = shlex.split(re.sub(r"\\\n\s*", " ", text.split("\nsrun ", 1)[1]))
    inner = srun[srun.index("-c") + 1]              # what each machine's task runs
    assert inner.startswith("accelerate launch ")
    words, = launches_in(inner)
    launch = check_launch(words, config)
    assert launch.config_file == "configs/zero3_2x8gpu.yaml"
    assert (launch.machine_rank, launch.main_process_ip) == (1, "node-a")
    args = cli.build_parser().parse_args(launch.training_script_args)
    assert args.command == "grpo" and args.reuse_kl_reference and args.beta > 0
    per_step = config.num_processes * args.gradient_accumulation_steps
    assert args.prompts_per_step * args.num_generations % per_step == 0


@pytest.mark.parametrize("edit", [
    ("mixed_precision: bf16", "mixed_precison: bf16"),            # a top-level typo
    ("zero_stage: 3", "zero_stag: 3"),                            # a nested typo
    ("distributed_type: DEEPSPEED", "distributed_type: DEEPSPEEED"),
    ("mixed_precision: bf16", "mixed_precision: bf61"),
])
def test_a_typo_in_a_config_fails(tmp_path, edit):
    text = (ROOT / "configs" / "zero3_8gpu.yaml").read_text()
    assert edit[0] in text
    path = tmp_path / "typo.yaml"
    path.write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(ValueError):
        check_config(path)


def _small_qwen2(tied: bool):
    """A small Qwen2 shape and the transformers model built from it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = recipe.Qwen2Shape(vocab=101, hidden=48, intermediate=80, layers=3, heads=6,
                              kv_heads=2, tied=tied)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, tie_word_embeddings=tied))
    return shape, model


def test_the_lora_count_is_pefts(tmp_path):
    """``Qwen2Shape.lora_parameters`` is what peft trains on a real Qwen2 of the same shape."""
    pytest.importorskip("peft")
    from peft import get_peft_model
    from endorm_mini.scale.grpo import GRPORun, lora_config

    shape, model = _small_qwen2(tied=False)
    adapted = get_peft_model(model, lora_config(GRPORun(out="x", lora_rank=4)))
    trained = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert shape.lora_parameters(4) == trained
    assert recipe.QWEN25_MATH_7B.lora_parameters(16) == 40_370_176   # Qwen2.5-7B, r 16


def test_the_other_layouts_add_up():
    """LoRA on one GPU and vLLM in server mode, by hand; docs/scale.md prints the table."""
    shape = recipe.QWEN25_MATH_7B
    n, adapter = shape.parameters(), shape.lora_parameters(16)
    assert recipe.one_gpu_lora(shape) == pytest.approx((2 * n + 16 * adapter + 2 * n) / 1e9)
    assert recipe.one_gpu_lora(shape, reuse=True) == pytest.approx((2 * n + 16 * adapter) / 1e9)
    own, server = recipe.vllm_server(n)
    reused, _ = recipe.vllm_server(n, reuse=True)
    assert own == pytest.approx((2 + 4 + 12 + 2) / 7 * n / 1e9 + 2 * n / 1e9)
    assert reused == pytest.approx((2 + 4 + 12 + 2) / 7 * n / 1e9)
    assert server == pytest.approx(72.0)
    table = recipe.options_table()
    for value in (recipe.one_gpu_lora(shape), recipe.one_gpu_lora(shape, reuse=True), own,
                  reused):
        assert f"{value:.2f} GB" in table
    assert recipe.one_gpu_lora(shape, reuse=True) < 80 < recipe.per_gpu(n, gpus=1)
    assert table in SCALE.read_text(encoding="utf-8")


def test_the_rewards_memory_per_process():
    """The benchmark's 7B line: a whole bf16 copy, or with the reuse the gathered LM head and one
    fp32 logit row a completion of the micro-step (64 × 8 / (8 GPUs × 16) = 4)."""
    shape = recipe.QWEN25_MATH_7B
    memory = recipe.reward_memory()
    assert memory["micro_batch"] == 4
    assert memory["own"] == pytest.approx(2 * 7_615_616_512 / 1e9)
    assert memory["reuse"] == pytest.approx((152064 * 3584 * 2 + 4 * 152064 * 4) / 1e9)
    pages = SCALE.read_text(encoding="utf-8") + (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert f"{memory['own']:.2f} GB" in pages          # the recipe's table and the benchmark's 7B line
    assert f"{memory['reuse']:.2f} GB" in pages
    assert shape.vocab == 152064


def test_vllm_colocate_is_a_grpo_config_flag():
    """TRL does it in GRPOConfig (use_vllm, vllm_mode), not in accelerate: ``--vllm`` sets it."""
    from endorm_mini.scale.grpo import GRPORun, grpo_config

    config = grpo_config(GRPORun(vllm=True, out="unused"), [1.0, 0.0])
    assert (config.use_vllm, config.vllm_mode) == (True, "colocate")
    assert not grpo_config(GRPORun(out="unused"), [1.0, 0.0]).use_vllm


@pytest.mark.parametrize("tied", [False, True])
def test_the_parameter_count_is_a_real_qwen2s(tied):
    shape, model = _small_qwen2(tied)
    assert shape.parameters() == sum(p.numel() for p in model.parameters())


def test_the_memory_arithmetic_adds_up():
    n = recipe.QWEN25_MATH_7B.parameters()
    assert n == 7_615_616_512   # Qwen2.5-7B's published 7.61B (embeddings untied)
    # by hand: (2 weights + 4 fp32 grads + 12 Adam + 2 KL reference) / 8 GPUs, then whole:
    # 2 reward reference (not when reusing TRL's) + 2 gathered (vLLM: 0.3 × 80 GB instead)
    sharded = (2 + 4 + 12 + 2) / 8 * n / 1e9
    cases = {(False, False): sharded + 4 * n / 1e9, (True, False): sharded + 2 * n / 1e9,
             (False, True): sharded + 2 * n / 1e9 + 24, (True, True): sharded + 24}
    table = recipe.memory_table()
    for (reuse, vllm), want in cases.items():
        assert recipe.per_gpu(n, reuse=reuse, vllm=vllm) == pytest.approx(want)
        assert f"**{want:.2f} GB**" in table
    assert cases[(False, False)] == pytest.approx(49.50, abs=0.005)
    assert cases[(True, False)] == pytest.approx(34.27, abs=0.005)
    assert f"{16 * n / 1e9:.2f} GB" in table   # plain DDP: the whole 16 bytes a parameter
    assert f"{14 * n / 1e9:.2f} GB a checkpoint" in table
    assert f"{(2 * 14 + 2) * n / 1e9:.2f} GB" in table   # 2 checkpoints kept + final/ in bf16
    assert max(cases.values()) < 80 < 16 * n / 1e9     # fits an 80 GB GPU only when sharded


def test_the_one_gpu_budget_is_what_trl_builds(tmp_path):
    """One GPU, no DeepSpeed (lesson 12's Colab budget): from the kit's GRPOConfig TRL trains an
    fp32 policy (fp32 gradients, two fp32 Adam moments) and builds its KL reference in the
    policy's dtype; the reward's own copy is bf16 on a GPU, dropped with the reuse option."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from endorm_mini.models import resolve
    from endorm_mini.scale.grpo import GRPORun, grpo_config

    def zero(prompts, completions, **kwargs):
        return [0.0] * len(prompts)

    path = resolve("tiny-arith")
    args = grpo_config(GRPORun(out=str(tmp_path), beta=0.01), [1.0])
    trainer = GRPOTrainer(model=path, reward_funcs=[zero], args=args,
                          processing_class=AutoTokenizer.from_pretrained(path),
                          train_dataset=Dataset.from_list([{"prompt": "1+1="}] * 8))
    size = {line.what.split(",")[0]: line.bytes_per_parameter for line in recipe.ONE_GPU}
    weight = next(trainer.model.parameters()).element_size()
    assert size["policy weights"] == size["policy gradients"] == weight   # grads: param dtype
    assert size["Adam: 2 fp32 moments"] == 2 * weight
    assert size["TRL's KL reference (beta 0.01)"] == \
        next(trainer.ref_model.parameters()).element_size()
    n = recipe.QWEN25_MATH_7B.parameters()
    assert recipe.one_gpu(n) == (pytest.approx(22 * n / 1e9), [4, 4, 8, 4, 2])
    assert recipe.one_gpu(n, reuse=True) == (pytest.approx(20 * n / 1e9), [4, 4, 8, 4])


def test_the_recipe_commands_are_accepted_and_docs_scale_prints_them():
    text = recipe.commands()
    trained = commands_in(text, "endorm_mini.cli")
    evaluated = commands_in(text, "endorm-mini")
    assert len(trained) == 1 and len(evaluated) == 2
    args = cli.build_parser().parse_args(trained[0])
    assert (args.model, args.dataset, args.beta, args.max_completion_length) == \
        (recipe.MODEL, recipe.DATASET, 0.01, 1024)
    assert args.reward == "endogenous" and args.ref_model is None   # the frozen base: reward
    for argv in evaluated:
        assert cli.build_parser().parse_args(argv).command == "grpo-eval"
    readme = SCALE.read_text(encoding="utf-8")
    assert recipe.memory_table() in readme
    assert text in readme
