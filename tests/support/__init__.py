"""What tests (and bench/) share to run real things: free loopback ports,
waiting on conditions, a real `capstan start`, real sshd hosts, a real Ray,
buf on the protos."""
