"""Exports: votes, clips and summary as streaming, spreadsheet-safe CSV (and JSON), the report."""
