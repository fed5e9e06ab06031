"""vidarena web app: studies, rating, analysis and everything that is not GPU work."""

__version__ = "0.1.0"
