"""Tiny random models of every supported decoder family (seeded, seconds to build)."""

from __future__ import annotations

import torch

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
# Families whose tiny configs have no bias anywhere (qwen2 has q/k/v biases).
BIAS_FREE = ("llama", "mistral", "qwen3", "gemma", "gemma2", "gemma3_text")


def tiny_causal_lm(
    family: str = "llama",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layers: int = 2,
    attn: str = "sdpa",
    vocab: int = 61,
    **overrides,
):
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if family in ("gemma2", "gemma3_text"):
        common.update(query_pre_attn_scalar=8, sliding_window=16)
    if family == "gemma2":
        common.update(final_logit_softcapping=None)
    common.update(overrides)
    if family == "gemma2" and attn == "sdpa":
        attn = "eager"  # transformers has no SDPA path for Gemma-2 (soft-capping)
    config = AutoConfig.for_model(family, **common)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    # Random init is small; larger weights make the rules' differences visible.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(
                    1.0 + 0.3 * torch.randn_like(p)
                    if family not in ("gemma", "gemma2", "gemma3_text")
                    else 0.3 * torch.randn_like(p)
                )
            elif p.dim() >= 2:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(0.0, 0.1)
    return model.to(dtype).eval()


def cancel_after(polls: int):
    """A ``should_cancel`` that answers False ``polls`` times, then True (cancels mid-work)."""
    calls = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > polls

    return should_cancel


def random_ids(n: int, vocab: int = 61, seed: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [int(i) for i in torch.randint(3, vocab, (n,), generator=g)]


WORDS = (
    "the a an of in on to is was were and or not who what where when which country city river region "
    "people name gave located france normandy paris rome italy spain germany capital north south east west "
    "big small old new red blue green one two three four five six seven eight nine ten yes no answer question "
    "context"
).split()


def tiny_tokenizer(vocab: int = 61):
    """A word-level fast tokenizer with ``vocab`` entries (specials first) and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"]
    words = list(WORDS)[: vocab - len(specials)]
    table = {tok: i for i, tok in enumerate(specials + words)}
    tk = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
    )
    return tok


def save_tiny_checkpoint(path, family: str = "llama", **kwargs):
    """A loadable HF folder (config.json, model.safetensors, tokenizer) of a tiny random model."""
    model = tiny_causal_lm(family, vocab=len(tiny_tokenizer()), **kwargs)
    model.save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return path


def logits_of(model, ids) -> torch.Tensor:
    """Plain forward logits (1, len(ids), vocab) without a cache."""
    with torch.no_grad():
        return model(torch.tensor([ids]), use_cache=False).logits


def model_state(model) -> tuple:
    """Everything a rule set or a patch could leave behind on the instance: hooks, forward
    overrides (also accelerate's ``_old_forward``), parameter flags, the training flag."""
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    overrides = [name for name, m in model.named_modules() if "forward" in m.__dict__ or "_old_forward" in m.__dict__]
    flags = [p.requires_grad for p in model.parameters()]
    return hooks, overrides, flags, model.training
