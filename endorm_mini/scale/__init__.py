"""The kit beyond one machine, through the engines the field uses (TRL, accelerate).

- :mod:`endorm_mini.scale.reward`: the endogenous reward as a reward function for TRL's
  ``GRPOTrainer`` and ``RLOOTrainer`` (``reward_funcs=[...]``), and GRPO's group baseline;
- :mod:`endorm_mini.scale.grpo`: the ``endorm-mini grpo`` command (TRL's GRPO underneath) and
  ``grpo-eval``; its data and verifiers in ``grpo_data``, its run folder in ``grpo_run``;
- :mod:`endorm_mini.scale.recipe`: the paper's 7B run: commands and memory arithmetic;
- :mod:`endorm_mini.scale.rmbench`: ``endorm-mini rmbench`` split across the processes of
  ``torchrun`` / ``accelerate launch``.

Only this subpackage imports ``trl``, ``accelerate``, ``datasets`` or ``peft`` (the ``scale``
extra; peft for ``--lora-rank``), and
only inside the functions that need them: lessons 00–11 and the core kit never do.
"""
