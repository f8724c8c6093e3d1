"""The test kit against real sockets."""
