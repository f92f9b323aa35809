"""The v2 gRPC messages, built from proto/grpc_service.binpb into a descriptor pool of their
own, so a process that also imports tritonclient (whose generated code registers the same
`inference.*` names in protobuf's default pool) has no clash."""

from __future__ import annotations

from importlib import resources

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "inference.GRPCInferenceService"


def _pool() -> descriptor_pool.DescriptorPool:
    data = resources.files(__package__).joinpath("proto/grpc_service.binpb").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file)
    return pool


POOL = _pool()


def message(name: str) -> type:
    """The message class `inference.<name>`."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"inference.{name}"))


def method_types(method: str) -> tuple[type, type]:
    """(request class, response class) of one method of the service."""
    found = POOL.FindServiceByName(SERVICE).methods_by_name[method]
    return (
        message_factory.GetMessageClass(found.input_type),
        message_factory.GetMessageClass(found.output_type),
    )


METHODS = tuple(m.name for m in POOL.FindServiceByName(SERVICE).methods)
