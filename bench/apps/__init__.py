"""Reference servers the suite measures Kingpost against."""
