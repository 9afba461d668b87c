"""The method of SELF, SRT and EVOLVE: generate, critique, refine, filter, build
SFT records and preference pairs, train, evaluate; the meta-skill corpus; the
prompt templates."""
