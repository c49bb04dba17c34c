"""Far sides of the network for tests: emulated services ralph talks to, served for real on loopback."""
