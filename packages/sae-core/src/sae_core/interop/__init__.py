"""Conversions to and from other SAE libraries' formats."""
