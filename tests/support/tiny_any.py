"""A tiny random model of any transformers model type, built from its config class (seeded).

The conformance suite builds every registered type with :func:`tiny_model`: the config
class's defaults with every size field it has shrunk to the same small shape (width 32,
2 layers, 4 heads of 8, 2 key/value heads, MLP width 48, vocabulary 61, 4 experts of which
2 are routed per token), the layer-type lists cut to the layer count, and the weights scaled
up so that the rules' differences are visible. Types whose configs need more than that get
it from ``_SPECIAL`` (one entry per type, with the reason).
"""

from __future__ import annotations

import torch

WIDTH, LAYERS, HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB, EXPERTS, TOP_K = 32, 2, 4, 2, 8, 48, 61, 4, 2

# The size fields the config classes use, and the value each gets (a field is set only
# where the class has it).
_SIZES = {
    "vocab_size": VOCAB,
    "hidden_size": WIDTH,
    "n_embd": WIDTH,
    "d_model": WIDTH,
    "num_hidden_layers": LAYERS,
    "n_layer": LAYERS,
    "num_layers": LAYERS,
    "n_layers": LAYERS,
    "num_attention_heads": HEADS,
    "n_head": HEADS,
    "n_heads": HEADS,
    "num_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "n_kv_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "intermediate_size": MLP,
    "n_inner": MLP,
    "ffn_hidden_size": MLP,
    "ffn_dim": MLP,
    "moe_intermediate_size": MLP // 2,
    "shared_expert_intermediate_size": MLP,
    "num_experts": EXPERTS,
    "num_local_experts": EXPERTS,
    "n_routed_experts": EXPERTS,
    "num_experts_per_tok": TOP_K,
    "moe_k": TOP_K,
    "max_position_embeddings": 128,
    "n_positions": 128,
    "max_seq_len": 128,
    "sliding_window": 16,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "use_cache": True,
}
# lists with one entry per layer, cut to the layer count
_PER_LAYER = ("layer_types", "layers_block_type", "mlp_layer_types", "hybrid_override_pattern", "no_rope_layers")


def _derived(config_class, name: str) -> bool:
    """Whether ``name`` (or the field ``attribute_map`` maps it to) is a read-only property of ``config_class``."""
    name = getattr(config_class, "attribute_map", {}).get(name, name)
    prop = getattr(config_class, name, None)
    return isinstance(prop, property) and prop.fset is None


def tiny_config(model_type: str, **overrides):
    """The config of ``model_type`` with its size fields shrunk (see the module docstring)."""
    from transformers import AutoConfig

    if model_type in _COMPOSITE:
        return _COMPOSITE[model_type](**overrides)
    defaults = AutoConfig.for_model(model_type)
    fields = {k: v for k, v in _SIZES.items() if _has(defaults, k)}
    for name in _PER_LAYER:
        if _derived(type(defaults), name):
            continue  # computed from other fields (a property without a setter): set those in _SPECIAL
        value = getattr(defaults, name, None) if _has(defaults, name) else None
        if isinstance(value, (list, tuple)) and len(value) > LAYERS:
            fields[name] = list(value[:LAYERS])
        elif isinstance(value, str) and len(value) > LAYERS:
            fields[name] = value[:LAYERS]
    fields.update(_SPECIAL.get(model_type, {}))
    fields.update(overrides)
    return AutoConfig.for_model(model_type, **fields)


def _has(config, name: str) -> bool:
    """Whether ``config`` has the field ``name`` (a per-layer field of a heterogeneous config raises on a plain read)."""
    try:
        return hasattr(config, name)
    except Exception:  # transformers' AmbiguousGlobalPerLayerAttributeError: a field set per layer
        return name in config.to_dict()


def scale_weights(model, *, norm_offset: bool = False) -> None:
    """Scale a random init up (in place): matrices N(0, 0.3), vectors N(0, 0.1), norm weights 1 + N(0, 0.3).

    ``norm_offset``: the norms compute ``(1 + weight) * x`` (Gemma), so their weights are N(0, 0.3).
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)
                else:
                    p.copy_((0.0 if norm_offset else 1.0) + 0.3 * torch.randn_like(p))
            elif p.dim() >= 2:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(0.0, 0.1)


def tiny_model(model_type: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, attn: str = "eager", **overrides):
    """A 2-layer causal LM of ``model_type`` with the shrunk config, weights scaled up, in eval mode."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    scale_weights(
        model,
        norm_offset=model_type.startswith("gemma")
        and model_type not in ("gemma3n_text", "gemma4_text", "gemma4_unified_text"),
    )
    if dtype == torch.float64:
        from lrp_llm.checkpoints.loading import eager_experts

        eager_experts(model)  # as the loader does: grouped_mm has no float64 path
    return model.to(dtype).eval()


