"""EndogenousReward refuses input it would score wrongly: a string where a list is expected,
token ids outside the vocabulary; text the tokenizer cannot spell gets a warning naming it."""
import warnings

import pytest

from conftest import make_gpt2, make_llama
from endorm_mini.reward import EndogenousReward
from endorm_mini.zoo import char_tokenizer

PROMPT = "What is 12+7?"


@pytest.fixture
def reward(tiny_tokenizer):
    return EndogenousReward(make_gpt2(tiny_tokenizer), tiny_tokenizer, device="cpu")


def test_a_string_where_a_list_is_expected_is_refused(reward):
    """score_batch("abc", "xyz") used to score three one-character items."""
    for prompts, responses, name in (("abc", "xyz", "prompts"), (["abc"], "x", "responses"),
                                     ("abc", ["x", "y", "z"], "prompts")):
        with pytest.raises(ValueError, match=f"{name} must be a list.*got a str"):
            reward.score_batch(prompts, responses)
    with pytest.raises(ValueError, match="prompt_ids_list must be a list"):
        reward.score_ids("abc", [[5]])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        reward.score_ids([[5], [6]], [[7]])
    assert len(reward.score_batch(("abc",), ("x",), progress=False)) == 1   # tuples are lists


@pytest.mark.parametrize("maker", [make_gpt2, make_llama])
def test_token_ids_outside_the_vocabulary_name_the_item_and_id(maker, tiny_tokenizer):
    """They used to raise IndexError from inside the embedding."""
    model = maker(tiny_tokenizer)
    reward = EndogenousReward(model, tiny_tokenizer, device="cpu")
    V = model.get_input_embeddings().num_embeddings
    eos = tiny_tokenizer.eos_token_id
    good = [10, 11, 12]
    for prompts, responses, message in (
            ([good, good], [[20, eos], [20, V, eos]], f"item 1: response token id {V} "),
            ([good, [10, V + 5]], [[20, eos], [20, eos]], f"item 1: prompt token id {V + 5} "),
            ([[-1] + good], [[20, eos]], "item 0: prompt token id -1 "),
            ([good], [[20, 2.0]], "item 0: response token id 2.0 ")):
        with pytest.raises(ValueError) as err:
            reward.score_ids(prompts, responses)
        assert message in str(err.value) and f"0 … {V - 1}" in str(err.value)


def test_characters_the_tokenizer_maps_to_unk_are_named_once(tiny_tokenizer):
    tok = char_tokenizer("abc 0123456789+?=.")  # no 'x', no 'é', no 'W'
    reward = EndogenousReward(make_gpt2(tok), tok, device="cpu")
    with pytest.warns(UserWarning) as record:
        reward.score("What is 1+2?", "3 é x")
    messages = [str(w.message) for w in record if "<unk>" in str(w.message)]
    assert len(messages) == 1 and "'Whistxé'" in messages[0]   # 'a' is known
    with pytest.warns(UserWarning) as record:                  # one warning for a whole batch
        reward.score_batch(["1+2?", "2+2?"], ["x", "xé"], system="Be brief.", progress=False)
    messages = [str(w.message) for w in record if "<unk>" in str(w.message)]
    assert len(messages) == 1 and "'Befirxé'" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward.score("a b", "abc")     # nothing unknown: no warning
