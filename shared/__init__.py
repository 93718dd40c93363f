"""The secret lifecycle service: all product code of the Function App lives in this package."""
