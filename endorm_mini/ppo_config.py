"""The settings of a PPO run (``ppo.PPOConfig``), apart from the algorithm so that reading
them needs no torch: ``endorm-mini ppo --help`` shows these defaults without loading it."""
from __future__ import annotations

from dataclasses import dataclass

from .alpha_range import warn_alpha

# verifiers.REWARD_KINDS, then what PPO adds: the sum at eos, a reward_fn. Spelled out here, as
# verifiers imports torch; tests/test_cli_fast.py holds the two equal.
REWARDS = ("endogenous", "verifier", "hybrid", "endogenous_sum", "custom")


@dataclass
class PPOConfig:
    """One PPO run; the defaults fit a tiny zoo model on a CPU (tiny-arith: 0.6 → ~0.95)."""
    steps: int = 150                      #: PPO updates (one rollout batch each)
    prompts_per_update: int = 32          #: prompts drawn (with replacement, seeded) per update
    samples_per_prompt: int = 4           #: responses per prompt; batch B = prompts × samples
    max_new_tokens: int = 8               #: horizon H: the episode ends after this many tokens
    temperature: float = 1.0              #: sampling temperature τ; the policy is softmax(logits/τ)
    reward: str = "endogenous"            #: endogenous(_sum) | verifier | hybrid | custom
    alpha: float = 1.0                    #: α of the endogenous reward (π̂ = softmax(f̂/α), eq. 10)
    verifier_coef: float = 1.0            #: weight of the verifier's 1/0 in the hybrid reward
    kl_coef: float = 0.01                 #: β, per-token KL penalty to the reference (paper: 0.01)
    entropy_coef: float = 0.0             #: c_H, entropy bonus paid as reward −c_H log π (eq. 6)
    gamma: float = 1.0                    #: discount (1: the paper's undiscounted MDP)
    lam: float = 0.95                     #: GAE λ
    whiten_advantages: bool = True        #: advantages to mean 0, std 1 over the batch's tokens
    lr: float = 5e-4                      #: AdamW learning rate (tiny models; ~1e-6 for 0.5B)
    epochs: int = 2                       #: PPO epochs over each rollout batch
    minibatches: int = 2                  #: minibatches per epoch (and chunks of the ref forward)
    clip_eps: float = 0.2                 #: PPO ratio clip ε
    value_clip: float = 0.2               #: clip of the value update around the rollout's values
    vf_coef: float = 0.1                  #: weight of the value loss
    max_grad_norm: float = 1.0            #: gradient-norm clip
    seed: int = 0                         #: seeds prompt choice, sampling and minibatch order
    device: str = "auto"                  #: auto | cpu | cuda | mps
    dtype: str | None = None              #: autocast: bf16 | fp16 (grad scaler) | None
    gradient_checkpointing: bool = False  #: recompute activations in backward (0.5B on a T4)
    checkpoint_dir: str | None = None     #: folder for ppo.pt and log.csv; None = no files
    checkpoint_every: int = 25            #: save every this many updates (and after the last)
    progress: bool = True                 #: show a tqdm progress bar

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if self.steps < 1 or self.checkpoint_every < 1:
            raise ValueError(f"steps and checkpoint_every must be ≥ 1, got steps={self.steps}, "
                             f"checkpoint_every={self.checkpoint_every}")
        self.batch_size = self.prompts_per_update * self.samples_per_prompt
        sizes = (self.batch_size, self.max_new_tokens, self.epochs, self.minibatches)
        divisible = self.batch_size % self.minibatches == 0
        if min(sizes) < 1 or not divisible or min(self.temperature, self.alpha) <= 0:
            raise ValueError(f"need sizes ≥ 1 (batch, max_new_tokens, epochs, minibatches = "
                             f"{sizes}), a batch divisible by minibatches, and temperature, "
                             "alpha > 0")
        self.minibatch_size = self.batch_size // self.minibatches
        if self.reward in ("endogenous", "endogenous_sum", "hybrid"):
            warn_alpha(self.alpha)  # outside 1e-3 … 1e3: a warning with the reason
