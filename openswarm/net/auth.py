"""Who is calling: the verified client certificate of a gRPC call."""

from __future__ import annotations

import grpc

from openswarm.pki import CertIdentity, PkiError, certificate_identity

PEER_CERT_KEY = "x509_pem_cert"


def caller_certificate(context: grpc.ServicerContext) -> bytes:
    """The caller's TLS client certificate (PEM); PkiError if there is none."""
    certs = context.auth_context().get(PEER_CERT_KEY) or []
    if not certs:
        raise PkiError("the caller presented no client certificate")
    return bytes(certs[0])


def caller_identity(context: grpc.ServicerContext) -> CertIdentity:
    """The identity in the caller's TLS client certificate; PkiError if there is none.

    The TLS handshake has already checked the certificate against the server's trusted
    CA(s). With several site CAs, which of them may vouch for the name is the ledger's to
    say (`LedgerState.vouch`): TLS only proves that one of them issued it.
    """
    return certificate_identity(caller_certificate(context))


def require_role(context: grpc.ServicerContext, *roles: str) -> CertIdentity:
    """The caller's identity if its role is one of `roles`; otherwise abort the RPC.

    Aborts with UNAUTHENTICATED when the caller has no usable certificate, and with
    PERMISSION_DENIED when its role is not allowed.
    """
    try:
        caller = caller_identity(context)
    except PkiError as exc:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        raise  # context.abort always raises; this keeps type checkers informed.
    if caller.role not in roles:
        allowed = ", ".join(roles) or "none"
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{caller.spiffe_id} has role {caller.role!r}; this call needs role: {allowed}",
        )
        raise PkiError("permission denied")  # unreachable: abort raises.
    return caller
