"""The ssh executor: replicas as processes on hosts from an inventory,
started over SSH (asyncssh) and found again after a control-plane restart."""

from executors.ssh.executor import SshExecutor

__all__ = ["SshExecutor"]
