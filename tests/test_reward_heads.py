"""The scorer's LM-head shortcut (reward.EndogenousReward) against heads that scale their
logits: π̂ = softmax(f̂/α) must use the model's own logits f̂ (eq. 10–12), not the output
embeddings' product when the model divides or multiplies it (Granite's ``logits_scaling``,
Falcon-H1's ``lm_head_multiplier``, or any forward that does so with no config field)."""
import pytest
import torch
from transformers import GraniteConfig, GraniteForCausalLM, LlamaForCausalLM

from conftest import make_gpt2, make_llama
from endorm_mini.chat import prompt_ids, response_ids
from endorm_mini.reward import EndogenousReward

PROMPT, RESPONSES = "What is 12+7?", ["19", "It is 20, I think."]


class HalvedLogitsLlama(LlamaForCausalLM):
    """A head that halves its logits in ``forward``, with nothing in the config to say so."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = 0.5 * out.logits
        return out


def make_granite(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = GraniteConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                           max_position_embeddings=128, logits_scaling=4.0,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    return GraniteForCausalLM(config).eval()


def make_halved(tokenizer):
    llama = make_llama(tokenizer, seed=4)
    halved = HalvedLogitsLlama(llama.config).eval()
    halved.load_state_dict(llama.state_dict())
    return halved


def full_forward_totals(model, tokenizer, alpha):
    """Σ_h r̂ per response from the model's own logits (one plain forward each)."""
    totals = []
    for response in RESPONSES:
        p, r = prompt_ids(tokenizer, PROMPT), response_ids(tokenizer, response)
        with torch.no_grad():
            f = model(torch.tensor([p + r])).logits[0, len(p) - 1:].double()   # [T+1, V]
        values = alpha * torch.logsumexp(f / alpha, -1)
        values[-1] = 0.0                                                      # after eos
        q = f[:-1].gather(-1, torch.tensor(r)[:, None])[:, 0]
        totals.append(float((q - values[1:]).sum()))
    return totals


@pytest.mark.parametrize("maker", [make_granite, make_halved])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_scaled_heads_are_scored_with_the_models_own_logits(tiny_tokenizer, maker, alpha):
    model = maker(tiny_tokenizer)
    with torch.no_grad():                         # the shortcut's logits really are other ones
        ids = torch.tensor([prompt_ids(tiny_tokenizer, PROMPT)])
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state
        shortcut = model.get_output_embeddings()(hidden)
        assert (shortcut - model(input_ids=ids).logits).abs().max() > 0.05
    er = EndogenousReward(model, tiny_tokenizer, alpha=alpha, device="cpu", chunk_size=4)
    results = er.score_batch([PROMPT] * 2, RESPONSES, progress=False)
    expected = full_forward_totals(model, tiny_tokenizer, alpha)
    assert [r.total for r in results] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("maker", [make_gpt2, make_llama])
def test_plain_heads_keep_the_shortcut(tiny_tokenizer, maker):
    """The self-check passes a plain head (so long responses never build full-vocabulary
    logits over the prompt), and the scores are the full forward's."""
    model = maker(tiny_tokenizer)
    er = EndogenousReward(model, tiny_tokenizer, device="cpu", chunk_size=4)
    results = er.score_batch([PROMPT] * 2, RESPONSES, progress=False)
    assert er._plain_head is True
    expected = full_forward_totals(model, tiny_tokenizer, 1.0)
    assert [r.total for r in results] == pytest.approx(expected, abs=1e-4)
