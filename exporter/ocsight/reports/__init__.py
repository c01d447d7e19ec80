"""Rendering only: terminal tables (`summary`, `tables`, `live`) and the JSON documents (`documents`)."""
