"""RM-Bench rebuilt, reward methods, and the domain diagonal (docs/paper.md §7 Q1–Q2).

- ``rmbench``:       load RM-Bench (files or Hugging Face), score Easy / Normal / Hard
- ``methods``:       reward methods with one interface, over ``EndogenousReward``
- ``bradley_terry``: a trained Bradley–Terry reward model (eq. 4), the trained baseline
- ``runner``:        score a benchmark into ``rewards.jsonl`` incrementally, resumable
- ``diagonal``:      one reward per system prompt, evaluated on every persona's pairs

Commands: ``endorm-mini rmbench`` and ``endorm-mini diagonal`` (:mod:`endorm_mini.commands.rmbench`).
Scored across processes: :mod:`endorm_mini.scale.rmbench`.
"""

# The reward methods of ``methods.make_method``: here, not in ``methods`` (which imports torch),
# so that ``endorm-mini rmbench --help`` lists them at once.
METHODS = ("endogenous", "meanlogprob", "discounted", "dpo", "verifier", "judge", "random")
