"""Stand-ins for the hub (endorm_mini.course.offline) and the real-section code they exercise:
a random Qwen2 that loads like the hub's, real-format data files and their loaders, the
generation defaults a Qwen checkpoint brings, and the exact search on a flat model."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from endorm_mini import limits, models, sampling, verifiers, worlds
from endorm_mini.course import offline
from endorm_mini.bench import rmbench
from endorm_mini.chat import prompt_ids, response_ids
from endorm_mini.reward import EndogenousReward


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    return offline.random_qwen2(tmp_path_factory.mktemp("qwen") / "tiny", "tiny", seed=0)


def test_random_qwen2_loads_like_the_hub_model(qwen_folder):
    tok = AutoTokenizer.from_pretrained(qwen_folder)
    model = AutoModelForCausalLM.from_pretrained(qwen_folder)
    assert type(model) is Qwen2ForCausalLM and model.config.hidden_size == 64
    assert model.config.num_hidden_layers == 2 and model.config.num_key_value_heads == 2
    assert model.config.tie_word_embeddings and model.config.max_position_embeddings == 32768
    assert model.config.vocab_size >= len(tok) and model.config.vocab_size % 128 == 0
    saved = json.loads((qwen_folder / "config.json").read_text())
    assert "bfloat16" in (saved.get("dtype"), saved.get("torch_dtype"))                 # as on the hub
    assert json.loads((qwen_folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2Tokenizer"
    # Qwen2.5-Instruct's special tokens and template: eos = <|im_end|>, pad = <|endoftext|>, no bos.
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    text = tok.decode(prompt_ids(tok, "What is 12+7?"))
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nWhat is 12+7?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(prompt_ids(tok, "Hi", system="Be brief.")).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert response_ids(tok, "19")[-1] == tok.eos_token_id
    # Byte-level BPE: any text round-trips; digits are single tokens, as in Qwen.
    for text in ("héllo wörld 😀 — Paris!", "  two  spaces\n\ttab", "12345"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert len(tok("12345", add_special_tokens=False)["input_ids"]) == 5
    assert tok.decode([model.config.vocab_size - 1]) == ""    # a row past the tokenizer decodes to nothing
    gen = model.generation_config                              # Qwen's sampling defaults come along
    assert (gen.top_k, gen.top_p, gen.repetition_penalty) == (20, 0.8, 1.05)


def test_random_qwen2_is_seeded_and_scores(qwen_folder, tmp_path):
    again = offline.random_qwen2(tmp_path / "again", "tiny", seed=0)
    a, b = (AutoModelForCausalLM.from_pretrained(f) for f in (qwen_folder, again))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    model, tok = models.load(str(qwen_folder), device="cpu")
    result = EndogenousReward(model, tok, device="cpu").score("What is 12+7?", "19")
    assert result.ended and torch.isfinite(result.rewards).all()


def test_the_05b_config_has_qwen25_05b_shapes():
    config = offline.qwen2_config("0.5b", 2018, 2016, 2015)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768       # Qwen2.5-0.5B's count
    assert (config.vocab_size, config.num_attention_heads, config.intermediate_size) == (151936, 14, 4864)
    with pytest.raises(ValueError, match="size must be one of"):
        offline.qwen2_config("7b", 10, 0, 1)


def test_write_data_makes_files_the_real_loaders_read(tmp_path):
    data = offline.write_data(tmp_path, per_domain=2, n_train=5, n_test=3)
    items = rmbench.load_real(data)
    assert {item["domain"] for item in items} == set(rmbench.DOMAINS)
    assert items[0]["domain"] == "chat" and len(items[0]["chosen"][1]) > 3000   # the long item comes first
    train, test = worlds.gsm8k_rows("train", data), worlds.gsm8k_rows("test", data)
    assert (len(train), len(test)) == (5, 3) and set(train[0]) == {"question", "answer"}
    gold = worlds.gsm8k_gold(train[0]["answer"])
    assert gold.isdigit() and verifiers.math_correct(gold, f"So the answer is \\boxed{{{gold}}}.")
    with pytest.raises(FileNotFoundError, match="no rm-bench folder"):
        rmbench.load_real(tmp_path / "gsm8k")
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        worlds.gsm8k_rows("test", tmp_path / "rm-bench")
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "q", "answer": "no final number"}\n')
    with pytest.raises(ValueError, match=r"test.jsonl, line 1"):
        worlds.gsm8k_rows("test", data)


@pytest.mark.parametrize("gold, response, right", [
    ("72", "She sold 48 + 24 = 72 clips. \\boxed{72}", True),
    ("1200", "It costs \\boxed{1,200} dollars.", True),
    ("72", "The answer is 72.", True),
    ("72", "\\boxed{71}, not 72", False),          # the boxed answer counts, not a later number
    ("5", "I do not know.", False),
    ("-3", "\\boxed{-3}", True),
])
def test_math_correct_without_math_verify(monkeypatch, gold, response, right):
    monkeypatch.setitem(__import__("sys").modules, "math_verify", None)     # as if not installed
    assert verifiers.math_correct(gold, response) is right
    assert worlds.gsm8k_gold("… so 3 + 4 = 7.\n#### 1,007") == "1007"


def test_generate_ignores_the_models_generation_defaults(qwen_folder):
    """Qwen's generation_config (repetition penalty 1.05, top-k 20, top-p 0.8) would change even
    greedy decoding; sampling.generate decodes the model's own argmax / softmax."""
    model, tok = models.load(str(qwen_folder), device="cpu", dtype="fp32")
    model.generation_config.repetition_penalty = 1e6             # impossible to miss if applied
    prompts = ["What is 12+7?", "One line on maps."]
    greedy = sampling.generate(model, tok, prompts, temperature=0.0, max_new_tokens=6)
    want = []
    for p in prompts:
        ids, out = prompt_ids(tok, p), []
        for _ in range(6):
            with torch.no_grad():
                a = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if a == tok.eos_token_id:
                break
            out.append(a)
        want.append(tok.decode(out, skip_special_tokens=True))
    assert greedy == want
    assert model.generation_config.repetition_penalty == 1e6      # the model's own config is put back


def test_exact_search_refuses_a_flat_model_instead_of_exploding(qwen_folder):
    model, tok = models.load(str(qwen_folder), device="cpu", dtype="fp32")
    with pytest.raises(ValueError, match="too flat"):
        limits.sequence_modes(model, tok, ["What is 1+1?"], max_new_tokens=4, max_prefixes=50_000)
