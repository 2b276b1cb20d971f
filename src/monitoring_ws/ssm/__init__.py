"""AWS Systems Manager as a transport: the built-in ``ssm`` plugin (docs/transports.md)."""

from .transport import SSM_MAPPED_COMMANDS, SSM_SHELL, SSMPolicy, SSMTransport, is_instance_id

__all__ = ["SSM_MAPPED_COMMANDS", "SSM_SHELL", "SSMPolicy", "SSMTransport", "is_instance_id"]
