"""`python -m app` is the `vidarena` command."""

from app.cli import app

app(prog_name="vidarena")
