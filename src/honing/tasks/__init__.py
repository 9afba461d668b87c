"""Task families: where prompts come from and how an answer is checked.

`base` is the interface, one module per family (`micro`, `reference`,
`reasoning_gym`), and `families` maps the names a prompt row's `task` uses to their
constructors. The method modules import none of these: stages pass a family's
callables (or the `Tasks` dispatcher) in.
"""
