"""The API's parts, without a database."""
