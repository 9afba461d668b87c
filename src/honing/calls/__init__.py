"""Model calls: one interface for every backend (transformers, vLLM, any
OpenAI-compatible server), the request cache, cost and budgets, roles, and the
loopback server that tests and local serving use."""
