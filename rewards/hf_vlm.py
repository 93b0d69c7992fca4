"""Local Hugging Face VLM as a success detector: one forward pass, P(yes) from the next-token logits.

The chat prompt (a versioned ``prompts.YesNoPrompt``, the same text the OpenAI backend sends) holds the
query's images (each camera's last frame, or all T frames), the instruction and "Answer yes or no."; the
model runs once (no generation) and the logits of the token after "assistant:" are read at the
yes-variant and no-variant token ids (``"yes"``, ``" Yes"``, ... those that are one token):

    yes_logit = logsumexp(logits[yes_ids]),  no_logit = logsumexp(logits[no_ids])
    P(yes)    = softmax([yes_logit, no_logit])[0] = sigmoid(yes_logit - no_logit)

i.e. the softmax over the yes and no variants only (TOPReward's readout; the OpenAI backend does the same
through top logprobs). ``value = P(yes) >= threshold``, ``prob = P(yes)``, the two logits are the evidence.

Any model that ``AutoProcessor`` + ``AutoModelForImageTextToText`` load from a local directory and whose
processor has a chat template works; tested with a tiny LLaVA (CLIP vision tower + Llama). The model is
never fetched from the hub (see ``hf_local``).
"""
from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from armflow.configs import ConfigError, build_config
from armflow.rewards.hf_local import dtype_kwargs, fingerprint, from_local, require_local_dir, to_pil
from armflow.rewards.prompts import YesNoPrompt, get_prompt
from armflow.rewards.protocol import RewardModel, RewardQuery, RewardResult

LAYOUT_VERSION = 1  # bump when the image/label layout in prompt_inputs changes
FRAME_MODES = ("last", "all")


def spellings(words: Sequence[str]) -> list[str]:
    """Answer words as a tokenizer may see them first: lower/Capital/UPPER, with and without a leading space."""
    forms = []
    for word in words:
        for cased in (word.lower(), word.capitalize(), word.upper()):
            forms += [cased, " " + cased]
    return list(dict.fromkeys(forms))


def answer_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """Ids of the words that encode to exactly one known token (multi-token spellings cannot be read
    from one next-token distribution, so they are left out)."""
    ids = set()
    for word in words:
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if len(tokens) == 1 and tokens[0] != tokenizer.unk_token_id:
            ids.add(int(tokens[0]))
    return sorted(ids)


def yes_probability(logits, yes_ids: Sequence[int], no_ids: Sequence[int]):
    """logits (B, V) -> (P(yes), yes_logit, no_logit), each (B,): softmax over the yes+no variants."""
    import torch

    yes_logit = torch.logsumexp(logits[:, list(yes_ids)], dim=-1)
    no_logit = torch.logsumexp(logits[:, list(no_ids)], dim=-1)
    return torch.sigmoid(yes_logit - no_logit), yes_logit, no_logit


def last_token_index(attention_mask):
    """(B, L) 0/1 mask -> (B,) index of each row's last real token, whichever side the padding is on."""
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.flip(1).argmax(dim=1)  # argmax: the first max


@dataclass(frozen=True)
class HFVLMConfig:
    path: str = ""  # local directory: config.json, weights, processor (tokenizer, image processor, chat template)
    threshold: float = 0.5  # value = P(yes) >= threshold
    frames: str = "last"  # "last": each camera's newest frame; "all": its T frames, oldest first
    cameras: tuple[str, ...] | None = None  # cameras shown, in this order (None: all, in the query's order)
    use_references: bool = True  # show query.references (e.g. a goal image) before the cameras
    prompt: str | YesNoPrompt = "success"  # a prompts.PROMPTS name or a YesNoPrompt; its tag is versioned
    use_system: bool = True  # the prompt's system text as a system turn (off for templates without one)
    batch_size: int = 8  # queries per forward pass
    device: str = "cpu"
    dtype: str | None = None  # torch dtype name for the weights (None: the checkpoint's)

    def __post_init__(self):
        problems = []
        if not str(self.path):
            problems.append("path is required (a local model directory)")
        if self.frames not in FRAME_MODES:
            problems.append(f"frames={self.frames!r}: expected one of {', '.join(FRAME_MODES)}")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold={self.threshold}: expected a probability in [0, 1]")
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size}: expected >= 1")
        if problems:
            raise ConfigError("hf_vlm reward backend: " + "; ".join(problems))


