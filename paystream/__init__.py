"""PayStream: the domain, settings and command line shared by api/ and streams/."""
