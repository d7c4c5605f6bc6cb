"""A tiny byte-level BPE tokenizer and a model to match, for the app's tests (seconds).

Byte-level BPE (as in Llama 3 / SmolLM2) so decoded tokens carry their leading spaces
and words split into sub-word pieces, the way real answers look in the app.
"""

from __future__ import annotations

CORPUS = [
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France.",
    "Normandy is located in the north of France. Paris is the capital of France.",
    "Rome is the capital of Italy. Madrid is the capital of Spain. Berlin is in Germany.",
    "In what country is Normandy located? Answer briefly. France.",
    "The river flows north through the old city and the new city.\nAnswer: yes, no, maybe (1, 2, 3)!",
]
CONTEXT = "The Normans gave their name to Normandy, a region in France."
QUESTION = "In what country is Normandy located?"


def tui_tokenizer(vocab_size: int = 330):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )
    return tok


def tui_backend(family: str = "llama", seed: int = 0):
    """A ModelBackend around a tiny random model whose vocabulary matches ``tui_tokenizer``."""
    from tests.support.models import tiny_causal_lm
    from tui.backend import ModelBackend

    tok = tui_tokenizer()
    model = tiny_causal_lm(family, vocab=len(tok), seed=seed, eos_token_id=2, bos_token_id=1)
    return ModelBackend.from_model(model, tok, f"tiny-{family}")


ENCODER_WORDS = (
    "the a cat dog sat on mat rug runs ran park in sun ##s ##ing ##ed big small red blue house car "
    "is was and of to kitten puppy sleeps sleep ##y happy sad old new tree river".split()
)


def tui_encoder_tokenizer():
    """A WordPiece (BERT-style) tokenizer over ``ENCODER_WORDS`` with [CLS] / [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *ENCODER_WORDS])}
    tk = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def tui_encoder(seed: int = 0):
    """An EncoderBackend around a tiny random BERT whose vocabulary matches ``tui_encoder_tokenizer``."""
    from tests.support.encoders import tiny_encoder
    from tui.backend import EncoderBackend

    tok = tui_encoder_tokenizer()
    return EncoderBackend.from_model(tiny_encoder("bert", vocab=len(tok), seed=seed), tok, "tiny-bert")


async def settle(app, pilot, timeout: float = 120.0) -> None:
    """Wait until no worker of ``app`` is pending or running, then let the app handle their messages.

    Unlike ``app.workers.wait_for_complete()`` this never re-raises a worker's error: the
    app must show that error itself (``on_worker_state_changed``), which is what tests check.
    """
    import asyncio
    import time

    from textual.worker import WorkerState

    deadline = time.monotonic() + timeout
    while any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in app.workers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers still running after {timeout} s")
        await asyncio.sleep(0.01)
    await pilot.pause()


async def explained(app, pilot, timeout: float = 120.0) -> None:
    """Wait until the running question is done and its whole answer explained and shown (not a partial
    result: the first answer tokens are shown while the rest are computed)."""
    await settle(app, pilot, timeout)
    await wait_for(
        pilot,
        lambda: (
            app.progress is None
            and (app.attribution is None or not app.attribution.meta.get("partial"))
            and app.stream_prompt is None
        ),
        timeout,
        what="the whole answer explained",
    )


async def wait_for(pilot, predicate, timeout: float = 120.0, what: str = "the condition") -> None:
    """Let the app run until ``predicate()`` holds (app tests wait for what they check, never sleep blindly)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        await pilot.pause(0.01)
