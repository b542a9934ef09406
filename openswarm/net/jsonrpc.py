"""Unary gRPC methods with JSON bodies, without protobuf code generation."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import grpc

JsonHandler = Callable[[Any, grpc.ServicerContext], Any]
"""A method body: (decoded JSON request, context) -> JSON-serialisable response."""


def encode_json(value: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode_json(data: bytes) -> Any:
    """Parse UTF-8 JSON bytes (ValueError if malformed)."""
    return json.loads(data)


def json_unary(fn: JsonHandler) -> grpc.RpcMethodHandler:
    """A unary-unary method handler around `fn`; malformed JSON gets INVALID_ARGUMENT."""

    def behaviour(request: bytes, context: grpc.ServicerContext) -> Any:
        try:
            decoded = decode_json(request) if request else None
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request is not valid JSON: {exc}")
        return fn(decoded, context)

    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=None, response_serializer=encode_json
    )


def json_method_handlers(
    service: str, methods: Mapping[str, JsonHandler]
) -> grpc.GenericRpcHandler:
    """A generic handler serving `/service/method` for each JSON method body."""
    return grpc.method_handlers_generic_handler(
        service, {name: json_unary(fn) for name, fn in methods.items()}
    )


def json_stub(channel: grpc.Channel, service: str, method: str) -> grpc.UnaryUnaryMultiCallable:
    """A client callable for `/service/method`: takes and returns JSON values."""
    return channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=encode_json,
        response_deserializer=decode_json,
    )
