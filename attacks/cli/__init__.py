"""The commands (``python -m attacks.run`` …): parse arguments, call the engine, print. Nothing below prints."""
