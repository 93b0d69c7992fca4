"""VLM-RM embedding reward: the projection math exactly on hand-made vectors, and tiny random CLIP and SigLIP
models saved to a temp dir and loaded back with local_files_only, checked against embeddings computed by hand."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from armflow.configs import ConfigError  # noqa: E402
from armflow.rewards.embedding import EmbeddingReward, l2_normalise, reward_to_value, vlm_rm_reward  # noqa: E402
from armflow.rewards.protocol import RewardQuery  # noqa: E402

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "a", "robot", "arm", "cube", "lifted", "on", "the", "table", "lift"]


# ---- the math, on hand-made vectors ----------------------------------------------------------------------

def test_alpha_zero_is_one_minus_half_squared_distance_and_the_cosine():
    x, g = l2_normalise(np.array([0.6, 0.8, 0.0])), np.array([1.0, 0.0, 0.0])
    r = vlm_rm_reward(x, g, np.array([0.0, 1.0, 0.0]), alpha=0.0)
    assert r == pytest.approx(1 - 0.5 * np.sum((x - g) ** 2), abs=1e-12)
    assert r == pytest.approx(0.6, abs=1e-12)  # x . g for unit vectors
    assert vlm_rm_reward(g, g, -g, 0.0) == 1.0 and vlm_rm_reward(-g, g, g, 0.0) == pytest.approx(-1.0)


def test_alpha_one_counts_only_the_component_along_goal_minus_baseline():
    g, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    d = (g - b) / np.sqrt(2.0)
    x = np.array([0.0, 0.0, 1.0])  # orthogonal to d: x - g = (-1, 0, 1), along d = -1/sqrt(2)
    assert vlm_rm_reward(x, g, b, 1.0) == pytest.approx(1 - 0.5 * 0.5, abs=1e-12)
    offset = np.array([1.0, 1.0, 0.0]) / np.sqrt(2) * 0.3 + np.array([0.0, 0.0, 0.7])  # both orthogonal to d
    assert offset @ d == pytest.approx(0.0)
    assert vlm_rm_reward(g + offset, g, b, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert vlm_rm_reward(g + offset, g, b, 0.0) == pytest.approx(1 - 0.5 * offset @ offset, abs=1e-12)
    assert vlm_rm_reward(g + 0.4 * d, g, b, 1.0) == pytest.approx(1 - 0.5 * 0.16, abs=1e-12)


def test_intermediate_alpha_equals_the_explicit_projection_matrix_on_numpy_and_torch():
    rng = np.random.default_rng(0)
    x, g, b = (l2_normalise(rng.normal(size=(5, 8))), l2_normalise(rng.normal(size=8)),
               l2_normalise(rng.normal(size=8)))
    d = g - b
    for alpha in (0.0, 0.25, 0.5, 1.0):
        P = alpha * np.outer(d, d) / (d @ d) + (1 - alpha) * np.eye(8)
        expected = 1 - 0.5 * np.sum(((x - g) @ P) ** 2, axis=-1)
        np.testing.assert_allclose(vlm_rm_reward(x, g, b, alpha), expected, atol=1e-12)
        got = vlm_rm_reward(torch.from_numpy(x), torch.from_numpy(g), torch.from_numpy(b), alpha)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
        assert np.all(expected >= -1 - 1e-12) and np.all(expected <= 1 + 1e-12)


def test_bad_alpha_and_degenerate_direction_raise():
    g = np.array([1.0, 0.0])
    with pytest.raises(ValueError, match="alpha=1.5"):
        vlm_rm_reward(g, g, -g, 1.5)
    with pytest.raises(ValueError, match="equal"):
        vlm_rm_reward(g, g, g, 0.5)


def test_value_mapping():
    assert reward_to_value(0.0, (-1.0, 1.0)) == 0.5
    assert reward_to_value(0.3, (0.2, 0.4)) == pytest.approx(0.5)
    assert reward_to_value(0.9, (0.2, 0.4)) == 1.0 and reward_to_value(-0.9, (0.2, 0.4)) == 0.0


# ---- tiny CLIP / SigLIP end to end ------------------------------------------------------------------------------

def save_tiny_clip(path, seed=0):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # CLIP's text tower pools at the EOS token: every text must end with one
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>", model_max_length=16)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    config = CLIPConfig(
        text_config=dict(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        projection_dim=8)
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def save_tiny_siglip(path, seed=0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel, SiglipProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="</s>", model_max_length=8)
    text = dict(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=8, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=16, patch_size=8)
    torch.manual_seed(seed)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval().save_pretrained(path)
    processor = SiglipProcessor(image_processor=SiglipImageProcessorPil(size={"height": 16, "width": 16}),
                                tokenizer=tokenizer)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module", params=["clip", "siglip"])
def dual_dir(request, tmp_path_factory):
    save = save_tiny_clip if request.param == "clip" else save_tiny_siglip
    return save(tmp_path_factory.mktemp(f"tiny_{request.param}"))


def queries(n, seed=0, cams=("agentview",)):
    rng = np.random.default_rng(seed)
    return [RewardQuery(frames={c: rng.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8) for c in cams},
                        instruction="lift the cube", key=i) for i in range(n)]


def by_hand(reward, frames, goal, baseline):
    """Embeddings straight from the model's forward (its own normalised image/text embeds); SigLIP's text
    is max-length padded as it was trained."""
    padding = "max_length" if reward.model.config.model_type == "siglip" else True
    inputs = reward.processor(text=[goal, baseline], images=frames, padding=padding, return_tensors="pt")
    with torch.no_grad():
        out = reward.model(**inputs)
    return out.image_embeds.double().numpy(), out.text_embeds[0].double().numpy(), out.text_embeds[1].double().numpy()


def test_tiny_model_reward_matches_embeddings_computed_by_hand(dual_dir):
    goal, baseline = "a robot arm lifted the cube", "a robot arm"
    reward = EmbeddingReward(dual_dir, goal_prompts=[goal], baseline_prompts=[baseline], alpha=0.5, batch_size=2)
    assert type(reward.model).__name__ in ("CLIPModel", "SiglipModel")
    batch = queries(3, cams=("agentview", "wrist"))
    results = reward.score(batch)
    for q, res in zip(batch, results):
        x, g, b = by_hand(reward, [q.frames[c][-1] for c in ("agentview", "wrist")], goal, baseline)
        r = vlm_rm_reward(x, g, b, 0.5)
        assert res.evidence["r"] == pytest.approx(r.mean(), abs=1e-5)
        assert res.evidence["r_per_camera"]["wrist"] == pytest.approx(r[1], abs=1e-5)
        assert res.value == pytest.approx((r.mean() + 1) / 2, abs=1e-5)
        assert res.prob is None and res.valid and res.key == q.key and res.backend == "embedding"
    assert reward.model_version.startswith(f"{dual_dir.name}@")
    assert len({round(r.value, 6) for r in results}) == 3


def test_batched_equals_one_by_one_and_instruction_as_goal(clip_dir):
    reward = EmbeddingReward(clip_dir, batch_size=2)  # alpha 0, goal = each query's instruction
    batch = queries(5, seed=1)
    together = [r.value for r in reward.score(batch)]
    alone = [reward.score([q])[0].value for q in batch]
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert reward.score([]) == []
    x, g, _ = by_hand(reward, [batch[0].frames["agentview"][-1]], "lift the cube", "a")
    assert reward.score(batch[:1])[0].evidence["r"] == pytest.approx(float(x[0] @ g), abs=1e-5)  # cosine


def test_bad_settings_and_paths_raise_naming_them(tmp_path, clip_dir):
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-base-patch32"):
        EmbeddingReward("openai/clip-vit-base-patch32")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        EmbeddingReward(tmp_path)
    with pytest.raises(ValueError, match="baseline_prompts"):
        EmbeddingReward(clip_dir, alpha=0.5)
    with pytest.raises(ConfigError, match="unknown config keys \\['aplha'\\]. Did you mean 'alpha'"):
        EmbeddingReward(clip_dir, aplha=0.5)
    reward = EmbeddingReward(clip_dir, cameras=["front"])
    with pytest.raises(ValueError, match="front"):
        reward.score(queries(1))
    with pytest.raises(ValueError, match="preference"):
        EmbeddingReward(clip_dir).score([RewardQuery(frames=queries(1)[0].frames, instruction="x",
                                                      mode="preference")])


def test_registry_builds_the_backend(clip_dir):
    from armflow.rewards.registry import make_reward_model

    reward = make_reward_model("embedding", path=str(clip_dir), goal_prompts=["a robot arm lifted the cube"],
                               baseline_prompts=["a robot arm"], alpha=1.0)
    assert isinstance(reward, EmbeddingReward) and reward.alpha == 1.0 and reward.baseline.shape == (8,)
