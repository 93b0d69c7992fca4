"""Local HF VLM reward: a tiny random LLaVA (CLIP vision tower + Llama) saved to a temp dir and loaded back
with local_files_only; P(yes) checked against a softmax computed by hand from the model's own logits."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from armflow.configs import ConfigError  # noqa: E402
from armflow.rewards.hf_vlm import HFVLMReward, answer_token_ids, last_token_index, yes_probability  # noqa: E402
from armflow.rewards.protocol import RewardQuery  # noqa: E402

WORDS = ["<pad>", "<unk>", "<image>", "<s>", "</s>", "yes", "no", "Yes", "No", "maybe", "Answer", "or", ".",
         "?", ":", "(", ")", ",", "the", "robot", "task", "lift", "cube", "camera", "Camera", "USER", "SYSTEM",
         "ASSISTANT", "agentview", "wrist", "goal"]
# Llava-style turns; images become <image> placeholders that the processor expands to patch tokens.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
                 "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def save_tiny_llava(path, seed=0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    vocab = {w: i for i, w in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>",
                                        extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8)
    # initializer_range 0.5: a random model with the default 0.02 puts P(yes) within 0.01 of 0.5 everywhere
    text = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=0, initializer_range=0.5)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
                         vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def model(tiny_dir):
    return HFVLMReward(tiny_dir, threshold=0.5, batch_size=3)


def queries(n, seed=0, cams=("agentview",)):
    rng = np.random.default_rng(seed)
    return [RewardQuery(frames={c: rng.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8) for c in cams},
                        instruction=" ".join(["lift the cube"] * (1 + i % 3)), key=("env", i)) for i in range(n)]


def test_loads_from_a_local_dir_and_scores(model, tiny_dir):
    assert type(model.model).__name__ == "LlavaForConditionalGeneration"
    assert model.yes_ids == [WORDS.index("yes"), WORDS.index("Yes")]
    assert model.no_ids == [WORDS.index("no"), WORDS.index("No")]
    results = model.score(queries(4))
    assert [r.key for r in results] == [("env", i) for i in range(4)]
    for r in results:
        assert r.valid and r.backend == "hf_vlm" and 0.0 < r.prob < 1.0
        assert r.value == float(r.prob >= 0.5)
        assert set(r.evidence) >= {"yes_logit", "no_logit"}
        assert r.model_version == model.model_version
    assert model.model_version.startswith(f"{tiny_dir.name}@")
    assert "prompt-success.v1-" in model.model_version


def test_p_yes_is_the_softmax_over_yes_and_no_logits_of_the_models_own_forward(model):
    query = queries(1, seed=3, cams=("agentview", "wrist"))[0]
    text, images = model.prompt_inputs(query)
    assert text.endswith("ASSISTANT:") and text.count("<image>") == 2 and "Answer yes or no" in text
    inputs = model.processor(text=[text], images=images, return_tensors="pt")
    with torch.no_grad():
        logits = model.model(**inputs).logits[0, -1].double().numpy()
    yes, no = np.exp(logits[[5, 7]]), np.exp(logits[[6, 8]])  # "yes", "Yes" / "no", "No"
    expected = yes.sum() / (yes.sum() + no.sum())
    result = model.score([query])[0]
    assert result.prob == pytest.approx(expected, abs=1e-5)
    assert result.evidence["yes_logit"] == pytest.approx(np.log(yes.sum()), abs=1e-4)
    assert result.evidence["no_logit"] == pytest.approx(np.log(no.sum()), abs=1e-4)
    assert abs(expected - 0.5) > 1e-3  # the tiny model is not trivially indifferent


def test_threshold_decides_value(tiny_dir, model):
    query = queries(1)[0]
    p = model.score([query])[0].prob
    below, above = HFVLMReward(tiny_dir, threshold=p - 1e-4), HFVLMReward(tiny_dir, threshold=min(1.0, p + 1e-4))
    assert below.score([query])[0].value == 1.0 and above.score([query])[0].value == 0.0


def test_batched_equals_one_by_one(model):
    batch = queries(5, seed=1)  # prompts of three lengths, batch_size 3: padding inside and across batches
    together = [r.prob for r in model.score(batch)]
    alone = [model.score([q])[0].prob for q in batch]
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert len(set(np.round(together, 6))) > 1


def test_all_frames_and_the_goal_reference_are_in_the_prompt(tiny_dir):
    vlm = HFVLMReward(tiny_dir, frames="all", cameras=["wrist"])
    query = queries(1, cams=("agentview", "wrist"))[0]
    query.references["goal"] = np.zeros((8, 8, 3), np.uint8)
    text, images = vlm.prompt_inputs(query)
    assert len(images) == 3 and images[0].shape == (8, 8, 3) and not images[0].any()  # goal, then wrist T=2
    np.testing.assert_array_equal(images[2], query.frames["wrist"][-1])
    assert "Reference image (goal)" in text and "Camera wrist" in text and "Camera agentview" not in text
    assert vlm.model_version != HFVLMReward(tiny_dir).model_version  # the layout is part of the version
    assert vlm.score([query])[0].valid


def test_bad_queries_raise(model, tiny_dir):
    with pytest.raises(ValueError, match="mode 'success' only"):
        model.score([RewardQuery(frames={"a": np.zeros((1, 8, 8, 3), np.uint8)}, mode="progress")])
    with pytest.raises(ValueError, match="front"):
        HFVLMReward(tiny_dir, cameras=["front"]).score(queries(1))


def test_non_local_paths_and_missing_files_raise_naming_the_path(tmp_path, tiny_dir):
    with pytest.raises(FileNotFoundError, match="llava-hf/llava-1.5-7b-hf"):
        HFVLMReward("llava-hf/llava-1.5-7b-hf")
    with pytest.raises(FileNotFoundError, match="config.json"):
        HFVLMReward(tmp_path)
    broken = tmp_path / "no_weights"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no_weights"):
        HFVLMReward(broken)
    with pytest.raises(ConfigError, match="frames='first'"):
        HFVLMReward(tiny_dir, frames="first")
    with pytest.raises(ConfigError, match="unknown config keys \\['treshold'\\]. Did you mean 'threshold'"):
        HFVLMReward(tiny_dir, treshold=0.9)


def test_out_of_memory_gives_invalid_results_not_zeros(tiny_dir, monkeypatch):
    vlm = HFVLMReward(tiny_dir, batch_size=2)

    def oom(batch):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(vlm, "next_token_logits", oom)
    results = vlm.score(queries(3))
    assert [r.valid for r in results] == [False] * 3 and all(np.isnan(r.value) for r in results)
    assert all("out of memory" in r.error and r.key == ("env", i) for i, r in enumerate(results))


def test_pure_helpers():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, -5.0, 0.0, 0.0]])
    p, ly, ln = yes_probability(logits, [1, 2], [3])
    expected = (np.exp(1) + np.exp(2)) / (np.exp(1) + np.exp(2) + np.exp(3))
    assert p[0].item() == pytest.approx(expected, rel=1e-6)
    assert p[1].item() == pytest.approx((np.exp(-5) + 1.0) / (np.exp(-5) + 2.0), rel=1e-6)
    assert ln[0].item() == pytest.approx(3.0) and ly[1].item() == pytest.approx(np.log(np.exp(-5) + 1.0))
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_answer_token_ids_keep_single_known_tokens_only(model):
    tok = model.processor.tokenizer
    assert answer_token_ids(tok, ["yes", "Yes", "YES", "no way"]) == [5, 7]  # YES is <unk>, "no way" 2 tokens


def test_registry_builds_the_backend(tiny_dir):
    from armflow.rewards.registry import make_reward_model

    vlm = make_reward_model("hf_vlm", path=str(tiny_dir), threshold=0.25, cameras=["agentview"])
    assert isinstance(vlm, HFVLMReward) and vlm.threshold == 0.25 and vlm.cameras == ["agentview"]
