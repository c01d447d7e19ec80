"""Prices: where they come from (`catalogue`), their shape (`rates`), genai-prices (`genai`)."""
