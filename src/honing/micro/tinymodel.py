"""A tiny Llama-architecture model and its tokenizer, built locally (no Hub needed).

The tokenizer is a `tokenizers` WordPiece over the micro world's words: text is
split on white space and numbers become digits ("34" -> "3", "##4"), so
`decode(encode(x)) == x` for any text the world writes. Saved with a chat template,
the folder loads with `AutoTokenizer`/`AutoModelForCausalLM` like a Hub model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from honing.micro import world

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# Words of the prompts and of the oracle's check format, beside the world's own.
EXTRA_WORDS = (
    "Problem Solution Check Feedback Refinement ones tens carry borrow gives claims "
    "ok no nothing Verdict correct incorrect Score"
).split()

# User turns are plain text; an assistant turn follows after a space and ends with EOS.
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}{{ ' ' + m['content'] + eos_token }}"
    "{%- else -%}{{ m['content'] }}{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 2  # head size 32: the smallest vLLM's CPU attention supports
    max_position_embeddings: int = 512


def vocabulary() -> list[str]:
    digits = [str(d) for d in range(10)]
    words = sorted(set(world.vocabulary()) | set(EXTRA_WORDS))
    return [PAD, EOS, UNK, *digits, *(f"##{d}" for d in digits), *words]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=16))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, config: TinyModelConfig = TinyModelConfig(), seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def save_untrained(path: str | Path, seed: int = 0, config: TinyModelConfig = TinyModelConfig()) -> Path:
    """Write an untrained tiny model and tokenizer to `path` (tests use it as a stand-in)."""
    path = Path(path)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, config, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
