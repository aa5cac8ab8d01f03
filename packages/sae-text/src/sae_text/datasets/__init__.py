"""Text datasets: each example is one document (a string)."""
