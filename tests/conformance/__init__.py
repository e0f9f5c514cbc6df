"""Conformance records: each adapter against its exchange's own published examples and error
tables (official doc pages and official SDK fixtures, each quoted with its source)."""
