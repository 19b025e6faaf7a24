"""endorm-mini: the reward model hidden inside every language model, rebuilt.

A causal LM's logits are a soft-Q function; its endogenous reward is
``r̂(s_h, a_h) = α log π̂(a_h|s_h) + V(s_h) − V(s_{h+1})`` (docs/paper.md eq. 12),
with the soft value ``V(s) = α logsumexp(f(s,·)/α)`` (unnumbered in the paper).
"""
__version__ = "0.1.0"
