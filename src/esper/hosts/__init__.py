"""Host networks that seeds grow into: the protocol, the registry, our CNN and GPT hosts.

Importing this package registers the built-in kinds "cnn" and "gpt".
"""

from esper.hosts.cnn import CNNHost, CNNHostConfig
from esper.hosts.protocol import HostProtocol
from esper.hosts.registry import HOST_KINDS, HostConfigError, build_host, register_host
from esper.hosts.transformer import GPTHost, GPTHostConfig

__all__ = [
    "HOST_KINDS",
    "CNNHost",
    "CNNHostConfig",
    "GPTHost",
    "GPTHostConfig",
    "HostConfigError",
    "HostProtocol",
    "build_host",
    "register_host",
]
