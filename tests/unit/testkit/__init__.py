"""The test kit's pure parts."""
