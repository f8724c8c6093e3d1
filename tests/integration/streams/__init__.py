"""The stream worker as a child process."""