_SPECIAL: dict[str, dict] = {
    "dots3_note_text": {"num_key_value_heads": HEADS},  # its validator wants as many key/value heads as heads
    # Gemma-4 unified: 4 layers (sliding, full, sliding, full), the last two reusing the first two's keys and
    # values (num_kv_shared_layers), V from the K projection on full layers (attention_k_eq_v); the
    # full layers' head width (global_head_dim, 512 by default) that of the others
    "gemma4_unified_text": {
        "num_hidden_layers": 4,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
        "num_kv_shared_layers": 2,
        "attention_k_eq_v": True,
        "sliding_window": 4,
        "global_head_dim": HEAD_DIM,
    },
    # its default config names no RoPE per layer type (the rotary module needs one entry for each):
    # a sliding-window layer with RoPE (multimodal sections summing to the 4 frequencies of a head
    # of 8) and a NoPE full-attention layer, so that both are checked; the window within the prompts
    "cohere_compass_text": {
        "layer_types": ["sliding_attention", "full_attention"],
        "sliding_window": 4,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
            "full_attention": None,
        },
    },
    # both token mixers, and the MLP width as given (not 2/3 of it rounded up to 256)
    "lfm2": {"layer_types": ["conv", "full_attention"], "block_auto_adjust_ff_dim": False},
    # every token mixer: its default pattern gives two conv layers (an all-conv cache cannot count the tokens)
    "lfm3": {"layer_types": ["conv", "sliding_attention", "full_attention"], "num_hidden_layers": 3},
    # CodeGen rotates the first rotary_dim (default 64) features of each head: fewer than a head's 8
    "codegen": {"rotary_dim": 4},
    # GPT-Neo expands (pattern, repeats) pairs to one attention type per layer; the validator
    # wants exactly one per layer: one global and one local layer
    "gpt_neo": {"attention_types": [[["global", "local"], LAYERS // 2]], "window_size": 4},
    # layers_block_type is derived from block_types (repeated to the layer count): one recurrent, one attention block
    "recurrent_gemma": {"block_types": ["recurrent", "attention"]},
    # the config rounds the q/k and v widths up to multiples of 64, the layers do not: width 64 with
    # factors 1 makes them agree (4 heads of 16); the MLP 64 wide
    "xlstm": {"hidden_size": 64, "embedding_dim": 64, "qk_dim_factor": 1.0, "ffn_proj_factor": 1.0},
    # CTRL's MLP width is `dff` (default 8192, a name the shrinker does not know): at that width float32
    # rounding moved the sweep's normalised recovery by 2e-4 between engines (0 in float64)
    "ctrl": {"dff": 64},
    # RemBERT's decoupled embedding widths are names the shrinker does not know (256 and 1664 wide): at those widths
    # float32 rounding moved the sweep's normalised recovery by 6e-3 between engines (0 in float64)
    "rembert": {"is_decoder": True, "input_embedding_size": 32, "output_embedding_size": 32},
    # X-MOD picks an adapter per token by lang_ids, or by default_language when none are given (the explainers
    # pass none); two languages so the selection is exercised. With "de_DE" the default, the sweep's
    # clean - corrupted logit difference was 0.004 and float32 rounding (1e-6) moved its normalised recovery
    # by 2.7e-4 between engines (0 in float64)
    "xmod": {"is_decoder": True, "languages": ["en_XX", "de_DE"], "default_language": "en_XX"},
    # BERT-style types build their causal LM as a decoder only with is_decoder (else bidirectional attention)
    **{
        t: {"is_decoder": True}
        for t in ("bert-generation", "megatron-bert", "roberta-prelayernorm", "roformer", "xlm-roberta-xl")
    },
}

# BART-style encoder-decoders: num_hidden_layers / num_attention_heads map to the encoder's
# fields only; the decoder (all a *ForCausalLM has) and the MLP widths are set here
_BART_STYLE = dict(
    encoder_layers=LAYERS,
    decoder_layers=LAYERS,
    encoder_attention_heads=HEADS,
    decoder_attention_heads=HEADS,
    encoder_ffn_dim=MLP,
    decoder_ffn_dim=MLP,
)
_SPECIAL.update({t: _BART_STYLE for t in ("bart", "plbart", "blenderbot-small", "mbart", "pegasus", "blenderbot")})
# Marian's default decoder start token (58100) lies outside the tiny vocabulary
_SPECIAL["marian"] = {**_BART_STYLE, "decoder_start_token_id": 0}
_SPECIAL["trocr"] = {"decoder_ffn_dim": MLP, "decoder_start_token_id": 0}


# Hybrids: the layer pattern comes from fields the config derives its layer list from; each tiny
# model gets one attention (or hybrid) layer beside its Mamba layers, as every real checkpoint has
# (an all-Mamba hybrid also fails in transformers: its cache has no attention layer to count tokens
# by). Mamba-2 heads of 8 channels (the defaults of 128 heads do not divide 2 x 32), 16 states.
def _pattern(kinds: list[str]) -> dict:
    # under both names: the default list is cut under each, and attribute_map aliases one to the other
    return {"layer_types": kinds, "layers_block_type": kinds, "num_hidden_layers": len(kinds)}


_MAMBA2 = {"mamba_n_heads": 8, "mamba_d_head": 8, "mamba_d_state": 16, "mamba_chunk_size": 4}
_SPECIAL.update(
    {
        "bamba": {**_MAMBA2, "attn_layer_indices": [1]},
        # with routed experts beside the shared MLP (a dense checkpoint: tests/unit/test_moe_hybrids.py)
        "granitemoehybrid": {**_MAMBA2, **_pattern(["mamba", "attention"])},
        # muP multipliers away from 1 so that the rules are checked with them
        "falcon_h1": {
            **_MAMBA2,
            "mamba_d_ssm": 64,
            "ssm_multipliers": [0.5, 1.5, 0.8, 1.2, 0.9],
            "mlp_multipliers": [0.7, 1.3],
            "ssm_in_multiplier": 0.9,
            "ssm_out_multiplier": 1.1,
            "attention_in_multiplier": 0.8,
            "attention_out_multiplier": 1.2,
            "key_multiplier": 0.6,
            "embedding_multiplier": 1.5,
            "lm_head_multiplier": 0.7,
        },
        "nemotron_h": {
            **_pattern(["mamba", "attention", "mlp", "moe"]),
            "mamba_num_heads": 8,
            "mamba_head_dim": 8,
            "n_groups": 2,
            "ssm_state_size": 16,
            "chunk_size": 4,
        },
        "zamba2": {**_pattern(["mamba", "hybrid"]), "n_mamba_heads": 8, "mamba_d_state": 16, "chunk_size": 4},
        "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    }
)


# DeepSeek multi-head latent attention: consistent low ranks and head widths (the defaults are
# full-size), rotary width = head_dim, and one K/V head per query head (K and V come per head out of kv_b_proj)
_MLA = {
    "kv_lora_rank": 16,
    "q_lora_rank": 24,
    "qk_rope_head_dim": 4,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "num_key_value_heads": HEADS,
}
_DSA = {
    **_MLA,
    "head_dim": 4,
    "n_group": 1,
    "topk_group": 1,
    "mlp_layer_types": ["dense", "sparse"],
    "index_topk": 4,
    "index_n_heads": 2,
    "index_head_dim": 8,
}
_SPECIAL.update(
    {
        **{t: {**_MLA, "head_dim": 4} for t in ("deepseek_v2", "glm4_moe_lite", "longcat_flash", "minicpm3", "youtu")},
        # the first 3 layers are dense by default: one, so that the second has routed experts
        # and its router groups the experts (8 groups by default): one group of the 4
        "deepseek_v3": {**_MLA, "head_dim": 4, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1},
        # chunked attention within the 12-token prompts (the sweeps, 7 tokens, stay in one chunk), a NoPE
        # second layer (with its query temperature) and a dense first layer, so that each is checked
        "llama4_text": {"attention_chunk_size": 8, "no_rope_layers": [1, 0], "moe_layers": [1]},
        # its router groups the experts (8 groups by default): one group of the 4
        "axk1": {**_MLA, "head_dim": 4, "n_group": 1, "topk_group": 1},
        # DeepSeek sparse attention: a dense then an MoE layer, and an indexer that keeps 4 keys
        # (fewer than the 12-token prompts have) so that the selection masks keys; GLM-MoE-DSA's
        # second layer reuses the first's selection ("shared"), so both kinds are checked
        "deepseek_v32": {**_DSA},
        "glm_moe_dsa": {**_DSA, "indexer_types": ["full", "shared"]},
        # Kimi Linear: one Kimi-delta-attention and one MLA layer (dense, then MoE), 4 linear heads of 8
        "kimi_linear": {
            **_MLA,
            "head_dim": 4,
            "n_group": 1,
            "topk_group": 1,
            "layer_types": ["linear_attention", "full_attention"],
            "mlp_layer_types": ["dense", "sparse"],
            "linear_num_heads": 4,
            "linear_head_dim": HEAD_DIM,
            "linear_conv_kernel_dim": 4,
        },
        # Bailing hybrid: the same, its linear heads from num_attention_heads and head_dim (the latter then
        # overwritten by the rotary width)
        "bailing_hybrid": {
            **_MLA,
            "head_dim": HEAD_DIM,
            "n_group": 1,
            "topk_group": 1,
            "layer_types": ["linear_attention", "full_attention"],
            "mlp_layer_types": ["dense", "sparse"],
            "short_conv_kernel_size": 4,
        },
        # MiniMax-M3: a sparse-attention layer (its indexer picks 2 key blocks of 2 beside the local one, so that
        # it masks within the 12-token prompts) with a dense MLP, then a full-attention layer with routed experts
        "minimax_m3_vl_text": {
            "layer_types": ["minimax_m3_sparse", "full_attention"],
            "mlp_layer_types": ["dense", "sparse"],
            "index_block_size": 2,
            "index_topk_blocks": 2,
            "index_local_blocks": 1,
            "index_head_dim": HEAD_DIM,
            "rotary_dim": 4,
            "dense_intermediate_size": MLP,
            "shared_intermediate_size": MLP // 2,
        },
        # DBRX nests its attention and experts fields (the attention reads rope_theta from attn_config, which
        # its config class does not default); Q/K/V clipped at 1, so that the clip is active on the tiny model
        "dbrx": {
            "attn_config": {"kv_n_heads": KV_HEADS, "rope_theta": 10000.0, "clip_qkv": 1.0},
            "ffn_config": {
                "hidden_size": WIDTH,
                "ffn_hidden_size": MLP // 2,
                "moe_num_experts": EXPERTS,
                "moe_top_k": TOP_K,
            },
        },
        # MiniMax: a lightning-attention block (blocks of 4 positions, so that the carried state is used) and a
        # softmax-attention block
        "minimax": {"layer_types": ["linear_attention", "full_attention"], "block_size": 4},
        # dots1's config leaves the shared-expert count unset (None) and its MoE block multiplies by it
        "dots1": {"n_shared_experts": 1},
        # its shared MLP is off by default (width 0); on, so that its rules are checked
        "granitemoeshared": {"shared_intermediate_size": 48},
    }
)
# Gated attention output (o * act(g(x))): a sliding (RoPE) and a full-attention (NoPE) layer, a dense
# and a routed-experts MLP, so that every part is checked; Beam's router groups the experts (8 groups by
# default): one group of the 4
_SPECIAL.update(
    {
        "beam": {
            "layer_types": ["sliding_attention", "full_attention"],
            "mlp_layer_types": ["dense", "sparse"],
            "n_group": 1,
            "topk_group": 1,
        },
        "afmoe": {"layer_types": ["sliding_attention", "full_attention"], "num_dense_layers": 1},
        # both token mixers, a dense MLP and routed experts (its config has no default list of layer types:
        # without one the model does not build)
        "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
        # a dense prefix layer and a routed one with a shared MLP, a sliding and a full-attention layer
        "cohere2_moe": {
            "layer_types": ["sliding_attention", "full_attention"],
            "mlp_layer_types": ["dense", "sparse"],
            "num_shared_experts": 1,
            "prefix_dense_intermediate_size": MLP,
        },
    }
)


# Gated DeltaNet hybrids: one linear-attention and one full-attention layer (an all-linear model
# has no attention layer for its cache to count tokens by), 2 key heads serving 4 value heads of 8
_DELTANET = {
    "layer_types": ["linear_attention", "full_attention"],
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": HEAD_DIM,
    "linear_value_head_dim": HEAD_DIM,
    "linear_conv_kernel_dim": 4,
}
_SPECIAL.update({t: _DELTANET for t in ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text", "olmo_hybrid")})


def _gemma3_multimodal(**overrides):
    """Gemma-3's multimodal config: the tiny Gemma-3 text model beside a one-layer SigLIP vision tower
    (28x28 images of 14x14 patches, 4 image tokens); the last vocabulary ids are the image tokens."""
    from transformers import Gemma3Config

    text = tiny_config("gemma3_text", query_pre_attn_scalar=HEAD_DIM, **overrides)
    vision = dict(
        hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    return Gemma3Config(
        text_config=text.to_dict(),
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=VOCAB - 3,
        eoi_token_index=VOCAB - 2,
        image_token_index=VOCAB - 1,
    )


def _fuyu(**overrides):
    """Fuyu's config: the tiny Persimmon text model, 4x4 RGB patches; the last vocabulary id the image token."""
    from transformers import FuyuConfig

    text = tiny_config("persimmon", **overrides)
    return FuyuConfig(text_config=text.to_dict(), patch_size=4, num_channels=3, image_token_id=VOCAB - 1)


def _got_ocr2(**overrides):
    """GOT-OCR 2's config: the tiny Qwen2 text model beside a one-layer vision encoder (32x32 images of
    16x16 patches, 16 channels); the last vocabulary id the image token."""
    from transformers import GotOcr2Config

    text = tiny_config("qwen2", **overrides)
    vision = dict(
        hidden_size=16,
        output_channels=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        global_attn_indexes=[0],
        mlp_dim=24,
        window_size=2,
    )
    return GotOcr2Config(text_config=text.to_dict(), vision_config=vision, image_token_index=VOCAB - 1)


def _moss_transcribe_diarize(**overrides):
    """MOSS transcribe-diarize's config: the tiny Qwen3 text model beside a one-layer audio encoder
    (8 mel bins, width 16); the last vocabulary id the audio token."""
    from transformers.models.moss_transcribe_diarize import MossTranscribeDiarizeConfig

    text = tiny_config("qwen3", **overrides)
    audio = dict(
        num_mel_bins=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        hidden_size=16,
        max_source_positions=8,
    )
    return MossTranscribeDiarizeConfig(text_config=text.to_dict(), audio_config=audio, audio_token_id=VOCAB - 1)


# model types whose config nests the text model's (built from the text type's tiny config)
_COMPOSITE = {"gemma3": _gemma3_multimodal}


# Wrapper checkpoints (a vision tower beside a registered text model): AutoModelForCausalLM builds the text
# model alone from them (its config the text config), so only the text config matters to the suite; the
# vision tower is made tiny all the same (its defaults allocate gigabytes) for tests that build the wrapper
_TINY_VISION = {
    "qwen3_5": dict(depth=1, hidden_size=16, intermediate_size=24, num_heads=2, out_hidden_size=WIDTH),
    "qwen3_5_moe": dict(depth=1, hidden_size=16, intermediate_size=24, num_heads=2, out_hidden_size=WIDTH),
    "llama4": dict(
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        vision_output_dim=32,
        projector_input_dim=32,
        projector_output_dim=WIDTH,
    ),
}


def _text_wrapper(model_type: str, text_type: str):
    def build(**overrides):
        from transformers import AutoConfig

        text = tiny_config(text_type, **overrides)
        return AutoConfig.for_model(model_type, text_config=text.to_dict(), vision_config=_TINY_VISION[model_type])

    build.__doc__ = f"{model_type}'s config: the tiny {text_type} model beside a one-layer vision tower."
    return build


_COMPOSITE.update(
    {
        "qwen3_5": _text_wrapper("qwen3_5", "qwen3_5_text"),
        "qwen3_5_moe": _text_wrapper("qwen3_5_moe", "qwen3_5_moe_text"),
        "llama4": _text_wrapper("llama4", "llama4_text"),
    }
)


def _mllama(**overrides):
    """Mllama's config: a 3-layer text model whose middle layer is a cross-attention layer (skipped for text-only
    prompts), beside a one-layer vision encoder of one 28x28 tile; the last vocabulary id is the image token."""
    from transformers import MllamaConfig

    text = dict(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=3,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        intermediate_size=MLP,
        cross_attention_layers=[1],
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **overrides,
    )
    vision = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_global_layers=1,
        attention_heads=2,
        intermediate_size=24,
        vision_output_dim=32,
        image_size=28,
        patch_size=14,
        max_num_tiles=1,
        intermediate_layers_indices=[0],
        supported_aspect_ratios=[[1, 1]],
    )
    return MllamaConfig(text_config=text, vision_config=vision, image_token_index=VOCAB - 1)


# the loaded model reports its text config's type (mllama_text_model): built from the same composite config
_COMPOSITE.update({"mllama": _mllama, "mllama_text_model": _mllama})

# multimodal checkpoints whose language model is a registered family's, inside ``language_model``
_COMPOSITE.update({"fuyu": _fuyu, "got_ocr2": _got_ocr2, "moss_transcribe_diarize": _moss_transcribe_diarize})
