"""The command line: the parser (the contract, no side effects) and ``main``."""
