"""The micro world, the embedded default: seeded arithmetic word problems, the
rule oracle that checks them step by step, a tiny Llama model and its tokenizer,
and pretraining that model from scratch."""