class HFVLMReward(RewardModel):
    """P(success) from a local VLM's yes/no next-token logits; batched, ``batch_size`` queries a forward.

    ``HFVLMReward(path, **options)`` with the keys of ``HFVLMConfig``; an unknown key raises ConfigError.
    """

    backend = "hf_vlm"

    def __init__(self, path: str | os.PathLike | None = None, **options: Any):
        if path is not None:
            options["path"] = str(path)
        self.cfg = cfg = build_config(HFVLMConfig, options, where="hf_vlm reward backend")
        self.threshold, self.frames, self.batch_size, self.device = (cfg.threshold, cfg.frames,
                                                                     cfg.batch_size, cfg.device)
        self.cameras = list(cfg.cameras) if cfg.cameras is not None else None
        self.use_references, self.use_system = cfg.use_references, cfg.use_system
        self.prompt = cfg.prompt if isinstance(cfg.prompt, YesNoPrompt) else get_prompt(cfg.prompt)
        self.root = require_local_dir(cfg.path, "hf_vlm")
        self._load(cfg.dtype)
        self.prompt_version = self._prompt_version()
        self.model_version = f"{self.root.name}@{fingerprint(self.root)}/prompt-{self.prompt_version}"

    def _load(self, dtype: str | None) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = from_local(AutoProcessor, self.root, "hf_vlm")
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None or not (getattr(self.processor, "chat_template", None)
                                     or getattr(tokenizer, "chat_template", None)):
            raise ValueError(f"hf_vlm: the processor in {self.root} has no tokenizer with a chat template "
                             "(chat_template.jinja or chat_template in its configs)")
        # Right padding keeps each prompt's tokens at the positions they have alone (a plain forward numbers
        # positions 0..L-1 and attention is causal), so a batch scores exactly like one query at a time.
        tokenizer.padding_side = "right"
        self.yes_ids = answer_token_ids(tokenizer, spellings(self.prompt.yes))
        self.no_ids = answer_token_ids(tokenizer, spellings(self.prompt.no))
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"hf_vlm: the tokenizer in {self.root} has no single-token yes/no answers "
                             f"(yes ids {self.yes_ids}, no ids {self.no_ids})")
        model = from_local(AutoModelForImageTextToText, self.root, "hf_vlm", **dtype_kwargs(dtype))
        self.model = model.to(self.device).eval()
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def _prompt_version(self) -> str:
        layout = repr((LAYOUT_VERSION, self.frames, self.cameras, self.use_references, self.use_system))
        return f"{self.prompt.tag}-{hashlib.sha256(layout.encode()).hexdigest()[:8]}"

    def prompt_inputs(self, query: RewardQuery) -> tuple[str, list[np.ndarray]]:
        """One query -> (chat prompt text ending where the answer starts, its images in prompt order)."""
        if query.mode != "success":
            raise ValueError(f"hf_vlm scores mode 'success' only (a yes/no detector), got {query.mode!r}")
        content, images = [], []

        def add(label: str, frames: Sequence[np.ndarray]) -> None:
            content.append({"type": "text", "text": label})
            for frame in frames:
                content.append({"type": "image"})
                images.append(frame)

        if self.use_references:
            for name, image in query.references.items():
                add(f"Reference image ({name}):", [np.asarray(image, np.uint8)])
        cameras = self._camera_names(query)
        for cam in cameras:
            frames = query.frames[cam]
            add(f"Camera {cam}:", [frames[-1]] if self.frames == "last" else list(frames))
        content.append({"type": "text", "text": self.prompt.render(query.instruction, cameras)})
        messages = [{"role": "user", "content": content}]
        if self.use_system and self.prompt.system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": self.prompt.system}]})
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, images

    def _camera_names(self, query: RewardQuery) -> list[str]:
        if self.cameras is None:
            if not query.frames:
                raise ValueError("hf_vlm: the query has no frames")
            return list(query.frames)
        missing = [cam for cam in self.cameras if cam not in query.frames]
        if missing:
            raise ValueError(f"hf_vlm: camera(s) {missing} not in the query (it has {sorted(query.frames)})")
        return self.cameras

    def next_token_logits(self, queries: Sequence[RewardQuery]):
        """(B, V) float32 logits of the token after each prompt, from one forward pass over the batch."""
        import torch

        texts, images = zip(*(self.prompt_inputs(q) for q in queries))
        # one image list per prompt: LLaVA/Qwen flatten it, Idefics/SmolVLM need it nested
        inputs = self.processor(text=list(texts), images=[[to_pil(im) for im in ims] for ims in images],
                                padding=True, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        last = last_token_index(inputs["attention_mask"])
        with torch.inference_mode():
            if self._keeps_logits:  # the LM head over the needed positions only, not (B, L, V)
                keep = torch.unique(last)
                logits = self.model(**inputs, logits_to_keep=keep).logits
                column = torch.searchsorted(keep, last)
            else:
                logits, column = self.model(**inputs).logits, last
        return logits[torch.arange(len(queries), device=logits.device), column].float().cpu()

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        import torch

        for query in queries:  # bad input raises before any forward pass
            self.prompt_inputs(query)
        results: list[RewardResult] = []
        for start in range(0, len(queries), self.batch_size):
            batch = queries[start:start + self.batch_size]
            try:
                logits = self.next_token_logits(batch)
            except torch.OutOfMemoryError as err:  # transient: the caller retries or skips, never a silent 0
                results += [RewardResult.invalid(f"hf_vlm out of memory: {err}") for _ in batch]
                continue
            p_yes, yes_logit, no_logit = yes_probability(logits, self.yes_ids, self.no_ids)
            for p, ly, ln in zip(p_yes.tolist(), yes_logit.tolist(), no_logit.tolist()):
                results.append(RewardResult(value=float(p >= self.threshold), prob=p, evidence={
                    "yes_logit": ly, "no_logit": ln, "prompt_version": self.prompt_version}))
        return results
