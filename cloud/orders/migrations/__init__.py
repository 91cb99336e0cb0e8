"""Migrations of the order tables."""
