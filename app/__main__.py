"""`python -m app` is the `vidarena` command."""

from app.cli import app

# Guarded: a render worker's encoder processes (multiprocessing's spawn) import this module
# again as `__mp_main__`, and must not start a second command.
if __name__ == "__main__":
    app(prog_name="vidarena")
